package observe

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
)

// linkCeil is the link ceiling of test nodes, in bytes/s: far above the
// test load, so the level stays 0, and non-zero, so classes have
// guaranteed rates and ceilings.
const linkCeil = 8 << 20

// classes are the default classes of a test node.
var classes = []string{priority.ClassCritical, priority.ClassIngest, priority.ClassReplication, priority.ClassBackfill}

// rig is a real node on a real nats-server with its spool in t.TempDir,
// with the HTTP ingest handler in front of it.
type rig struct {
	nc     *nats.Conn
	node   *aggregator.Node
	ingest *ingest.Handler
}

func newRig(t testing.TB) *rig {
	t.Helper()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	node, err := aggregator.New(aggregator.Options{
		Node:       "ops-test",
		Dir:        t.TempDir(),
		Conn:       nc,
		AckTimeout: 2 * time.Second,
		RetryMax:   200 * time.Millisecond,
		Classes:    priority.Defaults(linkCeil),
		Link:       aggregator.Link{Ceil: linkCeil, Dwell: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := node.Shutdown(ctx); err != nil {
			t.Errorf("node shutdown: %v", err)
		}
	})
	h, err := ingest.NewHandler(node, ingest.Options{Node: "ops-test"})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{nc: nc, node: node, ingest: h}
}

// hangGuard is how long a test waits for a state before it calls the wait
// a hang: far above what the slowest honest run needs (under -race on two
// loaded cores), so that it only turns a hang into a failure. The tests
// check which states are reached, never how fast.
const hangGuard = 2 * time.Minute

// load posts NDJSON batches of every class to the ingest handler at
// baseURL, one batch of per events per class every 50 ms, until stop is
// called or limit (raised to hangGuard: the load must outlast the waits
// for the states it brings about) passes. Errors are reported when stop
// returns.
func load(t testing.TB, baseURL string, per int, limit time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), max(limit, hangGuard))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		seq := 0
		for {
			for _, class := range classes {
				var body bytes.Buffer
				for range per {
					seq++
					fmt.Fprintf(&body, `{"id":"e%d","type":"track","event":"load","properties":{"n":%d,"pad":"%s"}}`+"\n", seq, seq, strings.Repeat("x", 200))
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/events?class="+class, &body)
				req.Header.Set("Content-Type", "application/x-ndjson")
				resp, err := http.DefaultClient.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("POST class %s: %s: %s", class, resp.Status, b)
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			for _, err := range errs {
				t.Error(err)
			}
		})
	}
}

// waitFor polls cond every 20 ms until it holds; past d (raised to
// hangGuard) the test fails as hung.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, hangGuard)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allAcked reports whether every class had at least n events acknowledged.
func allAcked(node *aggregator.Node, n uint64) bool {
	st := node.Stats()
	for _, c := range classes {
		if st.Classes[c].Acked < n {
			return false
		}
	}
	return true
}

func get(t testing.TB, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}
