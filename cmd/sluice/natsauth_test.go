package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// startNATSServer starts a nats-server with o on a free loopback port
// until the test ends, and returns its URL.
func startNATSServer(t *testing.T, o *server.Options) string {
	t.Helper()
	o.Host, o.Port = "127.0.0.1", -1
	o.NoLog, o.NoSigs = true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s.ClientURL()
}

// natsRoundTrip connects to url with a's options, once, and round-trips a
// PING.
func natsRoundTrip(url string, a natsAuth) error {
	opts, err := a.options()
	if err != nil {
		return fmt.Errorf("options: %w", err)
	}
	opts = append(opts, nats.Timeout(3*time.Second), nats.NoReconnect())
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	return nc.FlushTimeout(3 * time.Second)
}

// writeSecret writes content to a new file and returns its path.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type natsAuthCase struct {
	name string
	auth natsAuth
	want string // "" = connects; else in the error (alternatives split by |)
}

func containsAny(s string, subs []string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}

func runNATSAuthCases(t *testing.T, url string, cases []natsAuthCase, secrets ...string) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := natsRoundTrip(url, tc.auth)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("err %v; want a connection", err)
			case tc.want != "" && (err == nil || !containsAny(err.Error(), strings.Split(tc.want, "|"))):
				t.Fatalf("err %v; want one with %q", err, tc.want)
			}
			if err != nil {
				t.Log(err)
			}
			for _, s := range secrets {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Fatalf("err %q shows a secret", err)
				}
			}
		})
	}
}

func TestNATSAuthTLS(t *testing.T) {
	ca := newTestCA(t, "nats-ca")
	srvCert := ca.issue("nats-server", true)
	client := ca.issue("sluice-client", false)
	other := newTestCA(t, "other")
	foreign := other.issue("intruder", false)

	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: srvCert.certFile, KeyFile: srvCert.keyFile, CaFile: ca.file, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	url := startNATSServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tlsConfig, TLSTimeout: 2})
	const refused = "remote error: tls: certificate required|nats: tls error: connection closed by remote after TLS handshake"

	runNATSAuthCases(t, url, []natsAuthCase{
		{"CA and client cert", natsAuth{TLS: natsTLS{CAFile: ca.file, CertFile: client.certFile, KeyFile: client.keyFile}}, ""},
		{"insecure with client cert", natsAuth{TLS: natsTLS{InsecureSkipVerify: true, CertFile: client.certFile, KeyFile: client.keyFile}}, ""},
		// With TLS 1.3 the server's refusal comes after the client's side of
		// the handshake: the client sees the alert or, if it writes first,
		// the closed connection.
		{"no client cert", natsAuth{TLS: natsTLS{CAFile: ca.file}}, refused},
		// The server names its CAs, so the client does not even send this one.
		{"client cert of another CA", natsAuth{TLS: natsTLS{CAFile: ca.file, CertFile: foreign.certFile, KeyFile: foreign.keyFile}}, refused},
		{"server of an untrusted CA", natsAuth{TLS: natsTLS{CAFile: other.file, CertFile: client.certFile, KeyFile: client.keyFile}}, "x509: certificate signed by unknown authority"},
		// nats.go upgrades to TLS as the server asks, against the system's roots.
		{"no TLS settings", natsAuth{}, "x509: certificate signed by unknown authority"},
	})
}

func TestNATSAuthToken(t *testing.T) {
	const token = "tok-3f9a-s3cret"
	url := startNATSServer(t, &server.Options{Authorization: token})
	runNATSAuthCases(t, url, []natsAuthCase{
		{"token_file", natsAuth{TokenFile: writeSecret(t, "token", "\n "+token+"\n")}, ""},
		{"token", natsAuth{Token: token}, ""},
		{"wrong token", natsAuth{TokenFile: writeSecret(t, "token", "tok-wrong-guess")}, "Authorization Violation"},
		{"none", natsAuth{}, "Authorization Violation"},
	}, token, "tok-wrong-guess")
}

func TestNATSAuthNKeyAndUser(t *testing.T) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ukp.PublicKey()
	seed, _ := ukp.Seed()
	stranger, _ := nkeys.CreateUser()
	strangerSeed, _ := stranger.Seed()
	const password = "pw-77a1-s3cret"
	url := startNATSServer(t, &server.Options{
		Nkeys: []*server.NkeyUser{{Nkey: pub}},
		Users: []*server.User{{Username: "edge", Password: password}},
	})
	runNATSAuthCases(t, url, []natsAuthCase{
		{"nkey_file", natsAuth{NKeyFile: writeSecret(t, "user.nk", string(seed)+"\n")}, ""},
		{"unknown nkey", natsAuth{NKeyFile: writeSecret(t, "user.nk", string(strangerSeed))}, "Authorization Violation"},
		{"password_file", natsAuth{User: "edge", PasswordFile: writeSecret(t, "pw", password+"\n")}, ""},
		{"password", natsAuth{User: "edge", Password: password}, ""},
		{"wrong password", natsAuth{User: "edge", PasswordFile: writeSecret(t, "pw", "pw-wrong-guess")}, "Authorization Violation"},
	}, password, "pw-wrong-guess", string(seed), string(strangerSeed))
}

func TestNATSAuthCreds(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	creds := func(signer nkeys.KeyPair) (string, string) {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		ujwt, err := jwt.NewUserClaims(upub).Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		return writeSecret(t, "user.creds", string(b)), string(seed)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	url := startNATSServer(t, &server.Options{TrustedKeys: []string{opub}, AccountResolver: resolver})

	good, goodSeed := creds(akp)
	rogueAccount, _ := nkeys.CreateAccount() // not known to the server
	rogue, rogueSeed := creds(rogueAccount)
	runNATSAuthCases(t, url, []natsAuthCase{
		{"creds_file", natsAuth{CredsFile: good}, ""},
		{"creds of an unknown account", natsAuth{CredsFile: rogue}, "Authorization Violation"},
	}, goodSeed, rogueSeed)
}

func TestNATSAuthOptionErrors(t *testing.T) {
	ca := newTestCA(t, "nats-ca")
	c := ca.issue("client", false)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	seedFile := writeSecret(t, "user.nk", string(seed))
	empty := writeSecret(t, "empty", " \n")
	noJWT := writeSecret(t, "bad.creds", "-----BEGIN USER NKEY SEED-----\n"+string(seed)+"\n------END USER NKEY SEED------\n")
	missing := filepath.Join(t.TempDir(), "missing")

	for _, tc := range []struct {
		name string
		auth natsAuth
		want string
	}{
		{"token twice", natsAuth{Token: "a", TokenFile: seedFile}, "token and token_file are both set: want one"},
		{"password twice", natsAuth{User: "u", Password: "a", PasswordFile: seedFile}, "password and password_file are both set: want one"},
		{"token and creds", natsAuth{TokenFile: seedFile, CredsFile: seedFile}, "creds_file and token_file are both set: want one way to authenticate"},
		{"creds and nkey", natsAuth{CredsFile: seedFile, NKeyFile: seedFile}, "creds_file and nkey_file are both set"},
		{"nkey and user", natsAuth{NKeyFile: seedFile, User: "u", Password: "p"}, "nkey_file and user are both set"},
		{"user without password", natsAuth{User: "edge"}, `user "edge" has no password or password_file`},
		{"password without user", natsAuth{PasswordFile: seedFile}, "password or password_file is set but user is empty"},
		{"cert without key", natsAuth{TLS: natsTLS{CertFile: c.certFile}}, "tls.cert_file is set but tls.key_file is empty"},
		{"key without cert", natsAuth{TLS: natsTLS{KeyFile: c.keyFile}}, "tls.key_file is set but tls.cert_file is empty"},
		{"CA and insecure", natsAuth{TLS: natsTLS{CAFile: ca.file, InsecureSkipVerify: true}}, "tls.ca_file and tls.insecure_skip_verify are both set"},
		{"CA file missing", natsAuth{TLS: natsTLS{CAFile: missing}}, "tls.ca_file: open " + missing},
		{"CA file without certs", natsAuth{TLS: natsTLS{CAFile: c.keyFile}}, "tls.ca_file " + c.keyFile + ": no PEM certificates"},
		{"key of another cert", natsAuth{TLS: natsTLS{CertFile: c.certFile, KeyFile: ca.issue("x", false).keyFile}}, "does not match tls.cert_file " + c.certFile},
		{"token_file missing", natsAuth{TokenFile: missing}, "token_file: open " + missing},
		{"token_file empty", natsAuth{TokenFile: empty}, "token_file " + empty + " is empty"},
		{"password_file empty", natsAuth{User: "u", PasswordFile: empty}, "password_file " + empty + " is empty"},
		{"nkey_file missing", natsAuth{NKeyFile: missing}, "nkey_file: stat " + missing},
		{"nkey_file not a seed", natsAuth{NKeyFile: c.certFile}, "nkey_file " + c.certFile + ":"},
		{"creds_file missing", natsAuth{CredsFile: missing}, "creds_file: stat " + missing},
		{"creds_file without JWT", natsAuth{CredsFile: noJWT}, "creds_file " + noJWT + ": no user JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.auth.options()
			if err == nil {
				t.Fatalf("%d options; want an error", len(opts))
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %q; want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), string(seed)) {
				t.Errorf("err %q shows the seed", err)
			}
		})
	}
	if opts, err := (natsAuth{}).options(); err != nil || len(opts) != 0 {
		t.Errorf("empty section: %d options, err %v; want none", len(opts), err)
	}
}

func TestNATSAuthRedacts(t *testing.T) {
	a := natsAuth{Token: "tok-s3cret", User: "", TLS: natsTLS{CAFile: "/etc/sluice/ca.pem"}}
	b := natsAuth{User: "edge", Password: "pw-s3cret"}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("upstream", "auth", a)
	log.Info("upstream", "auth", b)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("upstream", "auth", b)
	type holder struct{ UpstreamAuth natsAuth } // as a config struct holds it
	out := buf.String() + fmt.Sprint(a, b) + fmt.Sprintf("%+v %#v %+v %s", holder{a}, b, holder{b}, a)
	for _, s := range []string{"tok-s3cret", "pw-s3cret"} {
		if strings.Contains(out, s) {
			t.Fatalf("a secret in the output:\n%s", out)
		}
	}
	for _, s := range []string{"/etc/sluice/ca.pem", "edge", "[redacted]", `"method":"token"`, "method=user"} {
		if !strings.Contains(out, s) {
			t.Errorf("%q missing from the output:\n%s", s, out)
		}
	}
}
