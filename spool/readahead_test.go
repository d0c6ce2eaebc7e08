package spool

import (
	"slices"
	"testing"
)

// TestReadahead checks which segments reads ask the kernel to read ahead:
// the sealed segment a read opens and the one after it, each once, never
// the tail (its pages were just written).
func TestReadahead(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentBytes: mib})
	for i := 0; len(segFiles(t, dir, "c")) < 5; i++ {
		mustAppend(t, s, "c", events("e", 100, 1000))
	}
	c := s.lookup("c")
	asked := func() (got []bool, firsts []uint64) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, seg := range c.segs {
			got = append(got, seg.readahead)
			firsts = append(firsts, seg.first)
		}
		return got, firsts
	}
	readAt := func(seq uint64) {
		t.Helper()
		if _, err := s.Read("c", seq, 1, 0, func(Entry) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	got, firsts := asked()
	n := len(firsts)
	if n != 5 {
		t.Fatalf("%d segments, want 5", n)
	}
	if slices.Contains(got, true) {
		t.Fatalf("before any read: readahead %v", got)
	}
	want := make([]bool, n)
	for k, w := range []struct {
		seq   uint64
		ahead int // segments asked for so far: a prefix
	}{
		{firsts[0], 2},     // the first sealed segment and the next
		{firsts[0] + 1, 2}, // the same segment again: nothing new
		{firsts[1], 3},     // the next one was asked for; the one after it now
		{firsts[n-2], n - 1},
		{firsts[n-1], n - 1}, // the tail: never
	} {
		readAt(w.seq)
		for i := range want {
			want[i] = i < w.ahead
		}
		if got, _ := asked(); !slices.Equal(got, want) {
			t.Errorf("read %d at seq %d: readahead %v, want %v", k, w.seq, got, want)
		}
	}
}
