package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/internal/natstest"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startNode runs `sluice run` in-process and returns its HTTP address and
// a function that stops it (as SIGINT would) and returns run's error.
func startNode(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- runNode(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), io.Discard, logs,
			&nodeHooks{listening: func(a net.Addr) { addrc <- a }})
	}()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-errc
		})
		return runErr
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("sluice run logs:\n%s", logs)
		}
	})
	select {
	case a := <-addrc:
		return a.String(), stop
	case err := <-errc:
		once.Do(func() { runErr = err })
		t.Fatalf("sluice run exited before listening: %v\n%s", err, logs)
	case <-time.After(hangGuard):
		t.Fatalf("hang guard: sluice run not listening after %v\n%s", hangGuard, logs)
	}
	return "", nil
}

// TestEndToEnd posts events over HTTP to an in-process `sluice run`, stops
// it (draining the spool into JetStream), and reads them back with an
// in-process `sluice sink`: every accepted event comes out exactly once.
func TestEndToEnd(t *testing.T) {
	srv := natstest.Start(t)
	url := srv.ClientURL()
	addr, stop := startNode(t, "--upstream", url, "--data-dir", t.TempDir(), "--node", "e2e")

	ctx := t.Context()
	client := &http.Client{Timeout: 30 * time.Second}
	res, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("healthz: %d", res.StatusCode)
	}

	const posters, requests, perRequest = 4, 25, 40
	want := map[int]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range posters {
		wg.Go(func() {
			for r := range requests {
				first := (p*requests + r) * perRequest
				class := []string{"ingest", "critical"}[r%2]
				body := events(first, perRequest)
				if r%5 == 0 { // a bad line costs only itself
					body = append(body, "{not json\n"...)
				}
				status, ans, err := post(ctx, client, addr, class, body)
				if err != nil || status != 200 || ans.Accepted != perRequest {
					t.Errorf("post %d: status %d, %+v, %v", first, status, ans, err)
					return
				}
				if wantRej := map[bool]int{true: 1}[r%5 == 0]; len(ans.Rejected) != wantRej {
					t.Errorf("post %d: %d rejected, want %d", first, len(ans.Rejected), wantRej)
				}
				mu.Lock()
				for id := first; id < first+perRequest; id++ {
					want[id] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}

	// A batch that is not a sluice batch: reported and terminated, not fatal.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, "sluice.ingest", []byte("garbage")); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	errOut := &syncBuffer{}
	if err := run(ctx, []string{"sink", "--upstream", url, "--idle-exit", "1s"}, &out, errOut); err != nil {
		t.Fatalf("sink: %v\n%s", err, errOut)
	}
	got := countIDs(t, out.Bytes())
	checkExactlyOnce(t, got, want)
	if len(got) != len(want) {
		t.Errorf("sink wrote %d ids, want %d", len(got), len(want))
	}
	if s := errOut.String(); !strings.Contains(s, "batch on sluice.ingest, stream seq") ||
		!strings.Contains(s, "wire: unsupported format version") {
		t.Errorf("sink stderr does not report the bad batch:\n%s", s)
	}

	// The durable consumer resumes where it stopped: nothing is new.
	out.Reset()
	if err := run(ctx, []string{"sink", "--upstream", url, "--idle-exit", "300ms"}, &out, io.Discard); err != nil {
		t.Fatalf("second sink: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("second sink wrote %d bytes, want 0 (durable consumer should resume)", out.Len())
	}
}

// TestRestartDrainsBacklog stops a node while its upstream is down, so its
// events stay in the spool, then starts a new node on the same data dir
// with the upstream back: every acknowledged event reaches the stream
// exactly once.
func TestRestartDrainsBacklog(t *testing.T) {
	natsDir := t.TempDir()
	srv, err := embednats.Start(embednats.Options{Dir: natsDir})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	dataDir := t.TempDir()

	addr, stop := startNode(t, "--upstream", url, "--data-dir", dataDir, "--drain-timeout", "500ms")
	want := map[int]bool{}
	postAll := func(first, n int) {
		t.Helper()
		for i := 0; i < n; i += 100 {
			status, ans, err := post(t.Context(), http.DefaultClient, addr, "ingest", events(first+i, 100))
			if err != nil || status != 200 || ans.Accepted != 100 {
				t.Fatalf("post: %d %+v %v", status, ans, err)
			}
			for id := first + i; id < first+i+100; id++ {
				want[id] = true
			}
		}
	}
	postAll(0, 500)
	if err := srv.Close(); err != nil { // the upstream goes away
		t.Fatal(err)
	}
	postAll(500, 1000) // still accepted: the spool holds them
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err) // a drain timeout is logged, not an error
	}

	srv = natstest.StartIn(t, natsDir)
	url = srv.ClientURL()
	addr, stop = startNode(t, "--upstream", url, "--data-dir", dataDir)
	postAll(1500, 500)
	if err := stop(); err != nil { // drains everything before returning
		t.Fatalf("run: %v", err)
	}
	got, _ := streamIDs(t, url, "SLUICE")
	checkExactlyOnce(t, got, want)
	if len(got) != len(want) {
		t.Errorf("stream has %d ids, want %d", len(got), len(want))
	}
}
