package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/sluicehq/sluice/internal/natstest"
)

// runningNode is a `sluice run` started by a test, with all it printed.
type runningNode struct {
	addr           string
	stdout, stderr *syncBuffer
	stop           func() error // as SIGINT; returns run's error
}

// startRunNode runs `sluice run` in-process on a free loopback port and
// keeps its standard output and its log.
func startRunNode(t *testing.T, args ...string) *runningNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &runningNode{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- runNode(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), n.stdout, n.stderr,
			&nodeHooks{listening: func(a net.Addr) { addrc <- a }})
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
	t.Cleanup(func() { n.stop() })
	select {
	case a := <-addrc:
		n.addr = a.String()
	case err := <-errc:
		stopped = true
		t.Fatalf("sluice run exited before listening: %v\n%s", err, n.stderr)
	case <-time.After(hangGuard):
		t.Fatalf("hang guard: sluice run not listening after %v\n%s", hangGuard, n.stderr)
	}
	return n
}

// secrets are the secret strings of a test by what they are, so that a
// failure names the secret without printing it.
type secrets map[string]string

// pemSecrets adds the base64 lines of the PEM private key in file.
func (s secrets) pemKey(t *testing.T, name, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", file)
	}
	body := base64.StdEncoding.EncodeToString(block.Bytes)
	for i := 0; i < len(body); i += 64 {
		s[fmt.Sprintf("%s (PEM line %d)", name, i/64+1)] = body[i:min(i+64, len(body))]
	}
}

// checkNoSecret fails if any secret appears in text, naming the secret
// and where, with the text around it masked.
func checkNoSecret(t *testing.T, where, text string, s secrets) {
	t.Helper()
	for name, v := range s {
		if len(v) < 8 {
			t.Fatalf("secret %s is too short to look for", name)
		}
		if i := strings.Index(text, v); i >= 0 {
			from := max(0, i-80)
			t.Errorf("%s shows %s at byte %d: …%s[%s]…", where, name, i, text[from:i], name)
		}
	}
}

// httpsClient trusts ca and presents cert, if any.
func httpsClient(ca *testCA, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: ca.pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, strings.TrimSpace(a.body)) }

func do(t *testing.T, c *http.Client, method, url string, header map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, string(b)}
}

// metric returns the sum of the samples of the metric family name in a
// Prometheus text exposition, and whether there was one.
func metric(text, name string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// ingestRoute is one endpoint of the ingest handler, with a body that
// carries one valid event and, where the format has one, the body's key
// member.
type ingestRoute struct {
	method, path string
	body         func(id string) string
	bodyKey      func(key, id string) string // nil: the format carries no key
}

// ingestRoutes are all the routes ingest.Handler serves but /healthz.
func ingestRoutes() []ingestRoute {
	events := func(id string) string { return `{"id":"` + id + `"}` }
	segBatch := func(id string) string {
		return `{"batch":[{"type":"track","event":"e","messageId":"` + id + `"}]}`
	}
	segKey := func(key, id string) string {
		return `{"writeKey":"` + key + `","batch":[{"type":"track","event":"e","messageId":"` + id + `"}]}`
	}
	segCall := func(id string) string { return `{"event":"e","userId":"u","messageId":"` + id + `"}` }
	segCallKey := func(key, id string) string {
		return `{"writeKey":"` + key + `","event":"e","userId":"u","messageId":"` + id + `"}`
	}
	snowplow := func(id string) string {
		return `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{"e":"pv","eid":"` + id + `"}]}`
	}
	ph := func(id string) string { return `{"batch":[{"event":"e","uuid":"` + id + `"}]}` }
	phKey := func(key, id string) string {
		return `{"api_key":"` + key + `","batch":[{"event":"e","uuid":"` + id + `"}]}`
	}
	routes := []ingestRoute{
		{"POST", "/v1/events", events, nil},
		{"POST", "/v1/batch", segBatch, segKey},
	}
	for _, call := range []string{"track", "identify", "page", "screen", "group", "alias"} {
		routes = append(routes, ingestRoute{"POST", "/v1/" + call, segCall, segCallKey})
	}
	routes = append(routes,
		ingestRoute{"POST", "/com.snowplowanalytics.snowplow/tp2", snowplow, nil},
		ingestRoute{"GET", "/i", nil, nil},
	)
	for _, p := range []string{"/batch", "/batch/", "/capture", "/capture/", "/e", "/e/"} {
		routes = append(routes, ingestRoute{"POST", p, ph, phKey})
	}
	return routes
}

// TestSecretsRefuseUnauthenticated runs `sluice run` with write keys (an
// inline one, one from key_file and one from the environment), HTTPS and a
// NATS password, at debug level: every ingest route refuses a request
// without a key, with an unknown one presented in every way, or with a
// right key where none is read, and ingests nothing of it; every route
// takes a right key. A reload swaps the keys. Then no secret — keys
// configured or presented, the NATS password, the TLS private key —
// appears in the log, the standard output, /metrics, the status page and
// its JSON, any answer, or `sluice validate`'s output.
func TestSecretsRefuseUnauthenticated(t *testing.T) {
	const (
		inlineKey = "wk-inline-7c1e0f3a9b"
		fileKey   = "wk-file-52d9e8a4c0"
		envKey    = "wk-env-b6a0c7d2e1"
		newKey    = "wk-reloaded-1f4e9a7c3d"
		wrongKey  = "wk-wrong-guess-9d8c7b"
		natsPass  = "nats-pw-3e7b1c9a5f"
		natsPass2 = "nats-pw-rotated-8a2d6f"
		adminTok  = "admin-tok-secrets-4d7a1e9c"
	)
	url := startNATSServer(t, &server.Options{
		JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{Username: "edge", Password: natsPass}},
	})
	ca := newTestCA(t, "secrets-ca")
	cert := ca.issue("127.0.0.1", true)
	dir := t.TempDir()
	keyFile := writeSecret(t, "write.key", "\n"+fileKey+"\n")
	passFile := writeSecret(t, "nats.pw", natsPass+"\n")
	t.Setenv("SLUICE_TEST_SECRET_KEY", envKey)
	sock := filepath.Join(socketDir(t), "admin.sock")
	adminFile := writeSecret(t, "admin.token", adminTok+"\n")
	cfg := filepath.Join(dir, "sluice.yaml")
	config := func(keys, password string) {
		t.Helper()
		c := "log_level: debug\n" +
			"admin:\n  listen: unix:" + sock + "\n  token_file: " + adminFile + "\n" +
			"tls:\n  cert_file: " + cert.certFile + "\n  key_file: " + cert.keyFile + "\n" +
			"upstream_auth:\n  user: edge\n  " + password + "\n" +
			"ingest:\n  keys:\n" + keys
		if err := os.WriteFile(cfg, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keys := "    - {key: " + inlineKey + ", source: web}\n" +
		"    - {key_file: " + keyFile + ", source: ios, class: critical}\n" +
		"    - {key: ${SLUICE_TEST_SECRET_KEY}, source: env}\n"
	config(keys, "password_file: "+passFile)
	s := secrets{"the inline key": inlineKey, "the key_file key": fileKey, "the environment's key": envKey,
		"the reloaded key": newKey, "the wrong key": wrongKey, "the NATS password": natsPass, "the rotated NATS password": natsPass2,
		"the admin token": adminTok}
	s.pemKey(t, "the TLS key", cert.keyFile)

	var validateOut bytes.Buffer
	if err := runValidate([]string{cfg}, &validateOut, &validateOut); err != nil {
		t.Fatalf("sluice validate: %v\n%s", err, &validateOut)
	}
	n := startRunNode(t, "--config", cfg, "--upstream", url, "--data-dir", filepath.Join(dir, "data"), "--node", "secrets")
	base := "https://" + n.addr
	client := httpsClient(ca, nil)
	var shown strings.Builder // every answer, headers and body
	record := func(a answer) answer {
		for k, v := range a.header {
			fmt.Fprintf(&shown, "%s: %s\n", k, strings.Join(v, ", "))
		}
		shown.WriteString(a.body)
		return a
	}

	// Refused: no key, an unknown key in every place a key is read, and a
	// right key where none is read. Nothing of these is ingested.
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	type attempt struct {
		name   string
		header map[string]string
		body   bool   // the key in the body, where the format has one
		query  string // appended to the URL
	}
	attempts := []attempt{
		{name: "no key"},
		{name: "X-Sluice-Key", header: map[string]string{"X-Sluice-Key": wrongKey}},
		{name: "Bearer", header: map[string]string{"Authorization": "Bearer " + wrongKey}},
		{name: "Basic user", header: map[string]string{"Authorization": basic(wrongKey + ":")}},
		{name: "Basic password", header: map[string]string{"Authorization": basic(":" + wrongKey)}},
		{name: "body key", body: true},
		{name: "right key as a bare Authorization", header: map[string]string{"Authorization": inlineKey}},
		{name: "right key in another header", header: map[string]string{"X-Api-Key": inlineKey, "Api-Key": inlineKey}},
		{name: "right key in the query", query: "key=" + inlineKey + "&api_key=" + inlineKey + "&writeKey=" + inlineKey},
		{name: "right key as a cookie", header: map[string]string{"Cookie": "sluice_key=" + inlineKey}},
		{name: "prefix of the right key", header: map[string]string{"X-Sluice-Key": inlineKey[:len(inlineKey)-1]}},
	}
	refused, id := 0, 0
	for _, rt := range ingestRoutes() {
		for _, a := range attempts {
			if a.body && rt.bodyKey == nil {
				continue
			}
			id++
			ev := fmt.Sprintf("unauth-%d", id)
			url, body := base+rt.path, ""
			switch {
			case rt.method == "GET":
				url += "?e=pv&eid=" + ev
			case a.body:
				body = rt.bodyKey(wrongKey, ev)
			default:
				body = rt.body(ev)
			}
			if a.query != "" {
				if strings.Contains(url, "?") {
					url += "&" + a.query
				} else {
					url += "?" + a.query
				}
			}
			x := record(do(t, client, rt.method, url, a.header, body))
			refused++
			if x.status != 401 || x.header.Get("WWW-Authenticate") != `Basic realm="sluice"` {
				t.Errorf("%s %s, %s: %v (WWW-Authenticate %q); want 401 with a Basic challenge",
					rt.method, rt.path, a.name, x, x.header.Get("WWW-Authenticate"))
			}
		}
	}

	// Taken: each route with each configured key, in a header or the body.
	accepted := 0
	takes := func(key string) {
		t.Helper()
		for i, rt := range ingestRoutes() {
			id++
			ev := fmt.Sprintf("auth-%d", id)
			url, body, header := base+rt.path, "", map[string]string{"X-Sluice-Key": key}
			switch {
			case rt.method == "GET":
				url += "?e=pv&eid=" + ev
			case rt.bodyKey != nil && i%2 == 0:
				body, header = rt.bodyKey(key, ev), nil
			default:
				body = rt.body(ev)
			}
			x := record(do(t, client, rt.method, url, header, body))
			if x.status != 200 {
				t.Errorf("%s %s with a right key: %v; want 200", rt.method, rt.path, x)
				continue
			}
			accepted++
		}
	}
	takes(inlineKey)
	takes(fileKey)
	takes(envKey)

	// A reload: a change of the NATS password needs a restart and is
	// refused, naming the key only; a new key set applies.
	admin := adminClient(&net.UnixAddr{Net: "unix", Name: sock})
	if x := record(do(t, admin, "POST", "http://sluice-admin/-/reload", nil, "")); x.status != 401 {
		t.Errorf("reload without the admin token: %v; want 401", x)
	}
	reload := func() answer {
		return record(do(t, admin, "POST", "http://sluice-admin/-/reload", map[string]string{"Authorization": "Bearer " + adminTok}, ""))
	}
	config(keys, "password: "+natsPass2)
	if x := reload(); x.status != 400 || !strings.Contains(x.body, "upstream_auth") {
		t.Errorf("reload with a new NATS password: %v; want 400 naming upstream_auth", x)
	}
	config("    - {key: "+newKey+", source: web}\n", "password_file: "+passFile)
	if x := reload(); x.status != 200 {
		t.Fatalf("reload with a new key: %v", x)
	}
	if x := record(do(t, client, "POST", base+"/v1/events", map[string]string{"X-Sluice-Key": inlineKey}, `{"id":"old"}`)); x.status != 401 {
		t.Errorf("the replaced key after the reload: %v; want 401", x)
	}
	refused++
	if x := record(do(t, client, "POST", base+"/v1/events", map[string]string{"Authorization": "Bearer " + newKey}, `{"id":"new"}`)); x.status != 200 {
		t.Errorf("the new key after the reload: %v; want 200", x)
	}
	accepted++

	// The counters agree: every refusal counted, nothing of them ingested.
	metrics := record(do(t, client, "GET", base+"/metrics", nil, "")).body
	if v, _ := metric(metrics, "sluice_ingest_unauthorized_requests_total"); int(v) != refused {
		t.Errorf("sluice_ingest_unauthorized_requests_total %v; want %d", v, refused)
	}
	if v, _ := metric(metrics, "sluice_ingest_accepted_events_total"); int(v) != accepted {
		t.Errorf("sluice_ingest_accepted_events_total %v; want %d: only authenticated events", v, accepted)
	}
	if v, _ := metric(metrics, "sluice_class_ingested_events_total"); int(v) != accepted {
		t.Errorf("sluice_class_ingested_events_total %v; want %d", v, accepted)
	}
	status := record(do(t, client, "GET", base+"/api/v1/status", nil, "")).body
	page := record(do(t, client, "GET", base+"/", nil, "")).body
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	logs := n.stderr.String()
	if !strings.Contains(logs, "msg=listening") || !strings.Contains(logs, "config reload refused") {
		t.Errorf("the log has no listening line or no refused reload: is it the node's log?\n%s", logs)
	}
	t.Logf("%d refused, %d accepted; %d bytes of log", refused, accepted, len(logs))
	for _, out := range []struct{ where, text string }{
		{"the log (stderr)", logs},
		{"stdout", n.stdout.String()},
		{"/metrics", metrics},
		{"/api/v1/status", status},
		{"the status page", page},
		{"the answers", shown.String()},
		{"sluice validate", validateOut.String()},
	} {
		checkNoSecret(t, out.where, out.text, s)
	}
}

// TestSecretsUpstreamCredentials runs `sluice run` at debug level with each
// way of giving NATS credentials, accepted and refused by the server: the
// node ships with the right ones and says why it cannot with the wrong
// ones, and no credential appears in its log, output, metrics or status.
func TestSecretsUpstreamCredentials(t *testing.T) {
	const (
		writeKey = "wk-upstream-4b8e2f6a1d"
		password = "nats-pw-c3f8a1e6b9"
		wrongPw  = "nats-pw-wrong-5d2b7e"
		token    = "nats-tok-e9a4c2f7b1"
	)
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	// A creds file of an account this server does not trust.
	akp, _ := nkeys.CreateAccount()
	ckp, _ := nkeys.CreateUser()
	cpub, _ := ckp.PublicKey()
	cseed, _ := ckp.Seed()
	ujwt, err := jwt.NewUserClaims(cpub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, cseed)
	if err != nil {
		t.Fatal(err)
	}

	users := func() *server.Options {
		return &server.Options{Users: []*server.User{{Username: "edge", Password: password}}}
	}
	for _, tc := range []struct {
		name    string
		server  *server.Options
		auth    string // the upstream_auth section's lines
		userURL bool   // the credentials in the --upstream URL instead
		ships   bool   // the server takes the credentials
	}{
		{name: "password", server: users(), auth: "user: edge\n  password: " + password, ships: true},
		{name: "password in the URL", server: users(), userURL: true, ships: true},
		{name: "wrong password_file", server: users(), auth: "user: edge\n  password_file: " + writeSecret(t, "pw", wrongPw+"\n")},
		{name: "token", server: &server.Options{Authorization: token}, auth: "token: " + token, ships: true},
		{name: "token_file", server: &server.Options{Authorization: token}, auth: "token_file: " + writeSecret(t, "tok", token), ships: true},
		{name: "nkey_file", server: &server.Options{Nkeys: []*server.NkeyUser{{Nkey: upub}}}, auth: "nkey_file: " + writeSecret(t, "user.nk", string(useed)), ships: true},
		{name: "creds_file of an unknown account", server: users(), auth: "creds_file: " + writeSecret(t, "user.creds", string(creds))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.server.JetStream, tc.server.StoreDir = true, t.TempDir()
			url := startNATSServer(t, tc.server)
			dir := t.TempDir()
			cfg := filepath.Join(dir, "sluice.yaml")
			c := "log_level: debug\ningest:\n  keys:\n    - {key: " + writeKey + "}\n"
			if tc.auth != "" {
				c += "upstream_auth:\n  " + tc.auth + "\n"
			}
			if err := os.WriteFile(cfg, []byte(c), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.userURL {
				url = strings.Replace(url, "nats://", "nats://edge:"+password+"@", 1)
			}
			n := startRunNode(t, "--config", cfg, "--upstream", url, "--data-dir", filepath.Join(dir, "data"),
				"--node", "upstream-secrets", "--drain-timeout", "2s")
			base := "http://" + n.addr
			client := &http.Client{Timeout: 10 * time.Second}
			if x := do(t, client, "POST", base+"/v1/events", map[string]string{"X-Sluice-Key": writeKey}, `{"id":1}`); x.status != 200 {
				t.Fatalf("post: %v", x)
			}
			// The right credentials ship the event; the wrong ones are
			// refused and the log says so.
			var metrics string
			for deadline := time.Now().Add(hangGuard); ; {
				metrics = do(t, client, "GET", base+"/metrics", nil, "").body
				acked, _ := metric(metrics, "sluice_class_acked_events_total")
				if tc.ships && acked == 1 || !tc.ships && strings.Contains(n.stderr.String(), "upstream connect failed") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("hang guard: after %v: %v events acked; want %v\n%s", hangGuard, acked, map[bool]int{true: 1}[tc.ships], n.stderr)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if !tc.ships {
				if acked, _ := metric(metrics, "sluice_class_acked_events_total"); acked != 0 {
					t.Errorf("%v events acked with refused credentials", acked)
				}
				if !strings.Contains(strings.ToLower(n.stderr.String()), "authorization violation") {
					t.Errorf("the log does not say why the upstream refused:\n%s", n.stderr)
				}
			}
			status := do(t, client, "GET", base+"/api/v1/status", nil, "").body
			var validateOut bytes.Buffer
			if err := runValidate([]string{cfg}, &validateOut, &validateOut); err != nil {
				t.Errorf("sluice validate: %v", err)
			}
			if err := n.stop(); err != nil {
				t.Logf("sluice run: %v", err)
			}
			s := secrets{"the write key": writeKey, "the password": password, "the wrong password": wrongPw,
				"the token": token, "the nkey seed": string(useed), "the creds seed": string(cseed)}
			for _, out := range []struct{ where, text string }{
				{"the log (stderr)", n.stderr.String()},
				{"stdout", n.stdout.String()},
				{"/metrics", metrics},
				{"/api/v1/status", status},
				{"sluice validate", validateOut.String()},
			} {
				checkNoSecret(t, out.where, out.text, s)
			}
		})
	}
}

// TestRunMutualTLS runs `sluice run` with client certificates required:
// a client without one, with one of another CA, or speaking plain HTTP
// never reaches a handler; a verified client still needs a write key; the
// operations endpoints are behind the same check.
func TestRunMutualTLS(t *testing.T) {
	const writeKey = "wk-mtls-0e5a9c3b7f"
	srv := natstest.Start(t)
	ca := newTestCA(t, "mtls-ca")
	cert := ca.issue("127.0.0.1", true)
	client := ca.issue("producer", false)
	other := newTestCA(t, "other")
	intruder := other.issue("intruder", false)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	c := "tls:\n  cert_file: " + cert.certFile + "\n  key_file: " + cert.keyFile + "\n  client_ca_file: " + ca.file + "\n" +
		"ingest:\n  keys:\n    - {key: " + writeKey + "}\n"
	if err := os.WriteFile(cfg, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startRunNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	base := "https://" + n.addr
	key := map[string]string{"X-Sluice-Key": writeKey}

	for _, tc := range []struct {
		name   string
		client *http.Client
	}{
		{"no client certificate", httpsClient(ca, nil)},
		{"a certificate of another CA", httpsClient(ca, &intruder.tls)},
		{"plain HTTP", &http.Client{Timeout: 10 * time.Second}},
	} {
		for _, path := range []string{"/v1/events", "/metrics"} {
			url := base + path
			if tc.name == "plain HTTP" {
				url = "http://" + n.addr + path
			}
			method := map[string]string{"/v1/events": "POST", "/metrics": "GET"}[path]
			req, _ := http.NewRequest(method, url, strings.NewReader(`{"id":"refused"}`))
			req.Header.Set("X-Sluice-Key", writeKey)
			res, err := tc.client.Do(req)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				// A plain-HTTP client gets net/http's 400 for a TLS
				// listener, never an answer of the handler.
				if tc.name != "plain HTTP" || res.StatusCode != 400 || !strings.Contains(string(b), "HTTPS") {
					t.Errorf("%s, %s %s: %d %s; want the connection refused", tc.name, method, path, res.StatusCode, b)
				}
				continue
			}
			t.Logf("%s, %s: %v", tc.name, path, err)
		}
	}
	good := httpsClient(ca, &client.tls)
	if x := do(t, good, "POST", base+"/v1/events", nil, `{"id":"no key"}`); x.status != 401 {
		t.Errorf("a verified client without a write key: %v; want 401", x)
	}
	if x := do(t, good, "POST", base+"/v1/events", key, `{"id":"ok"}`); x.status != 200 {
		t.Errorf("a verified client with a write key: %v; want 200", x)
	}
	metrics := do(t, good, "GET", base+"/metrics", nil, "").body
	if v, _ := metric(metrics, "sluice_ingest_accepted_events_total"); v != 1 {
		t.Errorf("sluice_ingest_accepted_events_total %v; want 1: only the verified, keyed request", v)
	}
	if v, _ := metric(metrics, "sluice_ingest_requests_total"); v != 2 {
		t.Errorf("sluice_ingest_requests_total %v; want 2: refused handshakes never reach the handler", v)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
}
