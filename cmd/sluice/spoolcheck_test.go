package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/spool"
)

// makeSpool writes class "ingest" across at least three 1 MiB segments
// (30 appends of 100 × 1000-byte events) and 10 events of class
// "critical", acknowledges ingest's first 100 events, claims the next 100,
// closes the spool and returns its segment files of ingest.
func makeSpool(t *testing.T, dir string) []string {
	t.Helper()
	s, err := spool.Open(dir, spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		evs := make([][]byte, 100)
		for j := range evs {
			evs[j] = fmt.Appendf(nil, `{"id":%d,"pad":%q}`, i*100+j, strings.Repeat("x", 980))
		}
		if _, err := s.Append(context.Background(), "ingest", evs); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(context.Background(), "critical", [][]byte{[]byte(`{"alert":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("ingest", spool.Range{First: 1, Last: 100}); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim("ingest", spool.Range{First: 101, Last: 200}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ingest", "seg-*.db"))
	if len(files) < 3 {
		t.Fatalf("%d segments", len(files))
	}
	return files
}

func spoolCheck(args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = run(context.Background(), append([]string{"spool", "check"}, args...), &o, &e)
	return o.String(), e.String(), err
}

func TestSpoolCheckHealthy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	makeSpool(t, dir)
	out, _, err := spoolCheck(dir)
	if err != nil {
		t.Fatalf("healthy spool: %v\n%s", err, out)
	}
	for _, want := range []string{"spool " + dir, "CLASS", "ingest", "critical", "1-3000", "2900", "ok: no damaged file"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// --json, after DIR, and DIR given as the node's data_dir.
	out, _, err = spoolCheck(filepath.Dir(dir), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep spool.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if rep.Dir != dir || len(rep.Classes) != 2 || rep.Classes[1].Name != "ingest" || rep.Classes[1].Pending != 2900 ||
		rep.Classes[1].Acked != 100 || len(rep.Classes[1].Claims) != 1 || len(rep.Damaged) != 0 {
		t.Fatalf("--json report %+v", rep)
	}
}

// TestSpoolCheckDamaged truncates a sealed segment: the command names it,
// says why and what the node does, and fails; once a node has started
// (quarantining it), the command passes and lists quarantine/.
func TestSpoolCheckDamaged(t *testing.T) {
	dir := t.TempDir()
	files := makeSpool(t, dir)
	fi, _ := os.Stat(files[1])
	if err := os.Truncate(files[1], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(dir, files[1])

	out, _, err := spoolCheck(dir)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "1 damaged file") {
		t.Fatalf("damaged spool: err %v", err)
	}
	for _, want := range []string{"DAMAGED: 1 file", rel, "reason: truncated", "quarantine: moved to quarantine/ at start"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = spoolCheck("--json", dir)
	var rep spool.Report
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil || err == nil {
		t.Fatalf("--json: %v, %v\n%s", jerr, err, out)
	}
	if len(rep.Damaged) != 1 || rep.Damaged[0].File != rel || rep.Damaged[0].Action != spool.ActionQuarantine || rep.Damaged[0].Class != "ingest" {
		t.Fatalf("--json damaged %+v", rep.Damaged)
	}

	s, err := spool.Open(dir, spool.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, _, err = spoolCheck(dir)
	if err != nil {
		t.Fatalf("after the node quarantined it: %v\n%s", err, out)
	}
	for _, want := range []string{"QUARANTINED: 1 file", "ingest." + filepath.Base(files[1]), "ok: no damaged file"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestSpoolCheckInUse: with a node holding the spool, the command says so
// and fails (exit 1), without waiting long or touching anything.
func TestSpoolCheckInUse(t *testing.T) {
	dir := t.TempDir()
	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, _, err := spoolCheck(dir)
	if err == nil || errors.Is(err, errUsage) || !errors.Is(err, spool.ErrInUse) || !strings.Contains(err.Error(), "running node") || out != "" {
		t.Fatalf("spool in use: err %v, output %q", err, out)
	}
}

func TestSpoolCheckUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"spool"}, {"spool", "frob"}, {"spool", "check"}, {"spool", "check", dir, dir},
		{"spool", "check", "--bogus", dir}, {"spool", "check", ""},
	} {
		var o, e bytes.Buffer
		if err := run(context.Background(), args, &o, &e); !errors.Is(err, errUsage) || !strings.Contains(e.String(), "Usage: sluice spool check") {
			t.Errorf("%q: %v, stderr %q", args, err, e.String())
		}
	}
	if _, _, err := spoolCheck("-h"); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	// Not a spool: a problem (exit 1), not a usage error.
	if _, _, err := spoolCheck(filepath.Join(dir, "missing")); err == nil || errors.Is(err, errUsage) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

// TestSpoolCheckExitStatus runs the binary (the test binary as main) for
// the exit statuses scripts rely on: 0 healthy, 1 damaged, 2 usage.
func TestSpoolCheckExitStatus(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	healthy, damaged := t.TempDir(), t.TempDir()
	makeSpool(t, healthy)
	files := makeSpool(t, damaged)
	if err := os.WriteFile(files[0], []byte("not a bbolt file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{healthy}, 0},
		{[]string{"--json", healthy}, 0},
		{[]string{damaged}, 1},
		{[]string{damaged, "--json"}, 1},
		{[]string{}, 2},
	} {
		cmd := exec.Command(exe, append([]string{"spool", "check"}, tc.args...)...)
		cmd.Env = append(os.Environ(), envMain+"=1")
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.want {
			t.Errorf("sluice spool check %q: exit %d, want %d\n%s", tc.args, code, tc.want, out)
		}
	}
}
