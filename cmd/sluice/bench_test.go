//go:build sluicebench

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchCommand runs `sluice bench` on one scenario at a tenth of its
// length, in two modes, and checks what it writes: the report, the
// summary, the timelines and the results section.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the steady scenario twice over a link emulator and a NATS server")
	}
	dir := t.TempDir()
	results := filepath.Join(dir, "RESULTS.md")
	os.WriteFile(results, []byte("# Results\n<!-- suite:begin -->\n<!-- suite:end -->\n"), 0o644)
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"bench", "--scale", "0.1", "--scenarios", "steady", "--modes", "sluice,naive",
		"--events", "synthetic", "--out", filepath.Join(dir, "out"), "--results", results}, &out, &errs)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errs.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.html", "summary.md", "timelines/steady-sluice.json", "timelines/steady-naive.json"} {
		if st, err := os.Stat(filepath.Join(dir, "out", f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(errs.String(), "[1/2] steady/sluice") || !strings.Contains(errs.String(), "[2/2] steady/naive: done") {
		t.Error("no progress on stderr")
	}
	got, _ := os.ReadFile(results)
	for _, want := range []string{"sluice bench --scale 0.1 --scenarios steady", "| steady | sluice |", "| steady | naive |", "(out/report.html)", "<!-- suite:end -->"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("RESULTS.md lacks %q:\n%s", want, got)
		}
	}
}

func TestBenchCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--scenarios", "nope"},
		{"bench", "--modes", "fast"},
		{"bench", "--scale", "0"},
		{"bench", "extra"},
	} {
		var out, errs bytes.Buffer
		if err := run(context.Background(), args, &out, &errs); err != errUsage {
			t.Errorf("%q: err %v, want usage\n%s", args, err, errs.String())
		}
	}
}
