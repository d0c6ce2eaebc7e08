package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/priority"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    fileConfig
		wantErr string
	}{
		{name: "empty", yaml: "", want: fileConfig{}},
		{name: "comments only", yaml: "# nothing\n", want: fileConfig{}},
		{
			name: "every key",
			yaml: "node: edge-1\ndata_dir: /var/lib/sluice\nlisten: 0.0.0.0:8080\nupstream: nats://hub:4222\n" +
				"nats_listen: 127.0.0.1:4333\nstream: EVENTS\nsubject: ev\nfsync: interval\ndrain_timeout: 1m30s\n" +
				"log_format: json\nlog_level: debug\n",
			want: fileConfig{Node: "edge-1", DataDir: "/var/lib/sluice", Listen: "0.0.0.0:8080", Upstream: "nats://hub:4222",
				NATSListen: "127.0.0.1:4333", Stream: "EVENTS", Subject: "ev", Fsync: "interval", DrainTimeout: 90 * time.Second,
				LogFormat: "json", LogLevel: "debug"},
		},
		{name: "unknown key", yaml: "node: a\nlisten_addr: x\n", wantErr: "line 2: field listen_addr not found"},
		{name: "wrong type", yaml: "node: a\n\ndrain_timeout: soon\n", wantErr: "line 3: drain_timeout: want a duration such as 250ms, 30s or 1m30s, got `soon`"},
		{name: "not a map", yaml: "- a\n- b\n", wantErr: "line 1: the config: want a mapping of keys, got a list"},
		{name: "nested unknown key", yaml: "ingest:\n  keys:\n    - {key: a, colour: red}\n", wantErr: "line 3: field colour not found in ingest.keys[0]"},
		{name: "duplicate key", yaml: "node: a\nnode: b\n", wantErr: "line 2: mapping key \"node\" already defined at line 1"},
		{name: "bad yaml", yaml: "node: [a\n", wantErr: "line 1: did not find expected ',' or ']'"},
		{name: "two documents", yaml: "node: a\n---\nnode: b\n", wantErr: "line 2: a second YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.lines = nil // key lines have their own test
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte("node: from-file\nlisten: 127.0.0.1:9999\nfsync: never\ndrain_timeout: 5s\nlink_mbit: 20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var c nodeConfig
	c.flags(fs)
	if err := fs.Parse([]string{"--config", path, "--listen", "127.0.0.1:7777", "--headroom", "0.7"}); err != nil {
		t.Fatal(err)
	}
	if err := c.load(fs); err != nil {
		t.Fatal(err)
	}
	want := nodeConfig{Config: path, Node: "from-file", DataDir: "./sluice-data", Listen: "127.0.0.1:7777",
		NATSListen: "127.0.0.1:4222", Stream: "SLUICE", Subject: "sluice", Fsync: "never", DrainTimeout: 5 * time.Second,
		LogFormat: "text", LogLevel: "info", LinkMbit: 20, Headroom: 0.7}
	c.lines = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}

	// Errors name the file and the line.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("node: a\nfsync: sometimes\n"), 0o644)
	err := run(context.Background(), []string{"run", "--config", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `fsync policy "sometimes"`) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad value: %v", err)
	}
	os.WriteFile(bad, []byte("node: a\nfsnyc: always\n"), 0o644)
	err = run(context.Background(), []string{"run", "--config", bad}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "config "+bad+": line 2: field fsnyc not found") {
		t.Errorf("unknown key: %v", err)
	}
	err = run(context.Background(), []string{"run", "--config", filepath.Join(dir, "missing.yaml")}, io.Discard, io.Discard)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("node: a\ndrain_timeout: 5s\n"))
	f.Add([]byte("node: [a\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("ingest:\n  keys: [{key: ${HOME}, source: a}]\n  routes: [{field: x, equals: &v [a, b]}, {field: y, equals: *v}]\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b, <<: *b]\nnode: $${X} ${X:-d}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parseConfig(data) // must not panic
	})
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args       []string
		wantErr    error // nil: success
		wantOut    string
		wantStderr string
	}{
		{args: []string{"help"}, wantOut: "Usage:\n  sluice run"},
		{args: []string{"-h"}, wantOut: "Usage:\n  sluice run"},
		{args: nil, wantErr: errUsage, wantStderr: "Usage:\n  sluice run"},
		{args: []string{"frobnicate"}, wantErr: errUsage, wantStderr: `unknown command "frobnicate"`},
		{args: []string{"run", "-h"}, wantErr: flag.ErrHelp, wantStderr: "Usage: sluice run [flags]"},
		{args: []string{"run", "--bogus"}, wantErr: errUsage, wantStderr: "flag provided but not defined: -bogus"},
		{args: []string{"run", "extra"}, wantErr: errUsage, wantStderr: `unexpected arguments: ["extra"]`},
		{args: []string{"run", "--fsync", "sometimes"}, wantErr: errAny, wantStderr: ""},
		{args: []string{"run", "--log-format", "xml"}, wantErr: errAny},
		{args: []string{"run", "--drain-timeout", "0s"}, wantErr: errAny},
		{args: []string{"run", "--stream", "A.B"}, wantErr: errAny},
		{args: []string{"run", "--headroom", "1.5"}, wantErr: errAny},
		{args: []string{"run", "--link-mbit", "-1"}, wantErr: errAny},
		{args: []string{"sink", "-h"}, wantErr: flag.ErrHelp, wantStderr: "Usage: sluice sink --upstream URL"},
		{args: []string{"sink"}, wantErr: errUsage, wantStderr: "--upstream is required"},
		{args: []string{"sink", "--upstream", "nats://127.0.0.1:1", "--idle-exit", "-1s"}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("error %v", err)
			case tt.wantErr == errAny && err == nil:
				t.Fatal("no error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q, want it to contain %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errOut.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", errOut.String(), tt.wantStderr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestIngestConfig(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "web.key")
	if err := os.WriteFile(keyFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := parseConfig([]byte(`
ingest:
  keys:
    - key_file: ` + keyFile + `
      source: web
  routes:
    - field: event
      equals: ["Order Completed"]
      class: critical
  dedup_window: 5m
  max_events: 500
nats_ingest:
  subscriptions:
    - subject: events.>
`))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := f.Ingest.options("edge-1", priority.Defaults(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Keys) != 1 || opts.Keys[0].Key != "s3cret" || opts.Keys[0].Source != "web" ||
		opts.DedupWindow != 5*time.Minute || opts.MaxEvents != 500 || opts.Node != "edge-1" {
		t.Errorf("options %+v", opts)
	}
	if k := opts.Keys[0]; k.Class != "" || k.PinClass {
		t.Errorf("key without class and pin_class: %+v", k)
	}
	if got := opts.Router.Route("segment", []byte(`{"event":"Order Completed"}`)); got != "critical" {
		t.Errorf("routed to %q", got)
	}
	if n, ok := f.NATSIngest.natsOptions("sluice"); !ok || n.ExcludeSubjects[0] != "sluice.>" {
		t.Errorf("nats options %+v %v", n, ok)
	}

	// pin_class reaches the handler's keys.
	f, err = parseConfig([]byte("ingest:\n  keys:\n    - {key: browser, source: web, class: backfill, pin_class: true}\n    - {key: server, class: critical}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if opts, err = f.Ingest.options("n", priority.Defaults(0)); err != nil {
		t.Fatal(err)
	}
	if k := opts.Keys; len(k) != 2 || k[0].Class != "backfill" || !k[0].PinClass || k[1].Class != "critical" || k[1].PinClass {
		t.Errorf("keys %+v: want the first pinned to backfill, the second not pinned", k)
	}

	for _, tt := range []struct{ yaml, want string }{
		{"ingest:\n  routes:\n    - class: nope\n", "unknown class \"nope\""},
		{"ingest:\n  keys:\n    - key: a\n      key_file: b\n", "both key and key_file"},
		{"ingest:\n  keys:\n    - key_file: /nonexistent/key\n", "no such file"},
		{"ingest:\n  dedup: 1m\n", "line 2: field dedup not found"},
	} {
		f, err := parseConfig([]byte(tt.yaml))
		if err == nil {
			_, err = f.Ingest.options("n", priority.Defaults(0))
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.want)
		}
	}
}

// A bad value names the file, the line and the key.
func TestConfigValueErrorsNameLine(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ yaml, want string }{
		{"node: a\nfsync: sometimes\n", "line 2: fsync: "},
		{"headroom: 1.5\n", "line 1: headroom: 1.5: want a fraction in (0, 1]"},
		{"spool:\n  max_bytes: lots\n", "line 1: spool: spool.max_bytes: \"lots\""},
		{"ingest:\n  routes:\n    - class: nope\n", "line 3: ingest.routes[0].class: unknown class \"nope\""},
		{"tls:\n  key_file: /x\n", "line 1: tls: "},
		{"ingest:\n  keys:\n    - key: k\n      source: web\n      pin_class: true\n",
			`line 5: ingest.keys[0].pin_class: true without a class (source "web"): set class to the class every event of the key goes to`},
		{"ingest:\n  keys:\n    - {key: k, class: critical}\n    - {key: j, pin_class: true}\n", "line 4: ingest.keys[1].pin_class: true without a class"},
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
		if err == nil {
			_, err = c.resolve()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %v\nwant the file and %q", tt.yaml, err, tt.want)
		}
	}
}

// A config's size and its nodes after alias expansion are bounded: a file
// that would make `sluice validate` or a reload take gigabytes is refused,
// naming the limit and the line of the alias that crossed it.
func TestConfigBounds(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	aliasErr := regexp.MustCompile(`line ([0-9]+): alias (\*[a-z0-9]+): the config expands past 100000 YAML nodes, the limit`)
	checkAlias := func(name string, data []byte, err error) {
		t.Helper()
		m := aliasErr.FindStringSubmatch(fmt.Sprint(err))
		if m == nil {
			t.Fatalf("%s: error %v; want it to match %s", name, err, aliasErr)
		}
		n, _ := strconv.Atoi(m[1])
		lines := strings.Split(string(data), "\n")
		if n < 1 || n > len(lines) || !strings.Contains(lines[n-1], m[2]) {
			t.Errorf("%s: error %v names line %d, which has no %s", name, err, n, m[2])
		}
	}

	// Billion laughs: ten lists of ten, each of the one before.
	var laughs strings.Builder
	laughs.WriteString("ingest:\n  routes:\n    - field: event\n      class: critical\n      equals: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&laughs, "    - {field: l%d, class: critical, equals: &l%d [%s]}\n", i, i, strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 9)+fmt.Sprintf("*l%d", i-1))
	}
	// The fan-out of ingest.routes[].equals: one list of 1,000 values
	// used by 3,000 routes is 3 million strings from 130 KB.
	var fan strings.Builder
	fan.WriteString("ingest:\n  routes:\n    - field: event\n      class: critical\n      equals: &v [")
	for i := range 1000 {
		fmt.Fprintf(&fan, "v%d, ", i)
	}
	fan.WriteString("end]\n")
	for range 3000 {
		fan.WriteString("    - {field: event, equals: *v, class: critical}\n")
	}
	for _, tc := range []struct{ name, yaml string }{{"billion laughs", laughs.String()}, {"routes fan-out", fan.String()}} {
		data := []byte(tc.yaml)
		_, err := parseConfig(data)
		checkAlias(tc.name, data, err)
		// What the issue ran: sluice validate, which must fail at once.
		p := write("bomb.yaml", data)
		var out bytes.Buffer
		err = run(t.Context(), []string{"validate", p}, &out, &out)
		checkAlias(tc.name+" (sluice validate)", data, err)
		if !strings.Contains(fmt.Sprint(err), p) {
			t.Errorf("%s: sluice validate: %v; want the file named", tc.name, err)
		}
	}

	// Many nodes without an alias.
	flat := "ingest:\n  routes:\n    - field: event\n      class: critical\n      equals: [" + strings.Repeat("a,", 100_000) + "a]\n"
	if _, err := parseConfig([]byte(flat)); err == nil || !strings.Contains(err.Error(), "line 5: the config has more than 100000 YAML nodes, the limit") {
		t.Errorf("100,002 nodes: %v", err)
	}
	// An alias inside what it refers to.
	if _, err := parseConfig([]byte("ingest:\n  routes: &r [*r]\n")); err == nil || !strings.Contains(err.Error(), "line 2: alias *r is inside the node it refers to") {
		t.Errorf("a cycle: %v", err)
	}
	// Aliases within the budget are fine, and expanded.
	f, err := parseConfig([]byte("ingest:\n  routes:\n    - {field: event, equals: &v [a, b], class: critical}\n    - {field: type, equals: *v, class: backfill}\n"))
	if err != nil || len(f.Ingest.Routes) != 2 || !reflect.DeepEqual(f.Ingest.Routes[1].Equals, []string{"a", "b"}) {
		t.Errorf("aliases within the budget: %+v, %v", f.Ingest.Routes, err)
	}

	// The file's size: 1 MiB is read, a byte more is refused.
	ok := write("big.yaml", append([]byte("node: a\n"), bytes.Repeat([]byte("# padding padding padding padding\n"), maxConfigBytes)[:maxConfigBytes-8]...))
	if f, err := readConfigFile(ok); err != nil || f.Node != "a" {
		t.Errorf("a config of 1 MiB: %+v, %v", f.Node, err)
	}
	big := write("bigger.yaml", bytes.Repeat([]byte("# padding padding padding padding\n"), maxConfigBytes/16))
	if _, err := readConfigFile(big); err == nil || !strings.Contains(err.Error(), "config "+big+": larger than 1048576 bytes (1 MiB), the limit of a config file") {
		t.Errorf("a config of more than 1 MiB: %v", err)
	}
}

// goTypeName matches the names of Go types that yaml's errors carry.
var goTypeName = regexp.MustCompile(`\bmain\.\w|\btime\.Duration|\[\]\w|\bu?int(8|16|32|64)?\b|\bfloat(32|64)\b|\bbool\b|map\[|\bstruct\b`)

// Config errors speak of keys and values, never of Go types.
func TestConfigErrorsNoGoTypes(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ yaml, want string }{
		{"node: [a]\n", "line 1: node: want a string, got a list"},
		{"drain_timeout: 5\n", "line 1: drain_timeout: want a duration such as 250ms, 30s or 1m30s, got `5`"},
		{"link_mbit: fast\n", "line 1: link_mbit: want a number, got `fast`"},
		{"unshaped: maybe\n", "line 1: unshaped: want true or false, got `maybe`"},
		{"ingest:\n  max_events: lots\n", "line 2: ingest.max_events: want a whole number, got `lots`"},
		{"ingest:\n  max_body_bytes: 8 MiB and more\n", "line 2: ingest.max_body_bytes: want a whole number, got `8 MiB a...`"},
		{"ingest:\n  stamp: sometimes\n", "line 2: ingest.stamp: want true or false, got `sometimes`"},
		{"ingest:\n  dedup_window: 10\n", "line 2: ingest.dedup_window: want a duration"},
		{"ingest:\n  keys: {key: a}\n", "line 2: ingest.keys: want a list, got a mapping"},
		{"ingest: [a]\n", "line 1: ingest: want a mapping of keys, got a list"},
		{"ingest:\n  routes:\n    - equals: {a: 1}\n", "line 3: ingest.routes[0].equals: want a list, got a mapping"},
		{"classes:\n  - name: a\n    priority: high\n", "line 3: classes[0].priority: want a whole number, got `high`"},
		{"classes:\n  - name: a\n    batch: 5\n", "line 3: classes[0].batch: want a mapping of keys, got \"5\""},
		{"classes:\n  - name: a\n    fields: x\n", "line 3: classes[0].fields: want a list"},
		{"spool: 5\n", "line 1: spool: want a mapping of keys"},
		{"admin: x\n", "line 1: admin: want a mapping of keys"},
		{"admin:\n  listen: [a]\n", "line 2: admin.listen: want a string, got a list"},
		{"tls:\n  cert_file: {a: b}\n", "line 2: tls.cert_file: want a string, got a mapping"},
		{"node: a\nfsync: 1\nheadroom: [1]\nlink_mbit: x\n", "line 3: headroom: want a number, got a list; line 4: link_mbit: want a number, got `x`"},
		{"upstream_auth:\n  tls: {insecure_skip_verify: please}\n", "line 2: upstream_auth.tls.insecure_skip_verify: want true or false, got `please`"},
		{"nats_ingest:\n  subscriptions: [{subject: [a]}]\n", "line 2: nats_ingest.subscriptions[0].subject: want a string, got a list"},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		err := run(t.Context(), []string{"validate", path}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v\nwant %q", tt.yaml, err, tt.want)
		}
		if m := goTypeName.FindString(fmt.Sprint(err)); m != "" {
			t.Errorf("%q: error %v names a Go type (%q)", tt.yaml, err, m)
		}
	}
}

// A class that is not configured is reported where it is written, with a
// hint, for the default class, routes and keys alike.
func TestUnknownClassReferences(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"ingest:\n  default_class: ingset\n", `line 2: ingest.default_class: unknown class "ingset": did you mean ingest? the classes are critical, ingest, replication, backfill`},
		{"ingest:\n  routes:\n    - {field: event, equals: [x], class: critical}\n    - {field: event, equals: [y], class: critcal}\n", `line 4: ingest.routes[1].class: unknown class "critcal": did you mean critical?`},
		{"ingest:\n  keys:\n    - {key: abc, class: bakfill}\n", `line 3: ingest.keys[0].class: unknown class "bakfill": did you mean backfill?`},
		{"ingest:\n  keys:\n    - {key: abc, class: web}\n", `line 3: ingest.keys[0].class: unknown class "web": the classes are critical, ingest, replication, backfill`},
	} {
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c := nodeConfig{Config: path}
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		c.flags(fs)
		c.Config = path
		err := c.load(fs)
		if err == nil {
			_, err = c.resolve()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v\nwant it to contain %s", tc.yaml, err, tc.want)
		}
	}
}
