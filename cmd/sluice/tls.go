package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
)

// serverTLS is the "tls" section of the config file: HTTPS, and optionally
// client certificates, on the ingest listener. Paths are read when the
// listener starts and again on every reload.
type serverTLS struct {
	// CertFile is the PEM server certificate, leaf first, then any
	// intermediates. Empty: plain HTTP (and every other field must be empty).
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile, unencrypted. Required with
	// CertFile.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of the CAs whose client certificates are
	// accepted. Empty: no client certificates are asked for.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is "none", "request" (a client may present a certificate,
	// which must then verify against ClientCAFile) or "require" (it must).
	// Default "require" with ClientCAFile, else "none".
	ClientAuth string `yaml:"client_auth"`
	// MinVersion is the oldest TLS version accepted: "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// Client authentication modes of serverTLS.ClientAuth.
const (
	clientAuthNone    = "none"
	clientAuthRequest = "request"
	clientAuthRequire = "require"
)

// config returns the TLS configuration of t for the ingest listener, or nil
// when t.CertFile is empty. Use reloader instead where the files must be
// re-read without a restart.
func (t serverTLS) config() (*tls.Config, error) {
	r, err := t.reloader()
	if err != nil {
		return nil, err
	}
	return r.config(), nil
}

// reloader loads the files of t and returns the holder serving them, or nil
// (whose methods are no-ops) when t.CertFile is empty. Errors name the file
// and what is wrong with it; the caller adds the section ("config: tls: …").
func (t serverTLS) reloader() (*tlsReloader, error) {
	mode, minVersion, err := t.check()
	if err != nil || t.CertFile == "" {
		return nil, err
	}
	r := &tlsReloader{files: t, mode: mode}
	if err := r.reload(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: minVersion,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &r.cur.Load().cert, nil
		},
	}
	// Client certificates are verified in VerifyConnection against the pool
	// of the last reload, not by crypto/tls against a fixed ClientCAs, so
	// that a reload can rotate the CAs too. The checks are those crypto/tls
	// makes (chain to a root, validity, client-auth key usage) and they
	// also run on resumed sessions. The price: the server's certificate
	// request names no CAs, and ConnectionState.VerifiedChains stays empty.
	switch mode {
	case clientAuthRequest:
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = r.verifyClient
	case clientAuthRequire:
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = r.verifyClient
	}
	r.cfg = cfg
	return r, nil
}

// check validates the fields of t, without reading any file.
func (t serverTLS) check() (mode string, minVersion uint16, err error) {
	switch t.MinVersion {
	case "", "1.2":
		minVersion = tls.VersionTLS12
	case "1.3":
		minVersion = tls.VersionTLS13
	default:
		return "", 0, fmt.Errorf("min_version %q: want 1.2 or 1.3", t.MinVersion)
	}
	mode = t.ClientAuth
	switch mode {
	case "":
		mode = clientAuthNone
		if t.ClientCAFile != "" {
			mode = clientAuthRequire
		}
	case clientAuthNone, clientAuthRequest, clientAuthRequire:
	default:
		return "", 0, fmt.Errorf("client_auth %q: want none, request or require", t.ClientAuth)
	}
	switch {
	case t.CertFile == "" && t.KeyFile != "":
		return "", 0, errors.New("key_file is set but cert_file is empty")
	case t.CertFile == "" && (t.ClientCAFile != "" || t.ClientAuth != "" || t.MinVersion != ""):
		return "", 0, errors.New("client_ca_file, client_auth or min_version is set but cert_file is empty: TLS is off without cert_file")
	case t.CertFile != "" && t.KeyFile == "":
		return "", 0, errors.New("cert_file is set but key_file is empty: want the certificate's private key")
	case mode != clientAuthNone && t.ClientCAFile == "":
		return "", 0, fmt.Errorf("client_auth %s: needs client_ca_file, the CAs to verify client certificates against", mode)
	case mode == clientAuthNone && t.ClientCAFile != "":
		return "", 0, errors.New("client_ca_file is set but client_auth is none: the CAs would be unused; remove one")
	}
	return mode, minVersion, nil
}

// tlsReloader serves the certificate and client CAs last read from a
// serverTLS's files. Its methods are safe for concurrent use, and no-ops
// on a nil *tlsReloader (TLS off).
type tlsReloader struct {
	files serverTLS
	mode  string // client_auth, defaulted
	cfg   *tls.Config
	cur   atomic.Pointer[tlsFiles]
}

// tlsFiles is what one reload read.
type tlsFiles struct {
	cert      tls.Certificate // with Leaf
	clientCAs *x509.CertPool  // nil without client_ca_file
	caCount   int
}

// config returns the listener's TLS configuration (a new copy each call).
// Handshakes through any copy use the files of the last successful reload.
func (r *tlsReloader) config() *tls.Config {
	if r == nil {
		return nil
	}
	return r.cfg.Clone()
}

// reload re-reads the certificate, key and client CA files. Handshakes
// after it returns nil use the new ones; connections already open keep
// theirs. On an error nothing changes: the listener keeps serving the
// previous files, so a botched rotation does not take HTTPS down.
func (r *tlsReloader) reload() error {
	if r == nil {
		return nil
	}
	cert, err := loadKeyPair("cert_file", r.files.CertFile, "key_file", r.files.KeyFile)
	if err != nil {
		return err
	}
	f := &tlsFiles{cert: cert}
	if r.files.ClientCAFile != "" {
		if f.clientCAs, f.caCount, err = loadCertPool("client_ca_file", r.files.ClientCAFile); err != nil {
			return err
		}
	}
	r.cur.Store(f)
	return nil
}

// LogValue describes the certificate in use, for the log line after a
// start or reload. It holds no secret.
func (r *tlsReloader) LogValue() slog.Value {
	if r == nil {
		return slog.StringValue("off")
	}
	f := r.cur.Load()
	leaf := f.cert.Leaf
	attrs := []slog.Attr{
		slog.String("cert_file", r.files.CertFile),
		slog.String("subject", leaf.Subject.String()),
		slog.String("serial", leaf.SerialNumber.Text(16)),
		slog.Time("not_after", leaf.NotAfter),
		slog.String("client_auth", r.mode),
	}
	if f.clientCAs != nil {
		attrs = append(attrs, slog.Int("client_cas", f.caCount))
	}
	return slog.GroupValue(attrs...)
}

// verifyClient checks a client's certificate, if any, against the client
// CAs of the last reload, as crypto/tls does with ClientCAs.
func (r *tlsReloader) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		if r.mode == clientAuthRequire { // crypto/tls has refused it already
			return errors.New("tls: client certificate required")
		}
		return nil
	}
	opts := x509.VerifyOptions{
		Roots:         r.cur.Load().clientCAs,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("tls: client certificate %q (serial %s): %w", leaf.Subject.String(), leaf.SerialNumber.Text(16), err)
	}
	return nil
}

// loadKeyPair reads a PEM certificate chain and its private key. The field
// names (cert_file, tls.cert_file, …) start every error, with the path.
// Errors never quote the key.
func loadKeyPair(certField, certFile, keyField, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certField, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", keyField, err)
	}
	certTypes := pemTypes(certPEM)
	if !certTypes["CERTIFICATE"] {
		msg := fmt.Sprintf("%s %s: no PEM certificate%s", certField, certFile, foundTypes(certTypes))
		if hasPrivateKey(certTypes) {
			msg += fmt.Sprintf("; are %s and %s swapped?", certField, keyField)
		}
		return tls.Certificate{}, errors.New(msg)
	}
	keyTypes := pemTypes(keyPEM)
	switch {
	case keyTypes["ENCRYPTED PRIVATE KEY"] || bytes.Contains(keyPEM, []byte("Proc-Type: 4,ENCRYPTED")):
		return tls.Certificate{}, fmt.Errorf("%s %s: the private key is encrypted; want an unencrypted key (protect the file with its permissions)", keyField, keyFile)
	case !hasPrivateKey(keyTypes):
		msg := fmt.Sprintf("%s %s: no PEM private key%s", keyField, keyFile, foundTypes(keyTypes))
		if keyTypes["CERTIFICATE"] {
			msg += fmt.Sprintf("; are %s and %s swapped?", certField, keyField)
		}
		return tls.Certificate{}, errors.New(msg)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return tls.Certificate{}, fmt.Errorf("%s %s does not match %s %s: the private key is not the certificate's", keyField, keyFile, certField, certFile)
		}
		return tls.Certificate{}, fmt.Errorf("%s %s, %s %s: %w", certField, certFile, keyField, keyFile, err)
	}
	if cert.Leaf == nil { // set by X509KeyPair unless GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("%s %s: %w", certField, certFile, err)
		}
	}
	return cert, nil
}

// loadCertPool reads a PEM bundle of CA certificates. It is an error for
// the file to hold none, or one that does not parse; other PEM blocks are
// skipped.
func loadCertPool(field, path string) (*x509.CertPool, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", field, err)
	}
	pool := x509.NewCertPool()
	n := 0
	types := map[string]bool{}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		types[b.Type] = true
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, 0, fmt.Errorf("%s %s: certificate %d: %w", field, path, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("%s %s: no PEM certificates%s", field, path, foundTypes(types))
	}
	return pool, n, nil
}

// pemTypes returns the types of the PEM blocks in data.
func pemTypes(data []byte) map[string]bool {
	types := map[string]bool{}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return types
		}
		types[b.Type] = true
	}
}

func hasPrivateKey(types map[string]bool) bool {
	for t := range types {
		if strings.HasSuffix(t, "PRIVATE KEY") && t != "ENCRYPTED PRIVATE KEY" {
			return true
		}
	}
	return false
}

// foundTypes describes what a file held instead, for an error message.
func foundTypes(types map[string]bool) string {
	if len(types) == 0 {
		return " (the file holds no PEM data)"
	}
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	slices.Sort(names)
	return " (found " + strings.Join(names, ", ") + ")"
}
