package aggregator_test

// Promises the docs make about what a node publishes, checked against a
// real node and an in-process JetStream (issue 17): a batch respects its
// class's bounds, a class's zstd level is the one used, a degraded node
// labels what it dropped, and max-age expiry (drop and demote) happens,
// is counted and loses nothing it should keep.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// streamBatch is one batch as a consumer finds it in the stream.
type streamBatch struct {
	wire.Batch        // its metadata; Events are copies
	seq        uint64 // stream sequence
	header     nats.Header
	body       []byte // the zstd frame as published
	ndjson     []byte // the body decompressed
	ids        []string
}

// readBatches reads the stream SLUICE from its start, batch by batch,
// until done says so, and returns what it read. timeout is raised to
// hangGuard; past it the test fails as hung.
func readBatches(t testing.TB, nc *nats.Conn, timeout time.Duration, done func([]streamBatch) bool) []streamBatch {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, "SLUICE")))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	zd, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zd.Close()
	var out []streamBatch
	var lastSeq uint64
	for deadline := guard(timeout); !done(out); {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %d batches read in %v, not what the test waits for", len(out), max(timeout, hangGuard))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		msg, err := getNext(ctx, js, lastSeq+1)
		cancel()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		lastSeq = msg.Sequence
		h := nats.Header(msg.Header)
		b, err := dec.Decode(h, msg.Data)
		if err != nil {
			t.Fatalf("decode stream seq %d: %v", msg.Sequence, err)
		}
		sb := streamBatch{Batch: b, seq: msg.Sequence, header: h, body: bytes.Clone(msg.Data)}
		sb.Events = nil
		for _, ev := range b.Events {
			sb.Events = append(sb.Events, bytes.Clone(ev))
			var e struct{ ID string }
			if err := json.Unmarshal(ev, &e); err != nil {
				t.Fatalf("event %q: %v", ev, err)
			}
			sb.ids = append(sb.ids, e.ID)
		}
		if sb.ndjson, err = zd.DecodeAll(msg.Data, nil); err != nil {
			t.Fatal(err)
		}
		out = append(out, sb)
	}
	return out
}

// eventsIn counts the events of class (every class if "") in bs.
func eventsIn(bs []streamBatch, class string) int {
	n := 0
	for _, b := range bs {
		if class == "" || b.Class == class {
			n += b.Count
		}
	}
	return n
}

// TestBatchBounds: every batch holds at most its class's max_events
// events and max_bytes bytes of NDJSON (events and newlines, before
// compression), and is cut at the bound, not below it: a backlog goes out
// in full batches.
func TestBatchBounds(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	const maxEvents, maxBytes = 7, 1000
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.Classes = []priority.Class{
			{Name: "count", Batch: priority.Batch{MaxEvents: maxEvents}},
			{Name: "size", Priority: 1, Batch: priority.Batch{MaxEvents: 1000, MaxBytes: maxBytes}},
		}
	})
	// One Ingest call is one spool record: the lane finds the whole
	// backlog at its first read.
	var counted, sized [][]byte
	for i := range 100 {
		counted = append(counted, event("count", i))
	}
	// 100 events of exactly 100 bytes (ten of them are max_bytes without
	// their newlines), then 100 of random sizes.
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		ev := fmt.Appendf(nil, `{"id":"size-%d","pad":"%s"}`, i, strings.Repeat("x", rnd.IntN(350)))
		if i < 100 {
			ev = fmt.Appendf(nil, `{"id":"size-%d","pad":"`, i)
			ev = append(append(ev, strings.Repeat("x", 100-len(ev)-2)...), `"}`...)
		}
		sized = append(sized, ev)
	}
	for class, evs := range map[string][][]byte{"count": counted, "size": sized} {
		if err := n.Ingest(context.Background(), class, evs...); err != nil {
			t.Fatal(err)
		}
	}
	bs := readBatches(t, nc, 30*time.Second, func(bs []streamBatch) bool { return eventsIn(bs, "") >= 300 })

	seen := make(map[string]int)
	var countBatches int
	var sizeBatches []streamBatch
	for _, b := range bs {
		for _, id := range b.ids {
			seen[id]++
		}
		switch b.Class {
		case "count":
			countBatches++
			if b.Count > maxEvents {
				t.Errorf("count: batch %d-%d holds %d events, max_events %d", b.First, b.Last, b.Count, maxEvents)
			}
		case "size":
			sizeBatches = append(sizeBatches, b)
			if len(b.ndjson) > maxBytes && b.Count > 1 {
				t.Errorf("size: batch %d-%d is %d bytes of NDJSON, max_bytes %d", b.First, b.Last, len(b.ndjson), maxBytes)
			}
		}
	}
	exactlyOnce(t, keep(seen, "count-"), 100, "count")
	exactlyOnce(t, keep(seen, "size-"), 200, "size")
	// 100 events of at most 7 a batch in 15 batches: all full but one.
	if want := (100 + maxEvents - 1) / maxEvents; countBatches != want {
		t.Errorf("count: %d batches for 100 events, want %d (full batches of %d)", countBatches, want, maxEvents)
	}
	// Each batch but the last is full: the next event would not have fit.
	slices.SortFunc(sizeBatches, func(a, b streamBatch) int { return int(a.First) - int(b.First) })
	for i := 0; i+1 < len(sizeBatches); i++ {
		cur, nxt := sizeBatches[i], sizeBatches[i+1]
		if len(cur.ndjson)+len(nxt.Events[0])+1 <= maxBytes {
			t.Errorf("size: batch %d-%d (%d bytes) was cut below max_bytes %d: the next event (%d bytes) fit",
				cur.First, cur.Last, len(cur.ndjson), maxBytes, len(nxt.Events[0]))
		}
	}
}

// TestCompressionLevel: each class's body is exactly the zstd frame its
// configured level makes of the batch's NDJSON, and compression "" is
// fastest (priority.CompressionFastest).
func TestCompressionLevel(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	levels := map[string]zstd.EncoderLevel{
		priority.CompressionFastest: zstd.SpeedFastest,
		priority.CompressionDefault: zstd.SpeedDefault,
		priority.CompressionBetter:  zstd.SpeedBetterCompression,
		priority.CompressionBest:    zstd.SpeedBestCompression,
	}
	// Class lv-unset has no compression; the others name theirs.
	want := map[string]string{"lv-unset": priority.CompressionFastest}
	classes := []priority.Class{{Name: "lv-unset"}}
	for name := range levels {
		want["lv-"+name] = name
		classes = append(classes, priority.Class{Name: "lv-" + name, Compression: name})
	}
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) { o.Classes = classes })
	for _, c := range classes {
		var evs [][]byte
		for i := range 150 {
			evs = append(evs, fmt.Appendf(nil, `{"id":"%s-%d","type":"track","event":"Product Viewed","properties":{"n":%d,"sku":"SKU-%05d","price":%d.%02d},"context":{"page":{"url":"https://shop.example/p/%d"}}}`,
				c.Name, i, i, i*7919%100000, i%97, i%100, i*31))
		}
		if err := n.Ingest(context.Background(), c.Name, evs...); err != nil {
			t.Fatal(err)
		}
	}
	bs := readBatches(t, nc, 30*time.Second, func(bs []streamBatch) bool { return eventsIn(bs, "") >= 150*len(classes) })

	encs := make(map[string]*zstd.Encoder)
	for name, lv := range levels {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		encs[name] = enc
	}
	told := make(map[string]bool) // a batch of the class tells its level from every other
	for _, b := range bs {
		lv := want[b.Class]
		frames := make(map[string][]byte)
		for name, enc := range encs {
			frames[name] = enc.EncodeAll(b.ndjson, nil)
		}
		if !bytes.Equal(b.body, frames[lv]) {
			var match []string
			for name, f := range frames {
				if bytes.Equal(b.body, f) {
					match = append(match, name)
				}
			}
			t.Errorf("%s: batch %d-%d: body is not zstd %s's frame (it is %v's)", b.Class, b.First, b.Last, lv, match)
			continue
		}
		unique := true
		for name, f := range frames {
			if name != lv && bytes.Equal(f, frames[lv]) {
				unique = false
			}
		}
		told[b.Class] = told[b.Class] || unique
	}
	for class := range want {
		if !told[class] {
			t.Errorf("%s: no batch whose frame differs between levels: the test proves nothing", class)
		}
	}
}

// degradeEvent is event i of TestDegradedBatchHeaders: the default ingest
// field rules' paths, some only in some events, random hex that does not
// compress (so the load outruns the link in wire bytes), and fields
// without a rule, which are never dropped.
func degradeEvent(i int) []byte {
	rnd := rand.New(rand.NewPCG(uint64(i), 17))
	hex := make([]byte, 96)
	for j := range hex {
		hex[j] = "0123456789abcdef"[rnd.IntN(16)]
	}
	props := fmt.Sprintf(`{"n":%d,"r":"%s"`, i, hex)
	if i%2 == 0 {
		props += `,"debug":{"trace":"t-` + strconv.Itoa(i) + `"}`
	}
	props += "}"
	ctx := `{"library":{"name":"analytics.js","version":"4.1.0"},"page":{"url":"https://shop.example/p/` + strconv.Itoa(i) + `"},"campaign":{"name":"spring"}`
	if i%5 != 0 {
		ctx += `,"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"`
	}
	ctx += "}"
	ev := fmt.Sprintf(`{"id":"ingest-%d","type":"track","event":"Clicked","properties":%s,"context":%s,"integrations":{"All":true}`, i, props, ctx)
	if i%3 == 0 {
		ev += `,"_metadata":{"bundled":["Segment.io"]}`
	}
	return []byte(ev + "}")
}

// lookup finds the member at a dot path in a decoded JSON object.
func lookup(m map[string]any, path string) (parent map[string]any, key string, ok bool) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		if m, ok = m[k].(map[string]any); !ok {
			return nil, "", false
		}
	}
	key = keys[len(keys)-1]
	_, ok = m[key]
	return m, key, ok
}

// TestDegradedBatchHeaders degrades a node for real: a link ceiling of
// 40 kB/s and an ingest load several times its target raise the level
// (demand), and ingest's plan drops fields at levels 1 and 2. Every batch
// read from the stream must say what happened to it: Sluice-Level when
// the level was above 0, and Sluice-Dropped-Fields listing exactly the
// paths removed from its events, which are the originals less those
// paths, nothing else.
func TestDegradedBatchHeaders(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) { o.Link.Ceil = 40_000 })
	var class priority.Class
	for _, c := range n.Classes() {
		if c.Name == priority.ClassIngest {
			class = c
		}
	}
	fields, err := priority.NewFieldSet(class.Fields)
	if err != nil {
		t.Fatal(err)
	}

	// About 500 kB/s of events, in calls of 50.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			evs := make([][]byte, 0, 50)
			for range 50 {
				evs = append(evs, degradeEvent(i))
				i++
			}
			if err := n.Ingest(context.Background(), priority.ClassIngest, evs...); err != nil {
				t.Errorf("ingest: %v", err)
				return
			}
		}
	})
	degraded := func(bs []streamBatch) int {
		k := 0
		for _, b := range bs {
			if b.Level > 0 && len(b.Dropped) > 0 {
				k++
			}
		}
		return k
	}
	bs := readBatches(t, nc, 90*time.Second, func(bs []streamBatch) bool { return degraded(bs) >= 3 })
	close(stop)
	wg.Wait()
	st := n.Stats()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Shutdown(ctx) // what is still spooled does not matter here
	t.Logf("%d batches read, %d degraded; node: level %d, %d degraded batches", len(bs), degraded(bs), st.Link.Level, st.Classes[priority.ClassIngest].Degraded)

	for _, b := range bs {
		if got, want := len(b.header[wire.HdrLevel]) > 0, b.Level > 0; got != want {
			t.Errorf("batch %d-%d: level %d, %s header present: %v", b.First, b.Last, b.Level, wire.HdrLevel, got)
		}
		var below []string
		if act := class.ActionAt(b.Level); b.Level > 0 && act.Kind == priority.ActionDropFields {
			below = fields.Below(act.MinFieldPriority).Patterns()
		}
		dropped := make(map[string]bool)
		for i, ev := range b.Events {
			k, err := strconv.Atoi(strings.TrimPrefix(b.ids[i], "ingest-"))
			if err != nil {
				t.Fatalf("event id %q", b.ids[i])
			}
			var orig, got map[string]any
			if err := json.Unmarshal(degradeEvent(k), &orig); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(ev, &got); err != nil {
				t.Fatal(err)
			}
			for _, p := range below {
				if parent, key, ok := lookup(orig, p); ok {
					delete(parent, key)
					dropped[p] = true
				}
			}
			if !reflect.DeepEqual(got, orig) {
				t.Errorf("batch %d-%d at level %d: event %s is\n%s\nwant the original less %v", b.First, b.Last, b.Level, b.ids[i], ev, below)
			}
		}
		want := slices.Sorted(func(yield func(string) bool) {
			for p := range dropped {
				if !yield(p) {
					return
				}
			}
		})
		if got := slices.Sorted(slices.Values(b.Dropped)); !slices.Equal(got, want) {
			t.Errorf("batch %d-%d at level %d: %s %q, want %q (the paths removed from its events)",
				b.First, b.Last, b.Level, wire.HdrDropped, b.header.Get(wire.HdrDropped), strings.Join(want, ","))
		}
	}
}

// spoolEvents appends events class-from … class-(from+count-1) to the
// spool in dir, as a node that stopped during an outage leaves them.
func spoolEvents(t testing.TB, dir, class string, from, count int) {
	t.Helper()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var evs [][]byte
	for i := from; i < from+count; i++ {
		evs = append(evs, event(class, i))
	}
	if _, err := sp.Append(context.Background(), class, evs); err != nil {
		t.Fatal(err)
	}
}

// expiryClasses: alerts demotes its old events, clicks drops them.
func expiryClasses(maxAge time.Duration) []priority.Class {
	return []priority.Class{
		{Name: "alerts", Critical: true, MaxAge: maxAge, Expire: priority.ExpireDemote, Batch: priority.Batch{MaxEvents: 5}},
		{Name: "clicks", Priority: 1, MaxAge: maxAge, Expire: priority.ExpireDrop, Batch: priority.Batch{MaxEvents: 5}},
	}
}

// TestMaxAgeExpiry starts a node on a spool holding events older than
// their classes' max age, and newer ones, as an outage leaves it. alerts
// (expire: demote) ships every event: the newer ones first, then the old
// ones in batches labelled Sluice-Stale, counted as demoted. clicks
// (expire: drop) ships only the newer ones and counts the old ones as
// expired. Nothing is left in the spool.
func TestMaxAgeExpiry(t *testing.T) {
	const maxAge = 2 * time.Second
	const old, fresh = 60, 20
	dir := t.TempDir()
	for _, c := range []string{"alerts", "clicks"} {
		spoolEvents(t, dir, c, 0, old)
	}
	time.Sleep(maxAge + 100*time.Millisecond) // the first events are now past the max age
	for _, c := range []string{"alerts", "clicks"} {
		spoolEvents(t, dir, c, old, fresh)
	}
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	// The stream exists before the node starts, so that no first publish
	// fails and the stream's order is the order the node sent in.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.>"}}); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, dir, nc, func(o *aggregator.Options) {
		o.Classes = expiryClasses(maxAge)
		o.DuplicateWindow = 2 * time.Minute // the stream's, the server's default
	})
	bs := readBatches(t, nc, 30*time.Second, func(bs []streamBatch) bool { return eventsIn(bs, "") >= old+2*fresh })
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	seen := make(map[string]int)
	var lastFresh, firstStale uint64
	var demoted int
	for _, b := range bs {
		for _, id := range b.ids {
			seen[id]++
		}
		stale := b.header.Get("Sluice-Stale")
		if b.Class == "clicks" && stale != "" {
			t.Errorf("clicks (expire: drop): batch %d-%d labelled stale", b.First, b.Last)
		}
		if b.Class != "alerts" {
			continue
		}
		for _, id := range b.ids {
			k, _ := strconv.Atoi(strings.TrimPrefix(id, "alerts-"))
			if isOld := k < old; isOld != (stale != "") {
				t.Errorf("alerts: %s (old: %v) in a batch with Sluice-Stale %q", id, isOld, stale)
			}
		}
		if stale == "" {
			lastFresh = max(lastFresh, b.seq)
			continue
		}
		if stale != "2" {
			t.Errorf("alerts: Sluice-Stale %q, want the max age in seconds, 2", stale)
		}
		demoted += b.Count
		if firstStale == 0 {
			firstStale = b.seq
		}
	}
	exactlyOnce(t, keep(seen, "alerts-"), old+fresh, "alerts")
	clicks := keep(seen, "clicks-")
	for i := range old + fresh {
		if want := b2i(i >= old); clicks["clicks-"+strconv.Itoa(i)] != want {
			t.Errorf("clicks-%d seen %d times, want %d", i, clicks["clicks-"+strconv.Itoa(i)], want)
		}
	}
	if firstStale < lastFresh {
		t.Errorf("alerts: a stale batch (stream seq %d) went before a newer one (%d)", firstStale, lastFresh)
	}
	st := n.Stats()
	if a := st.Classes["alerts"]; a.Demoted != old || demoted != old || a.Expired != 0 || a.Depth != 0 {
		t.Errorf("alerts: demoted %d (%d in stale batches), expired %d, depth %d; want %d, %d, 0, 0", a.Demoted, demoted, a.Expired, a.Depth, old, old)
	}
	if c := st.Classes["clicks"]; c.Expired != old || c.Demoted != 0 || c.Acked != fresh || c.Depth != 0 {
		t.Errorf("clicks: expired %d, demoted %d, acked %d, depth %d; want %d, 0, %d, 0", c.Expired, c.Demoted, c.Acked, c.Depth, old, fresh)
	}
}

func keep(seen map[string]int, prefix string) map[string]int {
	out := make(map[string]int)
	for id, k := range seen {
		if strings.HasPrefix(id, prefix) {
			out[id] = k
		}
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDemotedSurviveRestart: a node with set-aside (demoted) events whose
// upstream is unreachable claims its newer batches and some old ones,
// and is stopped hard. The spool then holds claims with unclaimed events
// below the last of them; the next node republishes the claims and ships
// the unclaimed events too: every event once.
func TestDemotedSurviveRestart(t *testing.T) {
	const maxAge = 2 * time.Second
	const old, fresh = 200, 50
	dir := t.TempDir()
	spoolEvents(t, dir, "alerts", 0, old)
	time.Sleep(maxAge + 100*time.Millisecond)
	spoolEvents(t, dir, "alerts", old, fresh)

	port := freePort(t)
	nc := nodeConn(t, fmt.Sprintf("nats://127.0.0.1:%d", port)) // nothing listens yet
	classes := expiryClasses(maxAge)[:1]
	n := newNode(t, dir, nc, func(o *aggregator.Options) { o.Classes = classes })
	for deadline := guard(0); n.Stats().Classes["alerts"].InFlight < 16; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: in flight %d after %v, want the window of 16", n.Stats().Classes["alerts"].InFlight, hangGuard)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Shutdown(ctx) // hard stop: what is in flight stays claimed

	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	claims := sp.Claims("alerts")
	sp.Close()
	gap := false
	for i := 1; i < len(claims); i++ {
		gap = gap || claims[i].First > claims[i-1].Last+1
	}
	if !gap {
		t.Fatalf("claims %v: no unclaimed events below a claim; the test needs some", claims)
	}

	startAt(t, t.TempDir(), port)
	n = newNode(t, dir, nc, func(o *aggregator.Options) { o.Classes = classes })
	exactlyOnce(t, collect(t, nc, old+fresh, 30*time.Second), old+fresh, "alerts")
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := n.Stats().Classes["alerts"].Depth; d != 0 {
		t.Errorf("depth %d after the drain, want 0", d)
	}
}
