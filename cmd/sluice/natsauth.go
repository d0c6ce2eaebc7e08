package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// natsAuth is how sluice authenticates to a NATS server, and the TLS of
// that connection: the "upstream_auth" section of the config file.
//
// At most one identity: a creds file (JWT + seed, operator mode), an nkey
// seed, a token, or a user and password. Each secret can be given in a file
// (*_file, trimmed of surrounding white space, read once by options), which
// is what a Kubernetes Secret or systemd credential mount gives; the
// inline forms put the secret in the config file itself.
//
// Secrets never appear in errors, and natsAuth's String and LogValue
// redact them, so a natsAuth can be logged as it is.
type natsAuth struct {
	TLS natsTLS `yaml:"tls"`
	// CredsFile is a NATS creds file (a user JWT and its nkey seed), as nsc
	// writes it. Re-read by the client on every (re)connect.
	CredsFile string `yaml:"creds_file"`
	// NKeyFile holds a user nkey seed ("SU…"). Re-read on every (re)connect.
	NKeyFile string `yaml:"nkey_file"`
	// Token, or TokenFile holding it.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// User, with Password or PasswordFile holding it.
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// natsTLS is the TLS of a NATS connection. Any field set turns TLS on
// (as does a tls:// URL, which verifies against the system's roots).
type natsTLS struct {
	// CAFile is a PEM bundle of the CAs the server's certificate must chain
	// to, instead of the system's roots. Re-read on every (re)connect.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate and its key, for a
	// server that verifies clients. Re-read on every (re)connect.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify accepts any server certificate: tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

const redacted = "[redacted]"

// options returns the nats.Connect options of a, after checking that the
// settings agree and that every file exists and holds what it should. An
// empty natsAuth gives no options. Errors name the field and file, never a
// secret; the caller adds the section ("config: upstream_auth: …").
func (a natsAuth) options() ([]nats.Option, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	var opts []nats.Option

	t := a.TLS
	if t.InsecureSkipVerify { // first: RootCAs and ClientCert keep its config
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}))
	}
	if t.CAFile != "" {
		if _, _, err := loadCertPool("tls.ca_file", t.CAFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.RootCAs(t.CAFile))
	}
	if t.CertFile != "" {
		if _, err := loadKeyPair("tls.cert_file", t.CertFile, "tls.key_file", t.KeyFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
	}

	switch {
	case a.CredsFile != "":
		if err := checkCreds(a.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NKeyFile != "":
		if _, err := os.Stat(a.NKeyFile); err != nil {
			return nil, fmt.Errorf("nkey_file: %w", err)
		}
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey_file %s: %w", a.NKeyFile, err)
		}
		opts = append(opts, o)
	case a.Token != "" || a.TokenFile != "":
		token, err := secret(a.Token, "token_file", a.TokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(token))
	case a.User != "":
		password, err := secret(a.Password, "password_file", a.PasswordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(a.User, password))
	}
	return opts, nil
}

// check reports settings that contradict each other or are incomplete.
func (a natsAuth) check() error {
	both := func(x, y string) error { return fmt.Errorf("%s and %s are both set: want one", x, y) }
	switch t := a.TLS; {
	case a.Token != "" && a.TokenFile != "":
		return both("token", "token_file")
	case a.Password != "" && a.PasswordFile != "":
		return both("password", "password_file")
	case t.CertFile != "" && t.KeyFile == "":
		return errors.New("tls.cert_file is set but tls.key_file is empty: want the certificate's private key")
	case t.CertFile == "" && t.KeyFile != "":
		return errors.New("tls.key_file is set but tls.cert_file is empty")
	case t.CAFile != "" && t.InsecureSkipVerify:
		return errors.New("tls.ca_file and tls.insecure_skip_verify are both set: verify against the CA, or skip verifying; want one")
	}
	var ids []string
	for _, id := range []struct{ name, v string }{
		{"creds_file", a.CredsFile},
		{"nkey_file", a.NKeyFile},
		{"token", a.Token},
		{"token_file", a.TokenFile},
		{"user", a.User},
	} {
		if id.v != "" {
			ids = append(ids, id.name)
		}
	}
	if len(ids) > 1 {
		return fmt.Errorf("%s and %s are both set: want one way to authenticate", ids[0], ids[1])
	}
	hasPassword := a.Password != "" || a.PasswordFile != ""
	switch {
	case a.User != "" && !hasPassword:
		return fmt.Errorf("user %q has no password or password_file", a.User)
	case a.User == "" && hasPassword:
		return errors.New("password or password_file is set but user is empty")
	}
	return nil
}

// secret returns inline, or else the trimmed content of the file named by
// field. An empty secret is an error.
func secret(inline, field, path string) (string, error) {
	if inline != "" {
		return inline, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", field, path)
	}
	return s, nil
}

// checkCreds checks that path is a creds file: a user JWT and an nkey seed
// that signs. The client re-reads it on every connect.
func checkCreds(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("creds_file: %w", err)
	}
	var o nats.Options
	if err := nats.UserCredentials(path)(&o); err != nil {
		return fmt.Errorf("creds_file %s: %w", path, err)
	}
	jwt, err := o.UserJWT()
	if err != nil {
		return fmt.Errorf("creds_file %s: %w", path, err)
	}
	// Without the decoration nats.go takes the whole file for the JWT: a
	// JWT is three base64url parts joined by dots, nothing else.
	if parts := strings.Split(jwt, "."); len(parts) != 3 || strings.ContainsAny(jwt, " \t\r\n") {
		return fmt.Errorf("creds_file %s: no user JWT (want the file nsc writes: a NATS USER JWT block, then a USER NKEY SEED block)", path)
	}
	if _, err := o.SignatureCB([]byte("sluice")); err != nil {
		return fmt.Errorf("creds_file %s: no usable nkey seed: %w", path, err)
	}
	return nil
}

// method names the identity a presents: creds, nkey, token, user or none.
func (a natsAuth) method() string {
	switch {
	case a.CredsFile != "":
		return "creds"
	case a.NKeyFile != "":
		return "nkey"
	case a.Token != "" || a.TokenFile != "":
		return "token"
	case a.User != "":
		return "user"
	}
	return "none"
}

// attrs are the set fields of a, secrets redacted.
func (a natsAuth) attrs() []slog.Attr {
	var attrs []slog.Attr
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	attrs = append(attrs, slog.String("method", a.method()))
	add("tls.ca_file", a.TLS.CAFile)
	add("tls.cert_file", a.TLS.CertFile)
	add("tls.key_file", a.TLS.KeyFile)
	if a.TLS.InsecureSkipVerify {
		attrs = append(attrs, slog.Bool("tls.insecure_skip_verify", true))
	}
	add("creds_file", a.CredsFile)
	add("nkey_file", a.NKeyFile)
	if a.Token != "" {
		add("token", redacted)
	}
	add("token_file", a.TokenFile)
	add("user", a.User)
	if a.Password != "" {
		add("password", redacted)
	}
	add("password_file", a.PasswordFile)
	return attrs
}

// LogValue is a's fields without its secrets: paths, user, method.
func (a natsAuth) LogValue() slog.Value { return slog.GroupValue(a.attrs()...) }

// String is a's fields without its secrets, for %v and %+v (also of a
// struct holding a natsAuth in an exported field).
func (a natsAuth) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, at := range a.attrs() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", at.Key, at.Value)
	}
	b.WriteByte('}')
	return b.String()
}

// GoString keeps %#v from printing the secrets.
func (a natsAuth) GoString() string { return "natsAuth" + a.String() }
