package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
)

// loadStreamConfig loads and resolves a config file of text.
func loadStreamConfig(t *testing.T, text string) (*resolved, string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var c nodeConfig
	c.flags(fs)
	c.Config = path
	if err := c.load(fs); err != nil {
		return nil, path, err
	}
	r, err := c.resolve()
	return r, path, err
}

func TestUpstreamStreamConfig(t *testing.T) {
	r, _, err := loadStreamConfig(t, `
upstream_stream:
  replicas: 3
  placement: {cluster: east, tags: [ssd, eu]}
  max_age: 720h
  max_bytes: 500GiB
  duplicate_window: 30m
  on_mismatch: warn
`)
	if err != nil {
		t.Fatal(err)
	}
	s := r.stream
	if s.Replicas != 3 || s.Cluster != "east" || !slices.Equal(s.Tags, []string{"ssd", "eu"}) || s.MaxAge != 720*time.Hour ||
		s.MaxBytes != 500<<30 || s.DuplicateWindow != 30*time.Minute || s.OnMismatch != aggregator.MismatchWarn {
		t.Fatalf("%+v", s)
	}
	r, _, err = loadStreamConfig(t, "node: a\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := r.stream; s.Replicas != 0 || s.DuplicateWindow != 0 || s.OnMismatch != aggregator.MismatchRefuse {
		t.Fatalf("defaults: %+v", s)
	}
}

// TestUpstreamStreamConfigErrors: what `sluice validate` says of a bad
// upstream_stream: the line, the key, the value and what it wants.
func TestUpstreamStreamConfigErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"upstream_stream:\n  replicas: 6\n", "line 2: upstream_stream.replicas: 6: want 1 to 5"},
		{"upstream_stream:\n  on_mismatch: ignore\n", `line 2: upstream_stream.on_mismatch: on_mismatch "ignore": want refuse or warn`},
		{"upstream_stream:\n  max_age: 1m\n", "line 2: upstream_stream.max_age: 1m0s is shorter than duplicate_window 10m0s"},
		{"upstream_stream:\n  max_age: 1h\n  duplicate_window: 2h\n", "upstream_stream.max_age: 1h0m0s is shorter than duplicate_window 2h0m0s"},
		{"upstream_stream:\n  duplicate_window: 10ms\n", "line 2: upstream_stream.duplicate_window: 10ms: want at least 100ms"},
		{"upstream_stream:\n  max_bytes: lots\n", `line 2: upstream_stream.max_bytes: `},
		{"upstream_stream:\n  placement: {tags: [a, \"\"]}\n", "upstream_stream.placement.tags: an empty tag"},
		{"upstream_stream:\n  replica: 3\n", "line 2: field replica not found in upstream_stream"},
		{"upstream_stream: 3\n", "line 1: upstream_stream: want a mapping of keys"},
	} {
		_, path, err := loadStreamConfig(t, tt.yaml)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %v\nwant the file and %q", tt.yaml, err, tt.want)
		}
	}
}
