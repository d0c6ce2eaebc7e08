package aggregator_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
)

// A reload while the node ships: a class deferred by its new plan sends
// nothing and keeps spooling, its old plan back ships the backlog, and
// every event arrives once. What cannot change in place is refused whole.
func TestReconfigure(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	n := newNode(t, t.TempDir(), nc, nil)

	ingest(t, n, "backfill", 0, 500, 50)
	if got := collect(t, nc, 500, 10*time.Second); len(got) != 500 {
		t.Fatalf("before: %d of 500 delivered", len(got))
	}

	classes := n.Classes()
	deferred := append([]priority.Class(nil), classes...)
	for i := range deferred {
		if deferred[i].Name == "backfill" {
			deferred[i].Plan = [priority.Levels]priority.Action{{Kind: priority.ActionDefer}, {Kind: priority.ActionDefer}, {Kind: priority.ActionDefer}, {Kind: priority.ActionDefer}}
			deferred[i].Ceil.BytesPerSec = 123_456
		}
	}
	if err := n.Reconfigure(deferred); err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Classes() {
		if c.Name == "backfill" && (c.Ceil.BytesPerSec != 123_456 || c.Plan[0].Kind != priority.ActionDefer) {
			t.Fatalf("Classes after Reconfigure: %+v", c)
		}
	}
	ingest(t, n, "backfill", 500, 500, 50)
	time.Sleep(500 * time.Millisecond)
	if st := n.Stats().Classes["backfill"]; st.Acked != 500 || st.Depth != 500 {
		t.Fatalf("deferred by the reload: acked %d, depth %d; want 500, 500", st.Acked, st.Depth)
	}
	if err := n.Reconfigure(classes); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, collect(t, nc, 1000, 10*time.Second), 1000, "backfill")

	bad := append([]priority.Class(nil), classes...)
	bad[1].Compression = priority.CompressionBest
	bad[2].Priority = 99
	err := n.Reconfigure(bad)
	if !errors.Is(err, aggregator.ErrInvalidOptions) || !strings.Contains(err.Error(), "compression") {
		t.Errorf("compression change: %v", err)
	}
	if err := n.Reconfigure(classes[:2]); err == nil || !strings.Contains(err.Error(), "needs a restart") {
		t.Errorf("fewer classes: %v", err)
	}
	for i, c := range n.Classes() {
		if c.Compression != classes[i].Compression || c.Priority != classes[i].Priority {
			t.Errorf("a refused reload changed class %s", c.Name)
		}
	}
}
