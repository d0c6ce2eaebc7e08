package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/natstest"
)

// envLookup looks names up in env, as os.LookupEnv does the environment.
func envLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{
		"KEY": "s3cret", "EMPTY": "", "NL": "a\nb", "REF": "${KEY}", "N": "500", "D": "5s", "B": "true",
		"NULL": "null", "TILDE": "~", "ZERO": "0123", "X": "v",
	}
	for _, tt := range []struct {
		in   string
		want fileConfig // Node, DrainTimeout, Unshaped, Ingest.MaxEvents, Stream
		err  string
	}{
		{in: "node: ${KEY}\n", want: fileConfig{Node: "s3cret"}},
		{in: "node: x${KEY}y", want: fileConfig{Node: "xs3crety"}},
		{in: `node: "x#${KEY}"`, want: fileConfig{Node: "x#s3cret"}},
		{in: "node: b#${X}", want: fileConfig{Node: "b#v"}}, // '#' not after a space: not a comment
		{in: "node: ${MISSING:-dflt}", want: fileConfig{Node: "dflt"}},
		{in: "node: ${EMPTY:-dflt}", want: fileConfig{Node: "dflt"}},
		{in: "node: ${MISSING:-}", want: fileConfig{}},
		{in: "node: $${KEY} $HOME", want: fileConfig{Node: "${KEY} $HOME"}},
		{in: "node: '$${KEY}'", want: fileConfig{Node: "${KEY}"}},
		{in: "node: ${REF}", want: fileConfig{Node: "${KEY}"}}, // a value is not expanded again
		{in: "node: ${NL}", want: fileConfig{Node: "a\nb"}},    // a literal string: it adds no line
		{in: "node: ${NULL}", want: fileConfig{Node: "null"}},
		{in: "node: ${TILDE}", want: fileConfig{Node: "~"}},
		{in: "node: ${ZERO}", want: fileConfig{Node: "0123"}},
		{in: "node: ${N}", want: fileConfig{Node: "500"}},
		{in: "drain_timeout: ${D}\nunshaped: ${B}\ningest:\n  max_events: ${N}\n",
			want: fileConfig{DrainTimeout: 5 * time.Second, Unshaped: true, Ingest: ingestConfig{MaxEvents: 500}}},
		{in: "node: &n ${KEY}\nstream: *n\n", want: fileConfig{Node: "s3cret", Stream: "s3cret"}},
		{in: "node: |\n  ${KEY}\n  two\n", want: fileConfig{Node: "s3cret\ntwo\n"}},
		{in: "# ${UNSET} in a comment\nnode: ${X} # and ${UNSET}\n", want: fileConfig{Node: "v"}},

		{in: "node: a\nstream: ${MISSING}\n", err: "line 2: stream: ${MISSING}: environment variable not set (use ${MISSING:-default} for a default)"},
		{in: "ingest:\n  keys:\n    - key: ${MISSING}\n", err: "line 3: ingest.keys[0].key: ${MISSING}: environment variable not set"},
		{in: "node: |\n  one\n  ${MISSING}\n", err: "line 3: node: ${MISSING}: environment variable not set"},
		{in: "node: ${1BAD}", err: "line 1: node: ${1BAD}: want ${NAME} or ${NAME:-default}"},
		{in: "node: \"${KEY\"\nstream: x\n", err: "line 1: node: unterminated ${"},
		{in: "node: ${A}\nstream: ${B2}\n", err: "line 1: node: ${A}: environment variable not set (use ${A:-default} for a default); line 2: stream: ${B2}: environment variable not set"},
		{in: "${KEY}: 1\n", err: "line 1: ${KEY}: ${…} in a key: environment variables are expanded in values only"},
		{in: "drain_timeout: ${KEY}\n", err: "line 1: drain_timeout: want a duration such as 250ms, 30s or 1m30s, got `s3cret`"},
		{in: "ingest:\n  max_events: ${NULL}\n", err: "line 2: ingest.max_events: want a whole number, got `null`"},
	} {
		got, err := parseConfigEnv([]byte(tt.in), envLookup(env))
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v\nwant %q", tt.in, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") && !strings.Contains(tt.err, "s3cret") {
				t.Errorf("%q: error shows a value: %v", tt.in, err)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.in, err)
		default:
			got.lines = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%q: got %+v\nwant %+v", tt.in, got, tt.want)
			}
		}
	}
}

// nastyValues are secrets that YAML would read as something else if the
// environment's text were spliced into the file before parsing.
var nastyValues = []string{
	"wk#fragment", "wk #comment", "&anchor", "*alias", "!!binary", "!!binary aGVsbG8=", "!tag wk",
	"key: injected", "wk, source: evil}", "wk\nsource: evil", "wk\r\nclass: critical", "line1\nline2",
	`"quoted`, `'single`, "{a: 1}", "[a, b]", "- item", "|", ">", "%YAML 1.2", "---", "...", "@at", "`tick",
	"null", "~", "true", "0x1F", "1e3", "  padded  ", "\ttabbed", "back\\slash\\n", `${NOT_EXPANDED}`,
	"? complex", "é ünïcödé ✓",
}

// TestEnvValuesLiteral: a secret from the environment arrives in its key
// byte for byte, in every way a config can reference it, and adds or
// changes no other key.
func TestEnvValuesLiteral(t *testing.T) {
	forms := map[string]string{
		"block":         "ingest:\n  keys:\n    - key: ${SECRET}\n      source: web\n",
		"flow":          "ingest:\n  keys:\n    - {key: ${SECRET}, source: web}\n",
		"flow sequence": "ingest:\n  keys: [{key: ${SECRET}, source: web}]\n",
		"double-quoted": "ingest:\n  keys:\n    - key: \"${SECRET}\"\n      source: web\n",
		"single-quoted": "ingest:\n  keys:\n    - key: '${SECRET}'\n      source: web\n",
		"anchored":      "ingest:\n  keys:\n    - key: &k ${SECRET}\n      source: web\n  routes:\n    - {field: k, equals: [*k], class: critical}\n",
	}
	for _, v := range nastyValues {
		for form, yml := range forms {
			f, err := parseConfigEnv([]byte(yml), envLookup(map[string]string{"SECRET": v}))
			if err != nil {
				t.Errorf("%s, %q: %v", form, v, err)
				continue
			}
			want := ingestConfig{Keys: []keyConfig{{Key: v, Source: "web"}}}
			if form == "anchored" {
				want.Routes = []routeConfig{{Field: "k", Equals: []string{v}, Class: "critical"}}
			}
			f.lines = nil
			if !reflect.DeepEqual(f, fileConfig{Ingest: want}) {
				t.Errorf("%s, %q: got %+v\nwant ingest %+v", form, v, f, want)
			}
		}
	}
}

// TestEnvSecretEndToEnd: `sluice run` takes a write key from the
// environment that holds '#', ': ', '&x' and '!!binary', and accepts
// exactly that key.
func TestEnvSecretEndToEnd(t *testing.T) {
	const secret = "wk #1: &x !!binary *y, {z}"
	srv := natstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("ingest:\n  keys:\n    - key: ${SLUICE_TEST_NASTY_KEY}\n      source: web\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_TEST_NASTY_KEY", secret)
	var out bytes.Buffer
	if err := runValidate([]string{cfg}, &out, &out); err != nil || !strings.Contains(out.String(), "1 write keys") {
		t.Fatalf("sluice validate: %v\n%s", err, &out)
	}
	addr, stop := startNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		key  string
		want int
	}{{secret, 200}, {"wk", 401}, {"wk #1", 401}, {"x", 401}} {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/events", bytes.NewReader(events(0, 1)))
		req.Header.Set("X-Sluice-Key", tc.key)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("key %q: %d %s; want %d", tc.key, res.StatusCode, b, tc.want)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
