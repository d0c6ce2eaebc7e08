package spool

import (
	"bytes"
	"errors"
	"runtime/debug"
	"slices"
	"testing"
)

func decodeAll(v []byte) (int64, [][]byte, error) {
	rec, err := parseRecord(v)
	if err != nil {
		return 0, nil, err
	}
	var out [][]byte
	rest := rec.events
	for range rec.count {
		var e []byte
		e, rest = nextEvent(rest)
		out = append(out, e)
	}
	return rec.time, out, nil
}

func TestRecordRoundTrip(t *testing.T) {
	for _, evs := range [][][]byte{
		{{}},
		{[]byte(`{"a":1}`)},
		{[]byte("x"), {}, bytes.Repeat([]byte("y"), 300), []byte("z")},
	} {
		v := encodeRecord(42, evs)
		if len(v) != encodedSize(evs) {
			t.Fatalf("size %d, encodedSize %d", len(v), encodedSize(evs))
		}
		tm, got, err := decodeAll(v)
		if err != nil || tm != 42 || !slices.EqualFunc(got, evs, bytes.Equal) {
			t.Fatalf("decode = %d %q %v", tm, got, err)
		}
		for i := range v { // any single bit flip is detected
			w := bytes.Clone(v)
			w[i] ^= 1
			if _, err := parseRecord(w); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip at %d not detected", i)
			}
		}
		if _, err := parseRecord(v[:len(v)-1]); err == nil {
			t.Fatal("truncated record accepted")
		}
	}
}

func FuzzRecord(f *testing.F) {
	f.Add(encodeRecord(1, [][]byte{[]byte(`{"a":1}`)}))
	f.Add(encodeRecord(-1, [][]byte{{}, []byte("b"), bytes.Repeat([]byte{0}, 200)}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		tm, evs, err := decodeAll(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// A record that parses re-encodes to itself.
		if w := encodeRecord(tm, evs); !bytes.Equal(w, v) {
			t.Fatalf("re-encoding differs:\n%x\n%x", v, w)
		}
	})
}

func TestAckSet(t *testing.T) {
	var a ackSet
	for i, st := range []struct {
		add    Range
		newly  uint64
		cursor uint64
		ranges []Range
	}{
		{Range{5, 6}, 2, 0, []Range{{5, 6}}},
		{Range{9, 9}, 1, 0, []Range{{5, 6}, {9, 9}}},
		{Range{7, 8}, 2, 0, []Range{{5, 9}}}, // bridges two ranges
		{Range{4, 10}, 2, 0, []Range{{4, 10}}},
		{Range{2, 2}, 1, 0, []Range{{2, 2}, {4, 10}}},
		{Range{1, 1}, 1, 2, []Range{{4, 10}}},
		{Range{1, 3}, 1, 10, nil},
		{Range{1, 10}, 0, 10, nil},
		{Range{20, 30}, 11, 10, []Range{{20, 30}}},
		{Range{11, 25}, 9, 30, nil},
	} {
		if n := a.add(st.add); n != st.newly || a.cursor != st.cursor || !slices.Equal(a.ranges, st.ranges) {
			t.Fatalf("step %d add %v: newly %d cursor %d ranges %v; want %d %d %v", i, st.add, n, a.cursor, a.ranges, st.newly, st.cursor, st.ranges)
		}
	}
	a = ackSet{cursor: 3, ranges: []Range{{6, 7}, {10, 12}}}
	for _, tc := range []struct {
		seq, next uint64
		acked     bool
	}{{1, 4, true}, {4, 4, false}, {6, 8, true}, {8, 8, false}, {11, 13, true}, {13, 13, false}} {
		if a.acked(tc.seq) != tc.acked || a.nextLive(tc.seq) != tc.next {
			t.Errorf("seq %d: acked %v nextLive %d", tc.seq, a.acked(tc.seq), a.nextLive(tc.seq))
		}
	}
	if got := a.live(Range{1, 12}); got != 4 { // 4, 5, 8, 9
		t.Errorf("live = %d", got)
	}
	if (Range{}).Len() != 0 || (Range{3, 2}).Len() != 0 || (Range{2, 3}).Len() != 2 {
		t.Error("Range.Len")
	}
}

// TestAppendReusesRecords: an Append's record buffer goes back to the
// spool's pool once committed and the next Append encodes into it; the
// events of both read back intact after a reopen (bbolt keeps no
// reference to a committed value).
func TestAppendReusesRecords(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	a, b := events("a", 50, 1000), events("b", 50, 1000)
	// A GC may empty a sync.Pool: none runs between the Put and the Get.
	// Under the race detector a Put drops the item one time in four: a
	// few tries.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	pooled := false
	for range 20 {
		mustAppend(t, s, "c", a)
		p := s.getRec()
		pooled = cap(*p) >= encodedSize(a)
		s.recs.Put(p)
		if pooled {
			break
		}
	}
	if !pooled {
		t.Fatal("no record buffer back in the pool after 20 Appends")
	}
	n := len(readAll(t, s, "c", 1000)) / len(a)
	mustAppend(t, s, "c", b)
	huge := events("h", 5, maxPooledRecord/4)
	mustAppend(t, s, "c", huge)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	got := readAll(t, s, "c", 1000)
	var want [][]byte
	for range n {
		want = append(want, a...)
	}
	want = append(append(want, b...), huge...)
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i, g := range got {
		if !bytes.Equal(g.data, want[i]) {
			t.Fatalf("event %d: %.20q, want %.20q", i+1, g.data, want[i])
		}
	}
	checkConsistent(t, s)
}
