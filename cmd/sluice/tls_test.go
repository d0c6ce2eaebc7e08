package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority writing PEM files into dir.
type testCA struct {
	t      *testing.T
	dir    string
	name   string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	file   string // the CA certificate, PEM
	serial int64
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: t.TempDir(), name: name, cert: cert, key: key, serial: 100}
	ca.file = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	ca.t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// issued is a certificate signed by a testCA, and its files.
type issued struct {
	serial            *big.Int
	certFile, keyFile string
	tls               tls.Certificate
	certPEMs, keyPEMs []byte
}

// issue signs a leaf certificate for 127.0.0.1 and localhost (server) or
// for a client, with a serial of its own.
func (ca *testCA) issue(name string, server bool) issued {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	is := issued{
		serial:   tmpl.SerialNumber,
		certFile: ca.write(name+".pem", "CERTIFICATE", der),
		keyFile:  ca.write(name+"-key.pem", "PRIVATE KEY", pkcs8),
		certPEMs: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEMs:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
	if is.tls, err = tls.X509KeyPair(is.certPEMs, is.keyPEMs); err != nil {
		ca.t.Fatal(err)
	}
	return is
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// httpsServer is a loopback HTTPS server for a test: it counts requests
// and keeps the handshake errors it logs.
type httpsServer struct {
	addr string
	hits atomic.Int64
	mu   sync.Mutex
	errs []string // the server's log lines: "http: TLS handshake error from …: …"
}

func (s *httpsServer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, string(p))
	return len(p), nil
}

// refused waits for the server to have logged n handshake errors
// containing reason, and fails the test if they do not come.
func (s *httpsServer) refused(t *testing.T, reason string, n int) {
	t.Helper()
	count := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		c := 0
		for _, e := range s.errs {
			if strings.Contains(e, "TLS handshake error") && strings.Contains(e, reason) {
				c++
			}
		}
		return c
	}
	for deadline := time.Now().Add(hangGuard); count() < n && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if c := count(); c != n {
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Fatalf("%d handshake errors with %q in the server's log; want %d. The log: %q", c, reason, n, s.errs)
	}
}

// serveHTTPS serves a handler counting its requests over TLS with cfg on
// 127.0.0.1, until the test ends.
func serveHTTPS(t *testing.T, cfg *tls.Config) *httpsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &httpsServer{addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.hits.Add(1)
			io.WriteString(w, "ok")
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(s, "", 0),
	}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	return s
}

// httpsGet makes one HTTPS request on a new connection (no resumption) and
// returns the serial of the server's certificate.
func httpsGet(addr string, client *tls.Config) (*big.Int, error) {
	tr := &http.Transport{TLSClientConfig: client, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	res, err := c.Get("https://" + addr + "/")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if _, err := io.ReadAll(res.Body); err != nil {
		return nil, err
	}
	if res.StatusCode != 200 {
		return nil, errors.New(res.Status)
	}
	return res.TLS.PeerCertificates[0].SerialNumber, nil
}

// tlsExchange dials addr and completes a handshake, then reads: with TLS 1.3
// the server's verdict on a client certificate arrives after the client's
// side of the handshake is done.
func tlsExchange(addr string, cfg *tls.Config) error {
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	_, err = io.ReadAll(conn)
	return err
}

func TestServerTLSOff(t *testing.T) {
	cfg, err := serverTLS{}.config()
	if cfg != nil || err != nil {
		t.Fatalf("empty section: config %v, err %v; want nil, nil", cfg, err)
	}
	r, err := serverTLS{}.reloader()
	if r != nil || err != nil {
		t.Fatalf("empty section: reloader %v, err %v; want nil, nil", r, err)
	}
	if r.config() != nil || r.reload() != nil {
		t.Fatal("a nil reloader is not a no-op")
	}
}

func TestServerTLSServesHTTPS(t *testing.T) {
	ca := newTestCA(t, "sluice-test")
	srvCert := ca.issue("server", true)
	cfg, err := serverTLS{CertFile: srvCert.certFile, KeyFile: srvCert.keyFile}.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x; want TLS 1.2 by default", cfg.MinVersion)
	}
	srv := serveHTTPS(t, cfg)
	addr := srv.addr

	serial, err := httpsGet(addr, &tls.Config{RootCAs: ca.pool()})
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	if serial.Cmp(srvCert.serial) != 0 {
		t.Errorf("server certificate serial %v; want %v", serial, srvCert.serial)
	}

	other := newTestCA(t, "other")
	_, err = httpsGet(addr, &tls.Config{RootCAs: other.pool()})
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); !ok {
		t.Errorf("client trusting another CA: err %v; want x509.UnknownAuthorityError", err)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("handler ran %d times; want 1", n)
	}
}

// TestServerTLSServeTLS serves through http.Server.ServeTLS with the
// certificate in TLSConfig (no file arguments), which also negotiates HTTP/2.
func TestServerTLSServeTLS(t *testing.T) {
	ca := newTestCA(t, "sluice-test")
	srvCert := ca.issue("server", true)
	cfg, err := serverTLS{CertFile: srvCert.certFile, KeyFile: srvCert.keyFile}.config()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }),
		TLSConfig: cfg,
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if string(body) != "HTTP/2.0" {
		t.Errorf("protocol %q; want HTTP/2.0", body)
	}
}

func TestServerTLSMinVersion(t *testing.T) {
	ca := newTestCA(t, "sluice-test")
	srvCert := ca.issue("server", true)
	cfg, err := serverTLS{CertFile: srvCert.certFile, KeyFile: srvCert.keyFile, MinVersion: "1.3"}.config()
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, cfg).addr
	if _, err := httpsGet(addr, &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("a TLS 1.2 client connected to a min_version 1.3 server")
	}
	if _, err := httpsGet(addr, &tls.Config{RootCAs: ca.pool()}); err != nil {
		t.Errorf("TLS 1.3 client: %v", err)
	}
}

func TestServerTLSClientCerts(t *testing.T) {
	ca := newTestCA(t, "sluice-test")
	srvCert := ca.issue("server", true)
	good := ca.issue("client", false)
	other := newTestCA(t, "other")
	foreign := other.issue("intruder", false)
	serverOnly := ca.issue("server-as-client", true) // right CA, wrong key usage

	for _, tc := range []struct {
		mode   string
		cert   *tls.Certificate
		reason string // "" = connects; else in the server's handshake error
	}{
		{"require", &good.tls, ""},
		{"require", nil, "client didn't provide a certificate"},
		{"require", &foreign.tls, `client certificate "CN=intruder"`},
		{"require", &serverOnly.tls, "incompatible key usage"},
		{"request", &good.tls, ""},
		{"request", nil, ""},
		{"request", &foreign.tls, "x509: certificate signed by unknown authority"},
		{"", &good.tls, ""}, // the default with client_ca_file is require
		{"", nil, "client didn't provide a certificate"},
	} {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			mode := tc.mode
			if mode == "" {
				mode = "default"
			}
			name := mode + "/no cert"
			if tc.cert != nil {
				name = mode + "/" + tc.cert.Leaf.Subject.CommonName
			}
			name += "/" + tls.VersionName(version)
			t.Run(name, func(t *testing.T) {
				st := serverTLS{CertFile: srvCert.certFile, KeyFile: srvCert.keyFile, ClientCAFile: ca.file, ClientAuth: tc.mode}
				cfg, err := st.config()
				if err != nil {
					t.Fatal(err)
				}
				srv := serveHTTPS(t, cfg)
				client := &tls.Config{RootCAs: ca.pool(), MaxVersion: version}
				if tc.cert != nil {
					client.Certificates = []tls.Certificate{*tc.cert}
				}
				err = tlsExchange(srv.addr, client)
				if tc.reason == "" {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					if n := srv.hits.Load(); n != 1 {
						t.Fatalf("handler ran %d times; want 1", n)
					}
					return
				}
				// The client sees the server's alert (bad certificate,
				// certificate required, handshake failure) or, with TLS 1.3
				// where the verdict comes after its side of the handshake,
				// possibly a reset. The server's log says why.
				if err == nil {
					t.Fatal("connected; want a refusal")
				}
				t.Logf("client: %v", err)
				srv.refused(t, tc.reason, 1)
				if n := srv.hits.Load(); n != 0 {
					t.Fatalf("handler ran %d times; want 0: the refusal is at the handshake", n)
				}
			})
		}
	}
}

func TestServerTLSReload(t *testing.T) {
	ca := newTestCA(t, "sluice-test")
	first := ca.issue("server", true)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install := func(is issued) {
		t.Helper()
		if err := os.WriteFile(certFile, is.certPEMs, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, is.keyPEMs, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	install(first)
	r, err := serverTLS{CertFile: certFile, KeyFile: keyFile}.reloader()
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, r.config()).addr
	client := &tls.Config{RootCAs: ca.pool()}
	serialIs := func(want *big.Int) {
		t.Helper()
		got, err := httpsGet(addr, client)
		if err != nil {
			t.Fatal(err)
		}
		if got.Cmp(want) != 0 {
			t.Fatalf("serial %v; want %v", got, want)
		}
	}
	serialIs(first.serial)

	// Files rewritten, not reloaded: still the old certificate.
	second := ca.issue("server", true)
	install(second)
	serialIs(first.serial)
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	serialIs(second.serial)

	// A bad rotation (a key of another certificate) fails the reload, and
	// the listener keeps the certificate it had.
	third := ca.issue("server", true)
	if err := os.WriteFile(certFile, third.certPEMs, 0o600); err != nil {
		t.Fatal(err)
	}
	err = r.reload()
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("reload with a mismatched key: err %v; want a mismatch", err)
	}
	serialIs(second.serial)
	if v := r.LogValue().String(); !strings.Contains(v, second.serial.Text(16)) {
		t.Errorf("LogValue %s; want the serial in use, %s", v, second.serial.Text(16))
	}
}

func TestServerTLSReloadClientCAs(t *testing.T) {
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	srvCert := oldCA.issue("server", true)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	writeCA := func(ca *testCA) {
		t.Helper()
		b, err := os.ReadFile(ca.file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(oldCA)
	r, err := serverTLS{CertFile: srvCert.certFile, KeyFile: srvCert.keyFile, ClientCAFile: caFile}.reloader()
	if err != nil {
		t.Fatal(err)
	}
	srv := serveHTTPS(t, r.config())
	oldClient := oldCA.issue("old-client", false)
	newClient := newCA.issue("new-client", false)
	dial := func(c issued) error {
		return tlsExchange(srv.addr, &tls.Config{RootCAs: oldCA.pool(), Certificates: []tls.Certificate{c.tls}})
	}
	if err := dial(oldClient); err != nil {
		t.Fatalf("client of the configured CA: %v", err)
	}
	if err := dial(newClient); err == nil {
		t.Fatal("client of a CA not yet configured connected")
	}
	srv.refused(t, `"CN=new-client"`, 1)
	writeCA(newCA)
	if err := r.reload(); err != nil {
		t.Fatal(err)
	}
	if err := dial(newClient); err != nil {
		t.Fatalf("client of the new CA after reload: %v", err)
	}
	if err := dial(oldClient); err == nil {
		t.Fatal("client of the removed CA connected after reload")
	}
	srv.refused(t, `"CN=old-client"`, 1)
}

func TestServerTLSConfigErrors(t *testing.T) {
	ca := newTestCA(t, "sluice-test")
	a, b := ca.issue("a", true), ca.issue("b", true)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write("empty.pem", "")
	notPEM := write("garbage.pem", "hello\n")
	encrypted := write("enc.pem", string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})))
	badCert := write("bad-cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name string
		t    serverTLS
		want []string // all in the error
	}{
		{"key_file unset", serverTLS{CertFile: a.certFile}, []string{"cert_file is set but key_file is empty"}},
		{"key_file missing", serverTLS{CertFile: a.certFile, KeyFile: missing}, []string{"key_file: open " + missing, "no such file"}},
		{"cert_file missing", serverTLS{CertFile: missing, KeyFile: a.keyFile}, []string{"cert_file: open " + missing}},
		{"mismatch", serverTLS{CertFile: a.certFile, KeyFile: b.keyFile}, []string{"key_file " + b.keyFile + " does not match cert_file " + a.certFile}},
		{"swapped", serverTLS{CertFile: a.keyFile, KeyFile: a.certFile}, []string{"cert_file " + a.keyFile + ": no PEM certificate (found PRIVATE KEY)", "swapped"}},
		{"key not PEM", serverTLS{CertFile: a.certFile, KeyFile: notPEM}, []string{"key_file " + notPEM + ": no PEM private key (the file holds no PEM data)"}},
		{"encrypted key", serverTLS{CertFile: a.certFile, KeyFile: encrypted}, []string{"key_file " + encrypted + ": the private key is encrypted"}},
		{"CA file empty", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientCAFile: empty}, []string{"client_ca_file " + empty + ": no PEM certificates"}},
		{"CA file holds a key", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientCAFile: a.keyFile}, []string{"client_ca_file " + a.keyFile + ": no PEM certificates (found PRIVATE KEY)"}},
		{"CA file bad cert", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientCAFile: badCert}, []string{"client_ca_file " + badCert + ": certificate 1: x509:"}},
		{"CA file missing", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientCAFile: missing}, []string{"client_ca_file: open " + missing}},
		{"client_auth unknown", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientAuth: "maybe"}, []string{`client_auth "maybe": want none, request or require`}},
		{"require without CAs", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientAuth: "require"}, []string{"client_auth require: needs client_ca_file"}},
		{"CAs unused", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, ClientCAFile: ca.file, ClientAuth: "none"}, []string{"client_auth is none"}},
		{"min_version", serverTLS{CertFile: a.certFile, KeyFile: a.keyFile, MinVersion: "1.1"}, []string{`min_version "1.1": want 1.2 or 1.3`}},
		{"key without cert", serverTLS{KeyFile: a.keyFile}, []string{"key_file is set but cert_file is empty"}},
		{"CA without cert", serverTLS{ClientCAFile: ca.file}, []string{"cert_file is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.t.config()
			if err == nil {
				t.Fatalf("config %v; want an error", cfg)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q; want it to contain %q", err, w)
				}
			}
		})
	}
}
