package aggregator_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// TestExactlyOncePastDuplicateWindow: a node claimed two batches, the
// first of which reached the stream while its ack never reached the
// spool (the node died first); the second never left. A new node on the
// spool, started after the stream's 1 s duplicate window, republishes
// both: the first is found in the stream and not stored again, the
// second is stored, once. A copy sent by hand afterwards is stored: the
// window had indeed passed, deduplication did not do it.
func TestExactlyOncePastDuplicateWindow(t *testing.T) {
	srv := natstest.Start(t)
	exactlyOncePastWindow(t, connect(t, srv.ClientURL()), 1)
}

// TestExactlyOncePastDuplicateWindowR3 is the same on an R3 stream of a
// 3-server cluster, where JetStream's leader checks the conditional
// publish.
func TestExactlyOncePastDuplicateWindowR3(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	exactlyOncePastWindow(t, nodeConn(t, c.urls()), 3)
}

func exactlyOncePastWindow(t *testing.T, nc *nats.Conn, replicas int) {
	const window = time.Second
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitJetStream(t, 60*time.Second, "create the stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: "SLUICE", Subjects: []string{"sluice.>"}, Storage: jetstream.FileStorage, Duplicates: window, Replicas: replicas,
		})
		return err
	})
	// Another node's batch on the same subject, before and after.
	other := func(first uint64) {
		t.Helper()
		b := wire.Batch{Node: "other", Spool: "otherspool", Class: "ingest", First: first, Last: first, Count: 1}
		publishBatch(t, js, &b, [][]byte{event("other", int(first))})
	}
	other(1)

	// The earlier node's spool: 100 events, claimed in two batches.
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{Classes: map[string]spool.ClassOptions{"ingest": {}}})
	if err != nil {
		t.Fatal(err)
	}
	evs := make([][]byte, 100)
	for i := range evs {
		evs[i] = event("ingest", i)
	}
	if _, err := sp.Append(t.Context(), "ingest", evs); err != nil {
		t.Fatal(err)
	}
	for _, r := range []spool.Range{{First: 1, Last: 50}, {First: 51, Last: 100}} {
		if err := sp.Claim("ingest", r); err != nil {
			t.Fatal(err)
		}
	}
	first := wire.Batch{Node: "test", Spool: sp.ID(), Class: "ingest", First: 1, Last: 50, Count: 50}
	if ack := publishBatch(t, js, &first, evs[:50]); ack.Duplicate {
		t.Fatal("first publish a duplicate")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	other(2)
	time.Sleep(2 * window) // past the window: the server forgets the first batch's id

	n := newNode(t, dir, nc, func(o *aggregator.Options) {
		o.DuplicateWindow = window
		o.StreamConfig.Replicas = replicas
	})
	seen := collect(t, nc, 102, 30*time.Second)
	if seen["other-1"] != 1 || seen["other-2"] != 1 {
		t.Fatalf("other node's events: %d, %d", seen["other-1"], seen["other-2"])
	}
	delete(seen, "other-1")
	delete(seen, "other-2")
	exactlyOnce(t, seen, 100, "ingest")
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := n.Stats().Classes["ingest"]
	if st.Acked != 100 || st.Depth != 0 || st.Duplicates != 1 {
		t.Fatalf("acked %d depth %d duplicates %d, want 100, 0, 1", st.Acked, st.Depth, st.Duplicates)
	}
	s, err := js.Stream(t.Context(), "SLUICE")
	if err != nil {
		t.Fatal(err)
	}
	if m := s.CachedInfo().State.Msgs; m != 4 {
		t.Fatalf("%d messages in the stream, want 4 (2 batches, 2 of the other node)", m)
	}

	// The control: the same batch sent again as before this change is
	// stored a second time.
	if ack := publishBatch(t, js, &first, evs[:50]); ack.Duplicate {
		t.Fatal("the window had not passed: the test proves nothing")
	}
}

// publishBatch publishes b with events to sluice.<class>, as a node would,
// and returns the ack.
func publishBatch(t testing.TB, js jetstream.JetStream, b *wire.Batch, events [][]byte) *jetstream.PubAck {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var nd bytes.Buffer
	for _, ev := range events {
		nd.Write(ev)
		nd.WriteByte('\n')
	}
	msg := &nats.Msg{Subject: "sluice." + b.Class, Header: b.Header(), Data: enc.EncodeAll(nd.Bytes(), nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}
