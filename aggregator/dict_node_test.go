package aggregator_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/wire"
)

// segment returns the real Segment events of testdata.
func segment(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open("testdata/segment.events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		evs = append(evs, bytes.Clone(sc.Bytes()))
	}
	return evs
}

// segmentEvent is real event i%len(evs) with its messageId set to
// class-i, so that every event is distinct and can be counted.
func segmentEvent(evs [][]byte, class string, i int) []byte {
	e := evs[i%len(evs)]
	const key = `"messageId":"`
	at := bytes.Index(e, []byte(key)) + len(key)
	end := at + bytes.IndexByte(e[at:], '"')
	out := append([]byte(nil), e[:at]...)
	out = fmt.Appendf(out, "%s-%d", class, i)
	return append(out, e[end:]...)
}

// ingestSegment ingests events [from, from+count) of class, 100 a call.
func ingestSegment(t testing.TB, n *aggregator.Node, evs [][]byte, class string, from, count int) {
	t.Helper()
	for i := from; i < from+count; i += 100 {
		var batch [][]byte
		for j := i; j < min(i+100, from+count); j++ {
			batch = append(batch, segmentEvent(evs, class, j))
		}
		if err := n.Ingest(context.Background(), class, batch...); err != nil {
			t.Fatal(err)
		}
	}
}

// dictOptions train small dictionaries on few samples, so that a test
// needs a few thousand events, and check drift only when told.
func dictOptions(mode aggregator.DictMode) aggregator.DictOptions {
	return aggregator.DictOptions{
		Classes:     map[string]aggregator.DictMode{"ingest": mode},
		MaxSize:     8 << 10,
		SampleBytes: 512 << 10,
		Interval:    time.Hour,
	}
}

// ingestUntil ingests real events of class 1000 at a time until cond
// holds of its stats, and returns the number ingested.
func ingestUntil(t *testing.T, n *aggregator.Node, evs [][]byte, class string, from int, what string, cond func(aggregator.ClassStats) bool) int {
	t.Helper()
	deadline := guard(0)
	i := from
	for !cond(n.Stats().Classes[class]) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %s not reached after %d events: %+v", what, i, n.Stats().Classes[class])
		}
		if n.Stats().Classes[class].Depth < 2000 {
			ingestSegment(t, n, evs, class, i, 1000)
			i += 1000
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return i
}

// dictBatch is one batch read back from the stream.
type dictBatch struct {
	seq  uint64
	dict uint32
}

// collectDict reads the whole stream as a consumer that starts now,
// fetching each dictionary a batch names from the bucket (and checking
// that its embedded id is its key), until it holds want events; it
// returns how often each messageId was seen and the batches read.
func collectDict(t *testing.T, nc *nats.Conn, want int) (map[string]int, []dictBatch) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	// wire's decoder, with the source a consumer uses: the stream's
	// bucket, opened at the first batch that names a dictionary.
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, "SLUICE")))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	seen := map[string]int{}
	var batches []dictBatch
	total := 0
	var last uint64
	for total < want {
		if ctx.Err() != nil {
			t.Fatalf("hang guard: %d of %d events in the stream", total, want)
		}
		msg, err := getNext(ctx, js, last+1)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		last = msg.Sequence
		b, err := dec.DecodeContext(ctx, msg.Header, msg.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", msg.Sequence, err)
		}
		if h := msg.Header.Get(wire.HdrVersion); (b.Dict != 0) != (h == wire.VersionDict) {
			t.Fatalf("seq %d: version %s with dictionary %d", msg.Sequence, h, b.Dict)
		}
		var fh zstd.Header
		if err := fh.Decode(msg.Data); err != nil || fh.DictionaryID != b.Dict {
			t.Fatalf("seq %d: frame names dictionary %d, header %d (%v)", msg.Sequence, fh.DictionaryID, b.Dict, err)
		}
		lines := b.Events
		for _, l := range lines {
			var e struct{ MessageID string }
			if err := json.Unmarshal(l, &e); err != nil {
				t.Fatal(err)
			}
			seen[e.MessageID]++
			total++
		}
		batches = append(batches, dictBatch{seq: msg.Sequence, dict: b.Dict})
	}
	return seen, batches
}

// onceEach checks that seen holds class-0 .. class-(n-1) once each.
func onceEach(t *testing.T, seen map[string]int, class string, n int) {
	t.Helper()
	bad := 0
	for i := range n {
		if seen[class+"-"+strconv.Itoa(i)] != 1 {
			bad++
		}
	}
	if bad > 0 || len(seen) != n {
		t.Fatalf("%d of %d events not seen exactly once, %d distinct", bad, n, len(seen))
	}
}

// TestDictTrainPublishUse: a class trains a dictionary from its own
// events, publishes it to the bucket, and its following batches name it
// and decode with the bucket's copy; every event arrives once.
func TestDictTrainPublishUse(t *testing.T) {
	srv := natstest.Start(t)
	nc := n2c(t, srv)
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) { o.Dictionary = dictOptions(aggregator.DictOn) })
	evs := segment(t)
	total := ingestUntil(t, n, evs, "ingest", 0, "adoption", func(c aggregator.ClassStats) bool { return c.Dict != 0 })
	ingestSegment(t, n, evs, "ingest", total, 2000)
	total += 2000
	seen, batches := collectDict(t, nc, total)
	onceEach(t, seen, "ingest", total)
	st := n.Stats().Classes["ingest"]
	t.Logf("%d batches; stats %+v", len(batches), st)
	if st.DictAdoptions != 1 || st.DictPublishErrors != 0 || st.DictMode != aggregator.DictOn {
		t.Fatalf("stats %+v", st)
	}
	if st.DictRatio <= st.DictPlainRatio {
		t.Fatalf("held-out ratio %.2f with the dictionary, %.2f without", st.DictRatio, st.DictPlainRatio)
	}
	// Once a batch used the dictionary, every later one does.
	using := 0
	for _, b := range batches {
		switch {
		case b.dict == st.Dict:
			using++
		case using > 0:
			t.Fatalf("seq %d: dictionary %d after batches with %d", b.seq, b.dict, st.Dict)
		case b.dict != 0:
			t.Fatalf("seq %d names dictionary %d, not the class's (%d)", b.seq, b.dict, st.Dict)
		}
	}
	if using == 0 || uint64(using) > st.DictBatches {
		t.Fatalf("%d batches in the stream with the dictionary, %d compressed with it", using, st.DictBatches)
	}
}

// TestDictRotation: a retrain mid-stream puts a second dictionary in
// use; a consumer that starts after it reads every batch, with either
// dictionary, each event exactly once.
func TestDictRotation(t *testing.T) {
	srv := natstest.Start(t)
	nc := n2c(t, srv)
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) { o.Dictionary = dictOptions(aggregator.DictOn) })
	evs := segment(t)
	total := ingestUntil(t, n, evs, "ingest", 0, "adoption", func(c aggregator.ClassStats) bool { return c.Dict != 0 })
	first := n.Stats().Classes["ingest"].Dict
	ingestSegment(t, n, evs, "ingest", total, 1000)
	total += 1000
	if err := n.RetrainDictionary("ingest"); err != nil {
		t.Fatal(err)
	}
	total = ingestUntil(t, n, evs, "ingest", total, "rotation", func(c aggregator.ClassStats) bool { return c.DictAdoptions == 2 })
	second := n.Stats().Classes["ingest"].Dict
	if second == first || second == 0 {
		t.Fatalf("dictionary %d after %d", second, first)
	}
	ingestSegment(t, n, evs, "ingest", total, 1000)
	total += 1000
	seen, batches := collectDict(t, nc, total)
	onceEach(t, seen, "ingest", total)
	by := map[uint32]int{}
	for _, b := range batches {
		by[b.dict]++
	}
	t.Logf("batches by dictionary: %v", by)
	if by[first] == 0 || by[second] == 0 || len(by) > 3 {
		t.Fatalf("batches by dictionary %v, want some with %d and %d", by, first, second)
	}
	if err := n.RetrainDictionary("critical"); err != nil {
		t.Fatal(err) // auto by default
	}
	if err := n.RetrainDictionary("nope"); err == nil {
		t.Fatal("retrain of an unknown class")
	}
}

// TestDictBucketRefused: the server refuses the dictionary bucket (its
// subjects are another stream's). The class trains, its publishes fail,
// counted, and every batch goes without a dictionary, none lost.
func TestDictBucketRefused(t *testing.T) {
	srv := natstest.Start(t)
	nc := n2c(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUAT", Subjects: []string{"$KV." + wire.DictBucket("SLUICE") + ".>"}}); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.Dictionary = dictOptions(aggregator.DictOn)
		o.Dictionary.Interval = 100 * time.Millisecond // retry the publish often
	})
	evs := segment(t)
	total := ingestUntil(t, n, evs, "ingest", 0, "publish errors", func(c aggregator.ClassStats) bool { return c.DictPublishErrors >= 2 })
	ingestSegment(t, n, evs, "ingest", total, 1000)
	total += 1000
	seen, batches := collectDict(t, nc, total)
	onceEach(t, seen, "ingest", total)
	for _, b := range batches {
		if b.dict != 0 {
			t.Fatalf("seq %d names dictionary %d", b.seq, b.dict)
		}
	}
	st := n.Stats().Classes["ingest"]
	if st.Dict != 0 || st.DictAdoptions != 0 || st.DictBatches != 0 || st.DictTrainings == 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := js.KeyValue(ctx, wire.DictBucket("SLUICE")); err == nil {
		t.Fatal("the bucket exists")
	}
}

// TestDictRestart: a node that restarts on its spool does not name its
// old dictionary until it has published one of its own; what both
// shipped decodes, each event once.
func TestDictRestart(t *testing.T) {
	srv := natstest.Start(t)
	nc := n2c(t, srv)
	dir := t.TempDir()
	mod := func(o *aggregator.Options) { o.Dictionary = dictOptions(aggregator.DictOn) }
	n := newNode(t, dir, nc, mod)
	evs := segment(t)
	total := ingestUntil(t, n, evs, "ingest", 0, "adoption", func(c aggregator.ClassStats) bool { return c.Dict != 0 })
	first := n.Stats().Classes["ingest"].Dict
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = newNode(t, dir, nc, mod)
	if st := n.Stats().Classes["ingest"]; st.Dict != 0 {
		t.Fatalf("restarted with dictionary %d", st.Dict)
	}
	total = ingestUntil(t, n, evs, "ingest", total, "adoption after restart", func(c aggregator.ClassStats) bool { return c.Dict != 0 })
	second := n.Stats().Classes["ingest"].Dict
	ingestSegment(t, n, evs, "ingest", total, 1000)
	total += 1000
	seen, batches := collectDict(t, nc, total)
	onceEach(t, seen, "ingest", total)
	by := map[uint32]int{}
	for _, b := range batches {
		by[b.dict]++
	}
	t.Logf("batches by dictionary: %v", by)
	if second == first || by[second] == 0 {
		t.Fatalf("dictionaries %d then %d; batches by dictionary %v", first, second, by)
	}
}

// TestNewDictOptions: New refuses dictionary options out of range, and
// a mode for a class it does not have, with ErrInvalidOptions.
func TestNewDictOptions(t *testing.T) {
	nc := connect(t, natstest.Start(t).ClientURL())
	for _, tc := range []struct {
		name string
		o    aggregator.DictOptions
	}{
		{"mode", aggregator.DictOptions{Classes: map[string]aggregator.DictMode{"ingest": "always"}}},
		{"class", aggregator.DictOptions{Classes: map[string]aggregator.DictMode{"nope": aggregator.DictOn}}},
		{"small", aggregator.DictOptions{MaxSize: 512}},
		{"huge", aggregator.DictOptions{MaxSize: 2 << 20}},
		{"samples", aggregator.DictOptions{MaxSize: 8 << 10, SampleBytes: 16 << 10}},
		{"gain", aggregator.DictOptions{MinGain: 0.9}},
	} {
		n, err := aggregator.New(aggregator.Options{Dir: t.TempDir(), Conn: nc, Dictionary: tc.o})
		if !errors.Is(err, aggregator.ErrInvalidOptions) {
			if err == nil {
				n.Close()
			}
			t.Errorf("%s: %v, want ErrInvalidOptions", tc.name, err)
		}
	}
	n, err := aggregator.New(aggregator.Options{Dir: t.TempDir(), Conn: nc,
		Dictionary: aggregator.DictOptions{Classes: map[string]aggregator.DictMode{"ingest": aggregator.DictOff, "critical": ""}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	st := n.Stats().Classes
	if st["ingest"].DictMode != aggregator.DictOff || st["critical"].DictMode != aggregator.DictAuto || st["backfill"].DictMode != aggregator.DictAuto {
		t.Fatalf("modes: ingest %s, critical %s, backfill %s", st["ingest"].DictMode, st["critical"].DictMode, st["backfill"].DictMode)
	}
	if err := n.RetrainDictionary("ingest"); !errors.Is(err, aggregator.ErrInvalidClass) {
		t.Fatalf("retrain of a class with dictionaries off: %v", err)
	}
}
