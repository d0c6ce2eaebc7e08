package aggregator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
)

// TestStreamCreatedWithSettings: a missing stream is created with the
// node's stream settings.
func TestStreamCreatedWithSettings(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.StreamConfig = aggregator.StreamOptions{MaxAge: time.Hour, MaxBytes: 1 << 30, DuplicateWindow: 3 * time.Minute}
	})
	ingest(t, n, "ingest", 0, 100, 10)
	exactlyOnce(t, collect(t, nc, 100, 20*time.Second), 100, "ingest")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), "SLUICE")
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.Duplicates != 3*time.Minute || c.MaxAge != time.Hour || c.MaxBytes != 1<<30 || c.Replicas != 1 ||
		c.Discard != jetstream.DiscardNew || c.Storage != jetstream.FileStorage || len(c.Subjects) != 1 || c.Subjects[0] != "sluice.>" {
		t.Fatalf("created %+v", c)
	}
	if err := n.StreamRefused(); err != nil {
		t.Fatal(err)
	}
}

// waitRefused waits until the node has checked its stream and refuses it.
func waitRefused(t testing.TB, n *aggregator.Node) error {
	t.Helper()
	deadline := guard(10 * time.Second)
	for {
		if err := n.StreamRefused(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatal("hang guard: the node does not refuse its stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamRefused: a node refuses an existing stream that breaks its
// promises, saying which settings and what they need; it publishes
// nothing to it, keeps its events, drains nothing into it at Shutdown,
// and ships them, exactly once, when someone fixes the stream.
func TestStreamRefused(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bad := jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.ingest"}} // server default window: 2 min
	if _, err := js.CreateStream(t.Context(), bad); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := newNode(t, dir, nc, nil)
	err = waitRefused(t, n)
	if !errors.Is(err, aggregator.ErrStreamMismatch) {
		t.Fatalf("%v: not ErrStreamMismatch", err)
	}
	for _, want := range []string{`stream "SLUICE"`, "subjects [sluice.ingest] do not cover sluice.critical, sluice.replication, sluice.backfill",
		"duplicate_window 2m0s: need at least 10m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\ndoes not say %q", err, want)
		}
	}
	ingest(t, n, "ingest", 0, 200, 20)
	ingest(t, n, "critical", 0, 200, 20)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a refused stream: %v", err)
	}
	rep, _ := n.ShutdownReport()
	if rep.Shipped() != 0 || rep.Left() != 400 {
		t.Fatalf("shutdown: shipped %d left %d, want 0 and 400", rep.Shipped(), rep.Left())
	}
	s, err := js.Stream(t.Context(), "SLUICE")
	if err != nil {
		t.Fatal(err)
	}
	if m := s.CachedInfo().State.Msgs; m != 0 {
		t.Fatalf("%d messages in the refused stream", m)
	}

	// Fixed while a node waits on it: it ships.
	n = newNode(t, dir, nc, nil)
	refused := waitRefused(t, n)
	if got := n.Stats().StreamRefused; got != refused.Error() {
		t.Errorf("Stats().StreamRefused %q, want %q", got, refused)
	}
	bad.Subjects, bad.Duplicates = []string{"sluice.>"}, 10*time.Minute
	if _, err := js.UpdateStream(t.Context(), bad); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, collect(t, nc, 400, 20*time.Second), 200, "ingest", "critical")
	if err := n.StreamRefused(); err != nil {
		t.Fatalf("after the fix: %v", err)
	}
	if got := n.Stats().StreamRefused; got != "" {
		t.Errorf("after the fix: Stats().StreamRefused %q", got)
	}
}

// TestStreamMismatchWarn: on_mismatch warn ships into the same stream.
func TestStreamMismatchWarn(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.>"}}); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) { o.StreamConfig.OnMismatch = aggregator.MismatchWarn })
	ingest(t, n, "ingest", 0, 100, 10)
	exactlyOnce(t, collect(t, nc, 100, 20*time.Second), 100, "ingest")
	if err := n.StreamRefused(); err != nil {
		t.Fatal(err)
	}
}

// TestStreamClusterR3: on a 3-server JetStream cluster the node creates
// its stream with 3 replicas in the named cluster, and refuses an R1
// stream when it wants 3.
func TestStreamClusterR3(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	nc := nodeConn(t, c.urls())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitJetStream(t, 60*time.Second, "meta leader", func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
	n := faultNode(t, nc, func(o *aggregator.Options) {
		o.Stream, o.Subject = "R3", "r3"
		o.StreamConfig = aggregator.StreamOptions{Replicas: 3, Cluster: c.name}
	})
	if err := n.Ingest(t.Context(), "critical", event("critical", 0)); err != nil {
		t.Fatal(err)
	}
	deadline := guard(60 * time.Second)
	for n.Stats().Classes["critical"].Acked < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: nothing acked; %v", n.StreamRefused())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := js.Stream(t.Context(), "R3")
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Config.Placement == nil || info.Config.Placement.Cluster != c.name ||
		info.Cluster == nil || info.Cluster.Name != c.name || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("config %+v, cluster %+v", info.Config, info.Cluster)
	}

	waitJetStream(t, 60*time.Second, "create an R1 stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R1", Subjects: []string{"r1.>"}, Duplicates: 10 * time.Minute})
		return err
	})
	n1 := faultNode(t, nc, func(o *aggregator.Options) {
		o.Stream, o.Subject = "R1", "r1"
		o.StreamConfig.Replicas = 3
	})
	if err := waitRefused(t, n1); !strings.Contains(err.Error(), "replicas 1: need at least 3") {
		t.Fatalf("%v: does not name the replicas", err)
	}
}
