package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ingest"
)

// The memory budget of requests in flight: configured, or a quarter of the
// memory limit within bounds, never below what one body needs before its
// key passed.
func TestInflightBudget(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		cfg    limitsConfig
		limit  int64
		body   int64
		want   int64
		from   string
		errHas string
	}{
		{name: "configured", cfg: limitsConfig{MaxInflightBytes: "96MiB"}, limit: 8 << 30, want: 96 * mib, from: "limits.max_inflight_bytes"},
		{name: "no limit found", want: 64 * mib, from: "default (no memory limit found)"},
		{name: "384 MiB pod", limit: 384 * mib, want: 96 * mib, from: "a quarter of cgroup memory.max (384 MiB)"},
		{name: "big machine: capped", limit: 64 << 30, want: 1 << 30, from: "a quarter of cgroup memory.max (65536 MiB)"},
		{name: "small pod: one body's worth", limit: 128 * mib, want: 64 * mib, from: "8 × ingest.max_body_bytes, more than a quarter of cgroup memory.max (128 MiB): lower max_body_bytes or raise the limit"},
		{name: "small pod, small bodies", limit: 128 * mib, body: 1 * mib, want: 32 * mib, from: "a quarter of cgroup memory.max (128 MiB)"},
		{name: "not a size", cfg: limitsConfig{MaxInflightBytes: "lots"}, errHas: "max_inflight_bytes: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "cgroup memory.max"
			got, from, err := tc.cfg.inflightBudget(tc.limit, src, ingest.Options{MaxBodyBytes: tc.body})
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want %q", err, tc.errHas)
				}
				return
			}
			if err != nil || got != tc.want || from != tc.from {
				t.Fatalf("got %d (%q, %v), want %d (%q)", got, from, err, tc.want, tc.from)
			}
		})
	}
}

func TestLimitsCheck(t *testing.T) {
	ok := ingest.Options{MaxInflightBytes: 64 << 20}
	for _, tc := range []struct {
		cfg    limitsConfig
		o      ingest.Options
		errHas string
	}{
		{limitsConfig{}, ok, ""},
		{limitsConfig{MaxExpansion: 0.5}, ok, "max_expansion 0.5: want ≥ 1"},
		{limitsConfig{MaxConnections: -1}, ok, "max_connections -1"},
		{limitsConfig{MaxConnectionsPerIP: -2}, ok, "max_connections_per_ip -2"},
		{limitsConfig{}, ingest.Options{MaxInflightBytes: 16 << 20}, "max_inflight_bytes 16777216: want at least 67108864"},
	} {
		err := tc.cfg.check(tc.o)
		if (tc.errHas == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.errHas)
		}
	}
}

func TestMemoryLimitFromCgroup(t *testing.T) {
	dir := t.TempDir()
	old := cgroupMemoryMax
	t.Cleanup(func() { cgroupMemoryMax = old })
	cgroupMemoryMax = filepath.Join(dir, "memory.max")
	os.WriteFile(cgroupMemoryMax, []byte("402653184\n"), 0o600)
	if n, from := memoryLimit(); n != 384<<20 || from != "cgroup memory.max" {
		t.Errorf("384 MiB cgroup: %d %q", n, from)
	}
	os.WriteFile(cgroupMemoryMax, []byte("max\n"), 0o600)
	if n, from := memoryLimit(); from == "cgroup memory.max" {
		t.Errorf("unlimited cgroup read as a limit: %d", n)
	}
}
