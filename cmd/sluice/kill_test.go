package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/natstest"
)

// sluiceProc is `sluice run` in a subprocess: the test binary re-executed
// as the sluice main (see TestMain).
type sluiceProc struct {
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer
	done chan struct{} // closed when the process has exited and its logs are read
}

// startProc starts `sluice run` with args and waits until it listens. Its
// HTTP address comes from its JSON "listening" log line.
func startProc(t *testing.T, args ...string) *sluiceProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return startExe(t, exe, args...)
}

// startExe is startProc with the binary exe: the test binary (which the
// envMain variable turns into sluice) or a sluice built by buildSluice.
func startExe(t *testing.T, exe string, args ...string) *sluiceProc {
	t.Helper()
	args = append([]string{"run", "--listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envMain+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sluiceProc{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(line, '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" {
				addrc <- rec.Addr
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("sluice run %q logs:\n%s", args, p.logs)
		}
	})
	select {
	case p.addr = <-addrc:
		return p
	case <-p.done:
		t.Fatalf("sluice run exited before listening: %v\n%s", cmd.ProcessState, p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("sluice run not listening after 60s\n%s", p.logs)
	}
	return nil
}

// TestKill9 kills `sluice run` with SIGKILL while clients post to it, three
// times, restarts it on the same data dir, and checks from the stream that
// every event acknowledged with 200 is there exactly once.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test: slow")
	}
	srv := natstest.Start(t)
	url := srv.ClientURL()
	dataDir := t.TempDir()
	args := []string{"--upstream", url, "--data-dir", dataDir, "--node", "kill9"}

	const posters, perRequest = 4, 50
	var (
		mu      sync.Mutex
		acked   = map[int]bool{}
		nextReq atomic.Int64
	)
	for round := range 3 {
		p := startProc(t, args...)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var ok atomic.Int64
		client := &http.Client{Timeout: 10 * time.Second}
		for range posters {
			wg.Go(func() {
				for ctx.Err() == nil {
					first := int(nextReq.Add(1)-1) * perRequest
					class := []string{"ingest", "critical"}[first/perRequest%2]
					status, ans, err := post(ctx, client, p.addr, class, events(first, perRequest))
					if err != nil || status != 200 {
						continue // the process died under us, or we were stopped
					}
					if ans.Accepted != perRequest {
						t.Errorf("post %d: 200 with %+v", first, ans)
						continue
					}
					ok.Add(1)
					mu.Lock()
					for id := first; id < first+perRequest; id++ {
						acked[id] = true
					}
					mu.Unlock()
				}
			})
		}
		d := 300*time.Millisecond + rand.N(1200*time.Millisecond)
		time.Sleep(d)
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		cancel()
		wg.Wait()
		t.Logf("round %d: killed after %v, %d requests acknowledged", round, d, ok.Load())
		if ok.Load() == 0 {
			t.Errorf("round %d: no request acknowledged in %v", round, d)
		}
	}

	// Restart on the same spool and let it drain; SIGTERM ends it cleanly
	// only after everything is acknowledged by JetStream.
	p := startProc(t, args...)
	deadline := time.Now().Add(90 * time.Second)
	for {
		got, _ := streamIDs(t, url, "SLUICE")
		missing := 0
		for id := range acked {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events still missing from the stream after 90s", missing, len(acked))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("sluice run did not exit 60s after SIGTERM")
	}
	if !p.cmd.ProcessState.Success() {
		t.Errorf("sluice run after SIGTERM: %v", p.cmd.ProcessState)
	}
	if !strings.Contains(p.logs.String(), `"msg":"drained"`) {
		t.Errorf("no drained log line after SIGTERM")
	}

	got, batches := streamIDs(t, url, "SLUICE")
	checkExactlyOnce(t, got, acked)
	t.Logf("%d acknowledged events, %d ids in %d batches in the stream", len(acked), len(got), batches)
}
