package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/natstest"
)

// adminNode is a `sluice run` started by a test with an admin listener.
type adminNode struct {
	addr  string // the ingest listener
	admin net.Addr
	logs  *syncBuffer
	stop  func() error // as SIGINT; returns run's error
}

// startAdminNode runs `sluice run` in-process on a free loopback port; its
// config must set admin.listen.
func startAdminNode(t *testing.T, args ...string) *adminNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &adminNode{logs: &syncBuffer{}}
	addrc, adminc := make(chan net.Addr, 1), make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- runNode(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), io.Discard, n.logs, &nodeHooks{
			listening:      func(a net.Addr) { addrc <- a },
			adminListening: func(a net.Addr) { adminc <- a },
		})
	}()
	var stopped bool
	var runErr error
	n.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-errc
		}
		return runErr
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("sluice run logs:\n%s", n.logs)
		}
	})
	select {
	case a := <-addrc:
		n.addr = a.String()
	case err := <-errc:
		stopped = true
		t.Fatalf("sluice run exited before listening: %v\n%s", err, n.logs)
	case <-time.After(hangGuard):
		t.Fatalf("hang guard: sluice run not listening after %v\n%s", hangGuard, n.logs)
	}
	select {
	case n.admin = <-adminc: // before listening
	default:
		t.Fatalf("no admin listener\n%s", n.logs)
	}
	return n
}

// adminClient reaches an admin listener: at a Unix socket's path or a TCP
// address. Its URLs are http://sluice-admin/….
func adminClient(addr net.Addr) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, addr.Network(), addr.String())
		},
	}}
}

// socketDir returns a new directory with a short path, for Unix sockets
// (a path of at most 107 bytes): t.TempDir's are named after the test.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestAdminReload runs `sluice run` with its admin listener on a Unix
// socket with a token: the socket is 0600 and removed on exit, reload is
// refused on the ingest listener (404), without the right bearer token
// (401) and from a browser (403), and a reload on the socket applies a
// key's pin_class and a rotated token. The token never reaches the log.
func TestAdminReload(t *testing.T) {
	const (
		token1 = "admin-tok-6f2a9c4e1b8d"
		token2 = "admin-tok-rotated-3c7e0a5f"
		key    = "wk-browser-8e1d4a"
	)
	srv := natstest.Start(t)
	dir := t.TempDir()
	sock := filepath.Join(socketDir(t), "admin.sock")
	tokFile := filepath.Join(dir, "admin.token")
	cfg := filepath.Join(dir, "sluice.yaml")
	write := func(file, s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	config := func(pin string) {
		write(cfg, "admin:\n  listen: unix:"+sock+"\n  token_file: "+tokFile+"\n"+
			"ingest:\n  keys:\n    - {key: "+key+", source: web, class: backfill, pin_class: "+pin+"}\n")
	}
	write(tokFile, token1+"\n")
	config("false")
	n := startAdminNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	if n.admin.Network() != "unix" || n.admin.String() != sock {
		t.Fatalf("admin listener on %s %s; want unix %s", n.admin.Network(), n.admin, sock)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}

	// The ingest listener serves no admin action, whatever the method.
	client := &http.Client{Timeout: 10 * time.Second}
	for _, m := range []string{"POST", "GET", "PUT"} {
		a := do(t, client, m, "http://"+n.addr+"/-/reload", map[string]string{"Authorization": "Bearer " + token1}, "")
		var body struct{ Error string }
		if a.status != 404 || a.header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(a.body), &body) != nil ||
			!strings.Contains(body.Error, "admin.listen") || !strings.Contains(body.Error, "SIGHUP") {
			t.Errorf("%s /-/reload on the ingest listener: %v; want a JSON 404 pointing to admin.listen and SIGHUP", m, a)
		}
	}

	ac := adminClient(n.admin)
	const reloadURL = "http://sluice-admin/-/reload"
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	for _, tc := range []struct {
		name   string
		method string
		url    string
		header map[string]string
		status int
		want   string
	}{
		{"no token", "POST", reloadURL, nil, 401, "unauthorized"},
		{"wrong token", "POST", reloadURL, bearer("admin-tok-wrong"), 401, "unauthorized"},
		{"a prefix of the token", "POST", reloadURL, bearer(token1[:len(token1)-1]), 401, "unauthorized"},
		{"the token as Basic", "POST", reloadURL, map[string]string{"Authorization": "Basic " + token1}, 401, "unauthorized"},
		{"the token without a scheme", "POST", reloadURL, map[string]string{"Authorization": token1}, 401, "unauthorized"},
		{"from a page", "POST", reloadURL, map[string]string{"Authorization": "Bearer " + token1, "Origin": "https://evil.example"}, 403, "browsers"},
		{"from a browser", "POST", reloadURL, map[string]string{"Authorization": "Bearer " + token1, "Sec-Fetch-Site": "same-origin"}, 403, "browsers"},
		{"GET", "GET", reloadURL, bearer(token1), 405, "use POST"},
		{"another path", "POST", "http://sluice-admin/-/quit", bearer(token1), 404, "POST /-/reload"},
		{"right token", "POST", reloadURL, bearer(token1), 200, `"reloaded":true`},
		{"right token, lower-case scheme", "POST", reloadURL, map[string]string{"Authorization": "bearer " + token1}, 200, `"reloaded":true`},
	} {
		a := do(t, ac, tc.method, tc.url, tc.header, "")
		if a.status != tc.status || !strings.Contains(a.body, tc.want) || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %v; want %d with %q", tc.name, a, tc.status, tc.want)
		}
		if tc.status == 401 && a.header.Get("WWW-Authenticate") != `Bearer realm="sluice admin"` {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, a.header.Get("WWW-Authenticate"))
		}
		if tc.status == 405 && a.header.Get("Allow") != "POST" {
			t.Errorf("%s: Allow %q", tc.name, a.header.Get("Allow"))
		}
	}

	// pin_class changes on a reload: the key's class stops being a default.
	send := func(class string) int {
		t.Helper()
		url := "http://" + n.addr + "/v1/events"
		if class != "" {
			url += "?class=" + class
		}
		return do(t, client, "POST", url, map[string]string{"X-Sluice-Key": key}, string(events(0, 1))).status
	}
	if s := send("critical"); s != 200 {
		t.Errorf("an unpinned key naming critical: %d; want 200", s)
	}
	config("true")
	if a := do(t, ac, "POST", reloadURL, bearer(token1), ""); a.status != 200 {
		t.Fatalf("reload pinning the key: %v", a)
	}
	for class, want := range map[string]int{"critical": 403, "ingest": 403, "backfill": 200, "": 200} {
		if s := send(class); s != want {
			t.Errorf("the pinned key naming class %q: %d; want %d", class, s, want)
		}
	}

	// A bad file is refused with 400 and the reason; nothing changes.
	write(cfg, "admin:\n  listen: unix:"+sock+"\n  token_file: "+tokFile+"\ningest:\n  keys:\n    - {key: "+key+", pin_class: true}\n")
	if a := do(t, ac, "POST", reloadURL, bearer(token1), ""); a.status != 400 || !strings.Contains(a.body, "ingest.keys[0].pin_class: true without a class") {
		t.Errorf("reload pinning a key to no class: %v; want 400 naming ingest.keys[0].pin_class", a)
	}
	if s := send("critical"); s != 403 {
		t.Errorf("after the refused reload, the pinned key naming critical: %d; want 403", s)
	}

	// The token is read again on a reload.
	config("true")
	write(tokFile, token2)
	if a := do(t, ac, "POST", reloadURL, bearer(token1), ""); a.status != 200 {
		t.Fatalf("reload rotating the token: %v", a)
	}
	if a := do(t, ac, "POST", reloadURL, bearer(token1), ""); a.status != 401 {
		t.Errorf("the old token after its rotation: %v; want 401", a)
	}
	if a := do(t, ac, "POST", reloadURL, bearer(token2), ""); a.status != 200 {
		t.Errorf("the new token: %v; want 200", a)
	}

	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket after exit: %v; want it removed", err)
	}
	logs := n.logs.String()
	if !strings.Contains(logs, "admin request refused") || !strings.Contains(logs, "config reload refused") {
		t.Errorf("the log has no refused admin request or reload:\n%s", logs)
	}
	checkNoSecret(t, "the log", logs, secrets{"the admin token": token1, "the rotated admin token": token2})
}

// TestAdminTCP: an admin listener on a loopback TCP address needs no
// token, and SIGHUP-less reloads work there.
func TestAdminTCP(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("admin:\n  listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startAdminNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	if n.admin.Network() != "tcp" || n.admin.String() == n.addr {
		t.Fatalf("admin listener %s %s", n.admin.Network(), n.admin)
	}
	if a := do(t, adminClient(n.admin), "POST", "http://sluice-admin/-/reload", nil, ""); a.status != 200 {
		t.Errorf("reload on the admin listener: %v", a)
	}
	if a := do(t, &http.Client{Timeout: 10 * time.Second}, "POST", "http://"+n.addr+"/-/reload", nil, ""); a.status != 404 {
		t.Errorf("reload on the ingest listener: %v; want 404", a)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
}

// The admin section's errors name the key and its line, and never the
// token.
func TestAdminConfigErrors(t *testing.T) {
	dir := t.TempDir()
	const secret = "tok with-inner-space-5e1c"
	good := writeSecret(t, "good.token", "\n  admin-tok-0b9d3e7f2a  \n")
	empty := writeSecret(t, "empty.token", " \n")
	spaced := writeSecret(t, "spaced.token", secret+"\n")
	for _, tt := range []struct{ yaml, want string }{
		{"admin:\n  listen: 0.0.0.0:9090\n", `line 2: admin.listen: "0.0.0.0:9090" is not a loopback address: set admin.token_file, or listen on 127.0.0.1 or a Unix socket`},
		{"admin:\n  listen: :9090\n", `line 2: admin.listen: ":9090" is not a loopback address`},
		{"admin:\n  listen: edge.example:9090\n", `"edge.example:9090" is not a loopback address`},
		{"admin:\n  token_file: " + good + "\n", "line 2: admin.token_file: set without admin.listen"},
		{"admin:\n  listen: 'unix:'\n", `line 2: admin.listen: "unix:" without a path`},
		{"admin:\n  listen: unix:/" + strings.Repeat("a", 200) + "\n", "line 2: admin.listen: socket path of 201 bytes; the limit is"},
		{"admin:\n  listen: 9090\n", `line 2: admin.listen: "9090": want host:port (127.0.0.1:9090) or unix:/path/to/admin.sock`},
		{"admin:\n  listen: 127.0.0.1:99999\n", `bad port "99999"`},
		{"listen: 127.0.0.1:9000\nadmin:\n  listen: 127.0.0.1:9000\n", `line 3: admin.listen: "127.0.0.1:9000" is also listen`},
		{"admin:\n  listen: 0.0.0.0:9090\n  token_file: " + filepath.Join(dir, "missing") + "\n", "line 3: admin.token_file: open "},
		{"admin:\n  listen: 127.0.0.1:9090\n  token_file: " + empty + "\n", "holds no token"},
		{"admin:\n  listen: 127.0.0.1:9090\n  token_file: " + spaced + "\n", "the token holds white space or a control character"},
		{"admin:\n  listen: 127.0.0.1:9090\n  colour: red\n", "line 3: field colour not found in admin"},
		{"admin:\n  listen: 127.0.0.1:9090\n", ""},
		{"admin:\n  listen: localhost:9090\n", ""},
		{"admin:\n  listen: '[::1]:9090'\n", ""},
		{"admin:\n  listen: unix:/run/sluice/admin.sock\n", ""},
		{"admin:\n  listen: 0.0.0.0:9090\n  token_file: " + good + "\n", ""},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		var c nodeConfig
		c.flags(fs)
		c.Config = path
		err := c.load(fs)
		var r *resolved
		if err == nil {
			r, err = c.resolve()
		}
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.yaml, err)
		case tt.want == "":
			if tt.yaml == "admin:\n  listen: 0.0.0.0:9090\n  token_file: "+good+"\n" && string(r.admin) != "admin-tok-0b9d3e7f2a" {
				t.Errorf("%q: token %q; want the file's, trimmed", tt.yaml, r.admin)
			}
		case err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path):
			t.Errorf("%q: error %v\nwant the file and %q", tt.yaml, err, tt.want)
		case strings.Contains(err.Error(), "with-inner-space"):
			t.Errorf("%q: error %v shows the token", tt.yaml, err)
		}
	}
}

// A Unix socket is made with mode 0600; a stale socket is replaced, a
// live one or another file is refused, and only the socket the node made
// is removed.
func TestAdminSocketFiles(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	reload := func() error { return nil }
	dir := socketDir(t)
	sock := filepath.Join(dir, "admin.sock")
	cfg := adminConfig{Listen: "unix:" + sock}

	if err := os.WriteFile(sock, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenAdmin(cfg, nil, reload, log); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "not a socket" {
		t.Errorf("the regular file was touched: %q, %v", b, err)
	}
	os.Remove(sock)

	live, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listenAdmin(cfg, nil, reload, log); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("over a live socket: %v", err)
	}
	live.(*net.UnixListener).SetUnlinkOnClose(false)
	live.Close() // now stale, as after a crash

	a, err := listenAdmin(cfg, nil, reload, log)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- a.serve() }()
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if ans := do(t, adminClient(a.addr()), "POST", "http://sluice-admin/-/reload", nil, ""); ans.status != 200 {
		t.Errorf("reload: %v", ans)
	}
	a.close(t.Context())
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after close: %v", err)
	}
	a.close(t.Context()) // idempotent

	// Another socket in its place by then is not the node's to remove.
	a, err = listenAdmin(cfg, nil, reload, log)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(sock)
	other, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	a.close(t.Context())
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("another process's socket was removed: %v", err)
	}
}
