package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/spool"
)

// envMain makes the test binary act as the sluice binary, so the kill -9
// test can run `sluice run` as a subprocess without a separate build.
const envMain = "SLUICE_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if serveBenchChild() { // sluice bench's NATS server child (with -tags sluicebench)
		os.Exit(0)
	}
	if os.Getenv(envMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// logRecords returns the JSON log records of a `sluice run` whose message
// is msg.
func logRecords(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			recs = append(recs, rec)
		}
	}
	return recs
}

// waitLog waits until the log of p has a record with message msg.
func waitLog(t *testing.T, p *sluiceProc, msg string) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if recs := logRecords(t, p.logs.String(), msg); len(recs) > 0 {
			return recs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after 60s:\n%s", msg, p.logs)
		}
	}
}

// stopProc sends SIGTERM to p and returns its exit status.
func stopProc(t *testing.T, p *sluiceProc) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("sluice run did not exit 60s after SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestRunShutdownReport is issue 17's case, end to end: `sluice run` with
// its upstream down and 500 events spooled gets SIGTERM. It must not say
// it drained: it logs per class what it left and why, and exits 3; the
// numbers it logs are those `sluice spool check` finds. The next run, once
// the upstream is up, ships them and exits 0. Each run logs the outage
// once, not once per connection attempt.
func TestRunShutdownReport(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there: the upstream is down
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	dataDir := t.TempDir()
	args := []string{"--upstream", url, "--data-dir", dataDir, "--drain-timeout", "1s"}

	p := startProc(t, args...)
	for i := 0; i < 500; i += 100 {
		status, res, err := post(t.Context(), http.DefaultClient, p.addr, "ingest", events(i, 100))
		if err != nil || status != http.StatusOK || res.Accepted != 100 {
			t.Fatalf("post: %d %+v %v", status, res, err)
		}
	}
	waitLog(t, p, "upstream connect failed")

	// A second sluice on the same data dir is told what is wrong, with an
	// upstream or an embedded server (which must not start on the store).
	for _, extra := range [][]string{{"--upstream", url}, {"--nats-listen", "127.0.0.1:0"}} {
		var errOut bytes.Buffer
		err := run(t.Context(), append([]string{"run", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, extra...), io.Discard, &errOut)
		if err == nil || !strings.Contains(err.Error(), "is another sluice running on this --data-dir?") {
			t.Errorf("second sluice on the data dir (%v): %v", extra, err)
		}
		if strings.Contains(errOut.String(), "embedded nats-server started") {
			t.Errorf("second sluice on the data dir started a NATS server on the first one's store:\n%s", errOut.String())
		}
	}

	if code := stopProc(t, p); code != 3 {
		t.Errorf("exit status %d after SIGTERM with events left, want 3", code)
	}
	logs := p.logs.String()
	if n := len(logRecords(t, logs, "upstream connect failed")); n != 1 {
		t.Errorf("%d 'upstream connect failed' lines, want 1 per outage", n)
	}
	if len(logRecords(t, logs, "drained")) > 0 {
		t.Error("logged 'drained' with the upstream down")
	}
	chk, err := spool.Check(filepath.Join(dataDir, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	pending := map[string]float64{}
	for _, c := range chk.Classes {
		pending[c.Name] = float64(c.Pending)
	}
	var total float64
	for _, rec := range logRecords(t, logs, "left in the spool") {
		class, events := rec["class"].(string), rec["events"].(float64)
		if events != pending[class] {
			t.Errorf("log: %s left %v events; spool check: %v pending", class, events, pending[class])
		}
		if r := rec["reason"]; r != "deferred" && r != "upstream_down" {
			t.Errorf("%s left for %v, want deferred or upstream_down: %v", class, r, rec)
		}
		total += events
	}
	if total != 500 || pending["ingest"] != 500 {
		t.Errorf("log says %v events left, spool check %v pending in ingest; 500 were posted", total, pending["ingest"])
	}
	if recs := logRecords(t, logs, "not drained"); len(recs) != 1 || recs[0]["left"] != total {
		t.Errorf("summary: %v, want one with left=%v", recs, total)
	}

	// The next run starts with the upstream still down; it comes back.
	p = startProc(t, args...)
	waitLog(t, p, "upstream connect failed")
	srv, err := embednats.Start(embednats.Options{Dir: t.TempDir(), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	back := waitLog(t, p, "upstream connected")
	if n, _ := back["failed_attempts"].(float64); n < 1 || back["down_for"] == nil {
		t.Errorf("end of the outage: %v, want how long and how many attempts failed", back)
	}
	waitLog(t, p, "stream created") // the node creates it after connecting: poll it only then
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, _ := streamIDs(t, srv.ClientURL(), "SLUICE")
		if len(got) == 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d of the 500 events 90s after the upstream came back", len(got))
		}
	}
	if code := stopProc(t, p); code != 0 {
		t.Errorf("exit status %d after SIGTERM with everything shipped, want 0", code)
	}
	logs = p.logs.String()
	if n := len(logRecords(t, logs, "upstream connect failed")); n != 1 {
		t.Errorf("%d 'upstream connect failed' lines, want 1 per outage", n)
	}
	if len(logRecords(t, logs, "drained")) != 1 || len(logRecords(t, logs, "left in the spool")) > 0 {
		t.Errorf("after shipping everything: no single 'drained' line, or a class left:\n%s", logs)
	}
	if chk, err := spool.Check(filepath.Join(dataDir, "spool")); err != nil || chk.Classes[0].Pending != 0 {
		t.Errorf("spool check after the drain: %+v %v", chk, err)
	}
}

// TestRunPortTaken: a taken --nats-listen port is reported at once, saying
// what to do.
func TestRunPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = run(t.Context(), []string{"run", "--listen", "127.0.0.1:0", "--nats-listen", l.Addr().String(), "--data-dir", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "set --nats-listen") {
		t.Errorf("taken --nats-listen: %v", err)
	}
}
