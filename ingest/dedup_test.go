package ingest

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDedupSteps runs step tables over fixed instants. Each step filters
// or commits the events of one request; an event is "source/id", or "-"
// for an event without id.
func TestDedupSteps(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at       time.Duration // after t0
		op       string        // filter, commit, seen, unseen
		events   string        // space-separated
		kept     string        // filter: the events kept
		wantStat *dedupStats   // checked after the step when set
	}
	tests := []struct {
		name  string
		ttl   time.Duration
		max   int
		steps []step
	}{
		{
			name: "commit only after success",
			steps: []step{
				{op: "filter", events: "w/a w/b", kept: "w/a w/b"},
				// The append failed (429): nothing committed, the retry passes.
				{at: time.Second, op: "filter", events: "w/a w/b", kept: "w/a w/b"},
				{at: time.Second, op: "commit", events: "w/a w/b"},
				{at: 2 * time.Second, op: "filter", events: "w/a w/c w/b", kept: "w/c",
					wantStat: &dedupStats{Dropped: 2, Committed: 2, Entries: 2}},
			},
		},
		{
			name: "expiry at exactly the TTL",
			ttl:  time.Minute,
			steps: []step{
				{op: "commit", events: "w/a"},
				{at: 30 * time.Second, op: "commit", events: "w/b"},
				{at: time.Minute - 1, op: "seen", events: "w/a w/b"},
				{at: time.Minute, op: "unseen", events: "w/a"},
				{at: time.Minute, op: "seen", events: "w/b"},
				{at: time.Minute + 30*time.Second, op: "filter", events: "w/a w/b", kept: "w/a w/b",
					wantStat: &dedupStats{Committed: 2, Expired: 2}},
			},
		},
		{
			name: "a repeat does not extend the TTL",
			ttl:  time.Minute,
			steps: []step{
				{op: "commit", events: "w/a"},
				{at: 50 * time.Second, op: "commit", events: "w/a"},
				{at: time.Minute, op: "unseen", events: "w/a",
					wantStat: &dedupStats{Committed: 1, Expired: 1}},
			},
		},
		{
			name: "capacity evicts the oldest first",
			max:  3,
			steps: []step{
				{op: "commit", events: "w/a w/b"},
				{at: time.Second, op: "commit", events: "w/c w/d"},
				{at: time.Second, op: "unseen", events: "w/a"},
				{at: time.Second, op: "seen", events: "w/b w/c w/d"},
				{at: 2 * time.Second, op: "commit", events: "w/e w/f w/g w/h"},
				{at: 2 * time.Second, op: "filter", events: "w/a w/b w/c w/d w/e w/f w/g w/h", kept: "w/a w/b w/c w/d w/e",
					wantStat: &dedupStats{Dropped: 3, Committed: 8, Evicted: 5, Entries: 3}},
			},
		},
		{
			name: "repeats within a request keep the first",
			steps: []step{
				{op: "filter", events: "w/a w/b w/a - w/c w/b - w/a", kept: "w/a w/b - w/c -",
					wantStat: &dedupStats{Dropped: 3}},
				{op: "commit", events: "w/a w/b - w/c -"},
				{op: "filter", events: "- w/a -", kept: "- -",
					wantStat: &dedupStats{Dropped: 4, Committed: 3, Entries: 3}},
			},
		},
		{
			name: "sources are separate",
			steps: []step{
				{op: "commit", events: "web/a"},
				{op: "filter", events: "ios/a web/a we/ba", kept: "ios/a we/ba"},
			},
		},
		{
			name: "instants never go back",
			ttl:  time.Minute,
			steps: []step{
				{at: time.Minute, op: "commit", events: "w/a"},
				{at: 0, op: "commit", events: "w/b"}, // counts as t0+1m
				{at: 2*time.Minute - 1, op: "seen", events: "w/a w/b"},
				{at: 2 * time.Minute, op: "unseen", events: "w/a w/b"},
			},
		},
		{
			name: "commit of a request with repeats and no ids",
			steps: []step{
				{op: "commit", events: "w/a w/a - -",
					wantStat: &dedupStats{Committed: 1, Entries: 1}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDedup(tt.ttl, tt.max)
			keyOf := func(ev string) dedupKey {
				if ev == "-" {
					return d.key("", nil)
				}
				src, id, _ := strings.Cut(ev, "/")
				return d.key(src, []byte(id))
			}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				names := strings.Fields(s.events)
				keys := make([]dedupKey, len(names))
				events := make([][]byte, len(names))
				for j, n := range names {
					keys[j], events[j] = keyOf(n), []byte(n)
				}
				switch s.op {
				case "filter":
					kk, ee, dropped := dedupFilterAt(d, now, keys, events)
					var got []string
					for j, e := range ee {
						got = append(got, string(e))
						if kk[j] != keyOf(string(e)) {
							t.Fatalf("step %d: key %d does not match event %s", i, j, e)
						}
					}
					if want := strings.Fields(s.kept); !slices.Equal(got, want) {
						t.Fatalf("step %d: kept %v, want %v", i, got, want)
					}
					if dropped != len(names)-len(got) {
						t.Fatalf("step %d: dropped %d, want %d", i, dropped, len(names)-len(got))
					}
				case "commit":
					d.commitAt(now, keys)
				case "seen", "unseen":
					for j, k := range keys {
						if got := d.seenAt(now, k); got != (s.op == "seen") {
							t.Fatalf("step %d: seenAt(%s) = %v", i, names[j], got)
						}
					}
				default:
					t.Fatalf("step %d: bad op %q", i, s.op)
				}
				if s.wantStat != nil {
					if got := d.stats(); got != *s.wantStat {
						t.Fatalf("step %d: stats %+v, want %+v", i, got, *s.wantStat)
					}
				}
			}
		})
	}
}

// TestDedupLargeRequest covers repeats within requests of many sizes, and
// the scratch index across calls.
func TestDedupLargeRequest(t *testing.T) {
	d := newDedup(0, 0)
	now := time.Unix(1e9, 0)
	for round, distinct := range []int{1, 3, 64, 1000, 64, 3 * maxScratch, 5} {
		var keys []dedupKey
		for i := range 5 * distinct {
			keys = append(keys, d.key("w", []byte(strconv.Itoa(round*1e6+i%distinct))))
		}
		kept, _, dropped := dedupFilterAt[[]byte](d, now, keys, nil)
		if len(kept) != distinct || dropped != 4*distinct {
			t.Fatalf("round %d: kept %d dropped %d", round, len(kept), dropped)
		}
		for i, k := range kept {
			if k != d.key("w", []byte(strconv.Itoa(round*1e6+i))) {
				t.Fatalf("round %d: kept[%d] is not the first of its id", round, i)
			}
		}
		if len(d.scratch) > maxScratch || slices.ContainsFunc(d.scratch, func(x int32) bool { return x != 0 }) {
			t.Fatalf("round %d: scratch of %d slots left behind, or not cleared", round, len(d.scratch))
		}
	}
}

// TestDedupFilterEvents filters a slice of structs, as the handler's
// decoded events are, and checks the dropped tail is zeroed.
func TestDedupFilterEvents(t *testing.T) {
	type event struct {
		Body, ID []byte
	}
	d := newDedup(0, 0)
	now := time.Unix(1e9, 0)
	events := []event{{[]byte("{1}"), []byte("a")}, {[]byte("{2}"), nil}, {[]byte("{3}"), []byte("a")}, {[]byte("{4}"), []byte("b")}}
	keys := make([]dedupKey, len(events))
	for i, e := range events {
		keys[i] = d.key("w", e.ID)
	}
	all := events
	keys, events, dropped := dedupFilterAt(d, now, keys, events)
	if dropped != 1 || len(events) != 3 || string(events[2].Body) != "{4}" || all[3].Body != nil {
		t.Fatalf("kept %q, dropped %d, tail %q", events, dropped, all[3:])
	}
	d.commitAt(now, keys)
	if !d.seenAt(now, d.key("w", []byte("b"))) || d.seenAt(now, d.key("v", []byte("b"))) {
		t.Fatal("commit")
	}
}

func TestDedupKey(t *testing.T) {
	d := newDedup(0, 0)
	if d.key("w", nil) != (dedupKey{}) || d.key("w", []byte{}) != (dedupKey{}) {
		t.Fatal("empty id must give the zero key")
	}
	if d.key("a", []byte("bc")) == d.key("ab", []byte("c")) {
		t.Fatal("source and id boundary is ambiguous")
	}
	long := strings.Repeat("x", 1000) // beyond the stack buffer
	if d.key(long, []byte(long)) != d.key(long, []byte(long)) || d.key(long, []byte(long)) == d.key(long, []byte(long+"y")) {
		t.Fatal("long keys")
	}
	if newDedup(0, 0).key("w", []byte("a")) == d.key("w", []byte("a")) {
		t.Fatal("two windows share seeds")
	}
}

func TestDedupNil(t *testing.T) {
	var d *dedup
	keys := []dedupKey{d.key("w", []byte("a")), {1, 2}, {1, 2}}
	kept, _, dropped := dedupFilterAt[[]byte](d, time.Now(), keys, nil)
	d.commitAt(time.Now(), kept)
	if len(kept) != 3 || dropped != 0 || d.seenAt(time.Now(), dedupKey{1, 2}) || d.stats() != (dedupStats{}) {
		t.Fatal("a nil *dedup must keep everything and record nothing")
	}
}

// TestDedupModel runs random requests against a plain map model, over a
// small capacity so the ring wraps, grows and evicts.
func TestDedupModel(t *testing.T) {
	const ttl, maxEntries = 100 * time.Second, 1500
	rng := rand.New(rand.NewPCG(1, 2))
	d := newDedup(ttl, maxEntries)
	type entry struct {
		id string
		at time.Time
	}
	var model []entry                   // commit order
	committed := map[string]time.Time{} // the ids in model
	now := time.Unix(1e9, 0)
	live := func(id string) bool {
		at, ok := committed[id]
		return ok && now.Sub(at) < ttl
	}
	for step := range 3000 {
		now = now.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
		n := 1 + rng.IntN(60)
		ids := make([]string, n)
		keys := make([]dedupKey, n)
		events := make([][]byte, n)
		for i := range ids {
			ids[i] = strconv.Itoa(rng.IntN(4000))
			keys[i], events[i] = d.key("w", []byte(ids[i])), []byte(ids[i])
		}
		var want []string
		for _, id := range ids {
			if !live(id) && !slices.Contains(want, id) {
				want = append(want, id)
			}
		}
		kept, ev, _ := dedupFilterAt(d, now, keys, events)
		var got []string
		for _, e := range ev {
			got = append(got, string(e))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: kept %v, want %v", step, got, want)
		}
		if rng.IntN(4) == 0 {
			continue // the append failed: no commit
		}
		d.commitAt(now, kept)
		// The model: forget the expired, record, evict beyond capacity.
		for len(model) > 0 && now.Sub(model[0].at) >= ttl {
			delete(committed, model[0].id)
			model = model[1:]
		}
		for _, id := range got {
			model = append(model, entry{id, now})
			committed[id] = now
		}
		for len(model) > maxEntries {
			delete(committed, model[0].id)
			model = model[1:]
		}
		if s := d.stats(); s.Entries != len(model) {
			t.Fatalf("step %d: %d entries, model %d", step, s.Entries, len(model))
		}
		checkDedupIndex(t, d)
	}
	if s := d.stats(); s.Evicted == 0 || s.Expired == 0 || s.Dropped == 0 {
		t.Fatalf("the model run missed a path: %+v", s)
	}
}

// checkDedupIndex checks that the index holds exactly the ring's entries.
func checkDedupIndex(t *testing.T, d *dedup) {
	t.Helper()
	used := 0
	for _, s := range d.index {
		if s != 0 {
			used++
		}
	}
	if used != d.n {
		t.Fatalf("index holds %d slots for %d entries", used, d.n)
	}
	for i := range d.n {
		pos := (d.head + i) % len(d.ring)
		slot, ok := d.find(d.ring[pos].key)
		if !ok || int(uint32(d.index[slot]))-1 != pos {
			t.Fatalf("entry %d at ring position %d: indexed %v at slot %d", i, pos, ok, slot)
		}
	}
}

// TestDedupMemory fills a default window and measures its bytes per entry
// against the bound the doc states.
func TestDedupMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 1,000,000 entries")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := newDedup(0, 0)
	now := time.Unix(1e9, 0)
	keys := make([]dedupKey, 1000)
	var id [8]byte
	for i := range defaultDedupMaxEntries / len(keys) {
		for j := range keys {
			n := i*len(keys) + j
			id = [8]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
			keys[j] = d.key("w", id[:])
		}
		d.commitAt(now, keys)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / defaultDedupMaxEntries
	t.Logf("%d entries: %.1f bytes per entry", d.stats().Entries, perEntry)
	if d.stats().Entries != defaultDedupMaxEntries || perEntry > 42 { // 40.8 by the formula, and a little slack
		t.Fatalf("%d entries at %.1f bytes each; doc says 41", d.stats().Entries, perEntry)
	}
	runtime.KeepAlive(d)
}

// BenchmarkDedup measures key + dedupFilterAt + commitAt of 100-event requests
// with new UUIDs, per event, on a full window of 10,000 (in cache) and of
// the default 1,000,000 (each commit also evicts the oldest):
//
//	go test ./ingest -run '^$' -bench Dedup -benchmem
func BenchmarkDedup(b *testing.B) {
	for _, c := range []struct {
		name string
		max  int
	}{{"window=10k", 10_000}, {"window=1M", defaultDedupMaxEntries}} {
		b.Run(c.name, func(b *testing.B) {
			d := newDedup(time.Hour, c.max)
			now := time.Unix(1e9, 0)
			const batch = 100
			keys := make([]dedupKey, batch)
			events := make([][]byte, batch)
			ids := make([][]byte, batch)
			for i := range ids {
				ids[i] = []byte("00000000-2b3c-4d5e-8f90-a1b2c3d4e5f6") // a UUID
			}
			n := uint32(0)
			next := func() { // writes the next batch's ids: a few ns each
				for _, id := range ids {
					for j := range 8 {
						id[j] = "0123456789abcdef"[n>>(28-4*j)&0xf]
					}
					n++
				}
			}
			for range c.max / batch { // fill the window
				next()
				for i := range keys {
					keys[i] = d.key("web", ids[i])
				}
				d.commitAt(now, keys)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				next()
				for i := range keys {
					keys[i], events[i] = d.key("web", ids[i]), ids[i]
				}
				kept, _, dropped := dedupFilterAt(d, now, keys, events)
				if dropped != 0 {
					b.Fatalf("dropped %d new ids", dropped)
				}
				d.commitAt(now, kept)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
		})
	}
}
