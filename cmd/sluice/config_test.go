package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
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
		{name: "wrong type", yaml: "node: a\n\ndrain_timeout: soon\n", wantErr: "line 3: cannot unmarshal !!str `soon` into time.Duration"},
		{name: "not a map", yaml: "- a\n- b\n", wantErr: "line 1: cannot unmarshal !!seq"},
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
	if got := opts.Router.Route("segment", []byte(`{"event":"Order Completed"}`)); got != "critical" {
		t.Errorf("routed to %q", got)
	}
	if n, ok := f.NATSIngest.natsOptions(opts.Router, "sluice"); !ok || n.ExcludeSubjects[0] != "sluice.>" {
		t.Errorf("nats options %+v %v", n, ok)
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
		{"ingest:\n  routes:\n    - class: nope\n", "line 1: ingest: routes: "},
		{"tls:\n  key_file: /x\n", "line 1: tls: "},
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
