package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		f    Fsync
		fErr bool
	}{{"always", FsyncAlways, false}, {"interval", FsyncInterval, false}, {"never", FsyncNever, false}, {"", 0, true}, {"Always", 0, true}} {
		f, err := ParseFsync(tc.in)
		if (err != nil) != tc.fErr || err == nil && (f != tc.f || f.String() != tc.in) {
			t.Errorf("ParseFsync(%q) = %v, %v", tc.in, f, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("ParseFsync(%q) error %v does not wrap ErrInvalidOptions", tc.in, err)
		}
	}
	for _, tc := range []struct {
		in   string
		o    Overflow
		oErr bool
	}{{"block", Block, false}, {"drop_oldest", DropOldest, false}, {"drop_newest", DropNewest, false}, {"drop", 0, true}} {
		o, err := ParseOverflow(tc.in)
		if (err != nil) != tc.oErr || err == nil && (o != tc.o || o.String() != tc.in) {
			t.Errorf("ParseOverflow(%q) = %v, %v", tc.in, o, err)
		}
	}
	if Fsync(7).String() != "Fsync(7)" || Overflow(-1).String() != "Overflow(-1)" {
		t.Error("String of out-of-range values")
	}
}

func TestOpenInvalidOptions(t *testing.T) {
	for _, o := range []Options{
		{Fsync: 3},
		{FsyncInterval: -1},
		{SegmentBytes: mib - 1},
		{SegmentBytes: 1 << 40},
		{MaxBytes: -1},
		{Default: ClassOptions{MaxBytes: -1}},
		{Default: ClassOptions{Overflow: 9}},
		{Classes: map[string]ClassOptions{"a.b": {}}},
		{Classes: map[string]ClassOptions{"ok": {Overflow: -1}}},
	} {
		s, err := Open(t.TempDir(), o)
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v) = %v, want ErrInvalidOptions", o, err)
		}
		if err := s.Close(); err != nil { // Close after a failed Open is safe
			t.Errorf("Close of failed Open: %v", err)
		}
	}
}

func TestInValidClass(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	for _, name := range []string{"", "a.b", "a b", "é", "quarantine", string(make([]byte, 65)), "x/y"} {
		if _, err := s.Append(context.Background(), name, [][]byte{{1}}); !errors.Is(err, ErrInvalidClass) {
			t.Errorf("Append(%q) = %v", name, err)
		}
		if _, err := s.Read(name, 0, 1, 0, func(Entry) error { return nil }); !errors.Is(err, ErrInvalidClass) {
			t.Errorf("Read(%q) = %v", name, err)
		}
		if err := s.Ack(name, Range{1, 1}); !errors.Is(err, ErrInvalidClass) {
			t.Errorf("Ack(%q) = %v", name, err)
		}
		if err := s.Claim(name, Range{1, 1}); !errors.Is(err, ErrInvalidClass) {
			t.Errorf("Claim(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"a", "critical", "A-b_9", string(bytes.Repeat([]byte("x"), 64))} {
		if !ValidClass(name) {
			t.Errorf("ValidClass(%q) = false", name)
		}
	}
}

func TestEmptyAppendAndUnknownClass(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	r, err := s.Append(context.Background(), "a", nil)
	if err != nil || r != (Range{}) {
		t.Fatalf("empty Append = %v, %v", r, err)
	}
	next, err := s.Read("nope", 5, 10, 0, func(Entry) error { t.Fatal("called"); return nil })
	if err != nil || next != 5 {
		t.Fatalf("Read unknown = %d, %v", next, err)
	}
	if s.Last("nope") != 0 || s.Acked("nope") != 0 || s.Claims("nope") != nil || len(s.Classes()) != 0 {
		t.Fatal("unknown class has state")
	}
	if err := s.Ack("nope", Range{1, 1}); !errors.Is(err, ErrInvalidRange) {
		t.Fatalf("Ack unknown = %v", err)
	}
}

func TestAppendReadAckAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentBytes: mib})
	const calls, per, size = 40, 100, 1000
	var want [][]byte
	for i := range calls {
		evs := events(fmt.Sprintf("c%d", i), per, size)
		r := mustAppend(t, s, "a", evs)
		if r.First != uint64(i*per+1) {
			t.Fatalf("call %d: range %v", i, r)
		}
		want = append(want, evs...)
	}
	st := s.Stats().Classes["a"]
	if st.Segments < 3 {
		t.Fatalf("%d segments for %d bytes of 1 MiB segments", st.Segments, calls*per*size)
	}
	if st.Appended != calls*per || st.AppendedBytes != calls*per*size || st.Depth != calls*per || st.OldestTime == 0 {
		t.Fatalf("stats %+v", st)
	}
	checkConsistent(t, s)

	// Read in uneven batches: every event once, in order, intact.
	all := readAll(t, s, "a", 37)
	if len(all) != len(want) {
		t.Fatalf("read %d events, want %d", len(all), len(want))
	}
	for i, g := range all {
		if g.seq != uint64(i+1) || !bytes.Equal(g.data, want[i]) {
			t.Fatalf("event %d: seq %d data %.20q", i, g.seq, g.data)
		}
	}
	// maxBytes limits, but at least one event is delivered.
	n := 0
	next, err := s.Read("a", 1, 0, 1, func(Entry) error { n++; return nil })
	if err != nil || n != 1 || next != 2 {
		t.Fatalf("Read maxBytes=1: n=%d next=%d err=%v", n, next, err)
	}
	n = 0
	if next, err = s.Read("a", 1, 0, 2500, func(Entry) error { n++; return nil }); n != 2 || next != 3 {
		t.Fatalf("Read maxBytes=2500: n=%d next=%d err=%v", n, next, err)
	}
	// A callback error stops the read at the refused event.
	boom := errors.New("boom")
	next, err = s.Read("a", 10, 100, 0, func(e Entry) error {
		if e.Seq == 12 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || next != 12 {
		t.Fatalf("Read with failing callback = %d, %v", next, err)
	}

	// Ack everything in batches: sealed segments are deleted, the tail stays.
	last := s.Last("a")
	for f := uint64(1); f <= last; f += 250 {
		if err := s.Ack("a", Range{f, min(f+249, last)}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Acked("a") != last {
		t.Fatalf("Acked = %d, want %d", s.Acked("a"), last)
	}
	st = s.Stats().Classes["a"]
	if st.Segments != 1 || len(segFiles(t, dir, "a")) != 1 || st.Depth != 0 || st.Acked != last || st.OldestTime != 0 {
		t.Fatalf("after acking all: %+v, files %v", st, segFiles(t, dir, "a"))
	}
	if st.Bytes > 2*mib {
		t.Fatalf("disk bytes after acking all: %d", st.Bytes)
	}
	if got := readAll(t, s, "a", 100); len(got) != 0 {
		t.Fatalf("read %d events after acking all", len(got))
	}
	checkConsistent(t, s)
	// Appending continues after the last seq.
	if r := mustAppend(t, s, "a", events("x", 3, 10)); r.First != last+1 {
		t.Fatalf("append after acks: %v", r)
	}
}

func TestGroupCommit(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	const writers, calls, per = 64, 10, 5
	var mu sync.Mutex
	ranges := map[Range][]byte{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range calls {
				tag := fmt.Sprintf("w%d-%d", w, i)
				r, err := s.Append(context.Background(), "g", events(tag, per, 50))
				if err != nil || r.Len() != per {
					t.Errorf("Append: %v, %v", r, err)
					return
				}
				mu.Lock()
				ranges[r] = []byte(tag)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := s.Stats().Classes["g"]
	if st.Commits >= writers*calls/2 {
		t.Errorf("%d commits for %d appends: no group commit", st.Commits, writers*calls)
	}
	t.Logf("%d appends in %d commits", writers*calls, st.Commits)
	seen := make([]bool, writers*calls*per+1)
	for r, tag := range ranges {
		for q := r.First; q <= r.Last; q++ {
			if q >= uint64(len(seen)) || seen[q] {
				t.Fatalf("seq %d repeated or out of bounds", q)
			}
			seen[q] = true
		}
		i := 0
		_, err := s.Read("g", r.First, per, 0, func(e Entry) error {
			if e.Seq != r.First+uint64(i) || !bytes.Equal(e.Data, event(string(tag), i, 50)) {
				t.Errorf("range %v event %d: seq %d data %q", r, i, e.Seq, e.Data)
			}
			i++
			return nil
		})
		if err != nil || i != per {
			t.Fatalf("read %v: %d events, %v", r, i, err)
		}
	}
	if !slices.Equal(seen[1:], slices.Repeat([]bool{true}, writers*calls*per)) {
		t.Fatal("seqs not contiguous")
	}
}

func TestReopenResumes(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: mib})
	if err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if len(id) != 32 {
		t.Fatalf("ID %q", id)
	}
	for range 30 {
		mustAppend(t, s, "a", events("e", 100, 1000))
	}
	mustAppend(t, s, "b", events("b", 5, 10))
	if err := s.Ack("a", Range{1, 1234}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	s = openT(t, dir, Options{SegmentBytes: mib})
	if s.ID() != id {
		t.Fatalf("ID changed: %s -> %s", id, s.ID())
	}
	if got := s.Classes(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Classes = %v", got)
	}
	if s.Acked("a") != 1234 || s.Last("a") != 3000 || s.Last("b") != 5 {
		t.Fatalf("Acked %d Last %d/%d", s.Acked("a"), s.Last("a"), s.Last("b"))
	}
	var first uint64
	if _, err := s.Read("a", 0, 1, 0, func(e Entry) error { first = e.Seq; return nil }); err != nil || first != 1235 {
		t.Fatalf("first read after reopen: %d, %v", first, err)
	}
	if r := mustAppend(t, s, "a", events("n", 1, 10)); r.First != 3001 {
		t.Fatalf("append after reopen: %v", r)
	}
	checkConsistent(t, s)
}

func TestOutOfOrderAcks(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	mustAppend(t, s, "a", events("e", 10, 10))
	steps := []struct {
		ack    Range
		acked  uint64
		reads  []uint64
		claims []Range
	}{
		{Range{3, 4}, 0, []uint64{1, 2, 5, 6, 7, 8, 9, 10}, nil},
		{Range{7, 7}, 0, []uint64{1, 2, 5, 6, 8, 9, 10}, nil},
		{Range{1, 1}, 1, []uint64{2, 5, 6, 8, 9, 10}, nil},
		{Range{2, 2}, 4, []uint64{5, 6, 8, 9, 10}, nil},
		{Range{5, 6}, 7, []uint64{8, 9, 10}, nil},
		{Range{1, 8}, 8, []uint64{9, 10}, nil}, // overlapping re-ack
		{Range{10, 10}, 8, []uint64{9}, nil},
		{Range{9, 9}, 10, nil, nil},
	}
	for i, st := range steps {
		if err := s.Ack("a", st.ack); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		var reads []uint64
		for _, g := range readAll(t, s, "a", 3) {
			reads = append(reads, g.seq)
		}
		if s.Acked("a") != st.acked || !slices.Equal(reads, st.reads) {
			t.Fatalf("step %d: Acked %d reads %v, want %d %v", i, s.Acked("a"), reads, st.acked, st.reads)
		}
		if d := s.Stats().Classes["a"].Depth; d != uint64(len(st.reads)) {
			t.Fatalf("step %d: Depth %d", i, d)
		}
	}
	for _, r := range []Range{{0, 1}, {5, 4}, {10, 11}} {
		if err := s.Ack("a", r); !errors.Is(err, ErrInvalidRange) {
			t.Errorf("Ack(%v) = %v", r, err)
		}
	}
	if got := s.Stats().Classes["a"].Acked; got != 10 {
		t.Errorf("Stats Acked = %d, want 10", got)
	}
}

func TestClaims(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "a", events("e", 100, 10))
	for _, r := range []Range{{21, 40}, {1, 20}, {41, 60}} {
		if err := s.Claim("a", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Claim("a", Range{90, 101}); !errors.Is(err, ErrInvalidRange) {
		t.Fatalf("Claim beyond last = %v", err)
	}
	if err := s.Ack("a", Range{41, 60}); err != nil { // out of order: claim gone from Claims
		t.Fatal(err)
	}
	if got := s.Claims("a"); !slices.Equal(got, []Range{{1, 20}, {21, 40}}) {
		t.Fatalf("Claims = %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if got := s.Claims("a"); !slices.Equal(got, []Range{{1, 20}, {21, 40}, {41, 60}}) {
		// 41-60 was acked out of order, and out-of-order acks are not persisted.
		t.Fatalf("Claims after reopen = %v", got)
	}
	if err := s.Ack("a", Range{1, 60}); err != nil {
		t.Fatal(err)
	}
	if got := s.Claims("a"); len(got) != 0 {
		t.Fatalf("Claims after ack = %v", got)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if got := s.Claims("a"); len(got) != 0 || s.Acked("a") != 60 {
		t.Fatalf("after reopen: Claims %v Acked %d", got, s.Acked("a"))
	}
}

func TestOverflow(t *testing.T) {
	const capBytes = 3 * mib
	fill := func(t *testing.T, s *Spool, class string) (n int) {
		for {
			_, err := s.Append(context.Background(), class, events("f", 100, 1000))
			if err != nil {
				return n
			}
			n++
			if n > 100 {
				t.Fatal("cap never reached")
			}
		}
	}
	t.Run("block", func(t *testing.T) {
		s := openT(t, t.TempDir(), Options{SegmentBytes: mib, Default: ClassOptions{MaxBytes: capBytes}})
		fill(t, s, "a")
		before := s.Stats()
		_, err := s.Append(context.Background(), "a", events("x", 100, 1000))
		if !errors.Is(err, ErrFull) {
			t.Fatalf("Append over cap = %v", err)
		}
		after := s.Stats()
		if before.Bytes != after.Bytes || before.Classes["a"].Appended != after.Classes["a"].Appended || s.Last("a") != before.Classes["a"].Appended {
			t.Fatal("refused append changed the spool")
		}
		if after.Bytes > capBytes+256<<10 {
			t.Fatalf("bytes %d over cap %d", after.Bytes, capBytes)
		}
		// Acking makes room again.
		if err := s.Ack("a", Range{1, s.Last("a")}); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, "a", events("x", 100, 1000))
		checkConsistent(t, s)
	})
	t.Run("drop_oldest", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, Options{SegmentBytes: mib, Default: ClassOptions{MaxBytes: capBytes, Overflow: DropOldest}})
		n := 0
		for range 30 { // 3 MB cap, 3 MB written: drops happen
			mustAppend(t, s, "a", events(fmt.Sprint(n), 100, 1000))
			n++
		}
		st := s.Stats()
		dropped := st.Classes["a"].Dropped["drop_oldest"]
		if dropped == 0 || dropped%100 != 0 {
			t.Fatalf("dropped %d", dropped)
		}
		if st.Bytes > capBytes+256<<10 {
			t.Fatalf("bytes %d over cap", st.Bytes)
		}
		all := readAll(t, s, "a", 1000)
		if uint64(len(all))+dropped != 3000 || all[0].seq != dropped+1 || s.Acked("a") != dropped {
			t.Fatalf("read %d events from %d, dropped %d, acked %d", len(all), all[0].seq, dropped, s.Acked("a"))
		}
		// The newest data is all there.
		if last := all[len(all)-1]; last.seq != 3000 || !bytes.Equal(last.data, event("29", 99, 1000)) {
			t.Fatalf("last event %d %.10q", last.seq, last.data)
		}
		checkConsistent(t, s)
	})
	t.Run("drop_newest", func(t *testing.T) {
		s := openT(t, t.TempDir(), Options{SegmentBytes: mib, Default: ClassOptions{MaxBytes: capBytes, Overflow: DropNewest}})
		fill(t, s, "a")
		last := s.Last("a")
		// The size fill was just refused for: a smaller append may still
		// fit below the cap (segments use it fully since layout 2).
		_, err := s.Append(context.Background(), "a", events("x", 100, 1000))
		if !errors.Is(err, ErrDropped) {
			t.Fatalf("Append over cap = %v", err)
		}
		if got := s.Stats().Classes["a"].Dropped["drop_newest"]; got != 200 { // fill's refused call and this one
			t.Fatalf("drop_newest = %d", got)
		}
		if s.Last("a") != last {
			t.Fatal("dropped events got seqs")
		}
		checkConsistent(t, s)
	})
	t.Run("total", func(t *testing.T) {
		s := openT(t, t.TempDir(), Options{SegmentBytes: mib, MaxBytes: capBytes,
			Classes: map[string]ClassOptions{"old": {Overflow: DropOldest}}})
		na := fill(t, s, "a")
		if na == 0 {
			t.Fatal("nothing fitted")
		}
		if _, err := s.Append(context.Background(), "b", events("b", 100, 1000)); !errors.Is(err, ErrFull) {
			t.Fatalf("other class over total cap = %v", err)
		}
		// "old" may drop only its own data: it has none, so it is refused too.
		if _, err := s.Append(context.Background(), "old", events("o", 100, 1000)); !errors.Is(err, ErrFull) {
			t.Fatalf("drop_oldest class with nothing to drop = %v", err)
		}
		if err := s.Ack("a", Range{1, s.Last("a")}); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, "b", events("b", 100, 1000))
		checkConsistent(t, s)
	})
	t.Run("too_large", func(t *testing.T) {
		s := openT(t, t.TempDir(), Options{SegmentBytes: mib})
		if _, err := s.Append(context.Background(), "a", [][]byte{make([]byte, 2*mib)}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("huge append = %v", err)
		}
		// Just below the limit fits, in a segment of its own.
		mustAppend(t, s, "a", events("s", 1, 100))
		big := make([]byte, s.maxRecord-8192)
		mustAppend(t, s, "a", [][]byte{big})
		if got := readAll(t, s, "a", 10); len(got) != 2 || len(got[1].data) != len(big) {
			t.Fatalf("read back %d events", len(got))
		}
		checkConsistent(t, s)
	})
}

func TestAppendAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "a", events("e", 1, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), "a", events("e", 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
	if _, err := s.Read("a", 0, 1, 0, func(Entry) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v", err)
	}
	for name, err := range map[string]error{"Ack": s.Ack("a", Range{1, 1}), "Claim": s.Claim("a", Range{1, 1}), "Sync": s.Sync()} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v", name, err)
		}
	}
}

// TestSecondOpenFails: a second Open of a spool in use fails within about
// lockTimeout. Time is synctest's, so the bound holds on a busy machine.
func TestSecondOpenFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		openT(t, dir, Options{})
		start := time.Now()
		if s, err := Open(dir, Options{}); err == nil {
			s.Close()
			t.Fatal("second Open of a spool in use succeeded")
		}
		if d := time.Since(start); d > 2*lockTimeout {
			t.Fatalf("second Open took %v", d)
		}
	})
}

// TestFollowerCancel cancels an Append queued behind a leader whose commit is
// held up (by holding meta.db's lock, which its first segment creation needs).
func TestFollowerCancel(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	s.metaMu.Lock()
	leaderDone := make(chan Range)
	go func() {
		r, err := s.Append(context.Background(), "a", events("l", 3, 10))
		if err != nil {
			t.Error(err)
		}
		leaderDone <- r
	}()
	c := waitClass(t, s, "a")
	waitQueue(t, c, 0) // the leader took its own request
	ctx, cancel := context.WithCancel(context.Background())
	followerDone := make(chan error)
	go func() {
		_, err := s.Append(ctx, "a", events("f", 2, 10))
		followerDone <- err
	}()
	waitQueue(t, c, 1)
	cancel()
	if err := <-followerDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled follower = %v", err)
	}
	s.metaMu.Unlock()
	if r := <-leaderDone; r != (Range{1, 3}) {
		t.Fatalf("leader range %v", r)
	}
	if r := mustAppend(t, s, "a", events("n", 1, 10)); r != (Range{4, 4}) {
		t.Fatalf("after cancel: %v", r)
	}
	if got := readAll(t, s, "a", 10); len(got) != 4 {
		t.Fatalf("read %d events", len(got))
	}
}

func waitClass(t *testing.T, s *Spool, name string) *class {
	for range 5000 {
		if c := s.lookup(name); c != nil {
			return c
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("class never created")
	return nil
}

func waitQueue(t *testing.T, c *class, n int) {
	for range 5000 {
		c.wmu.Lock()
		l, leading := len(c.queue), c.leading
		c.wmu.Unlock()
		if l == n && leading {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("queue never reached %d", n)
}

func TestFsyncPolicies(t *testing.T) {
	for _, f := range []Fsync{FsyncInterval, FsyncNever} {
		t.Run(f.String(), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{Fsync: f, FsyncInterval: time.Millisecond, SegmentBytes: mib})
			if err != nil {
				t.Fatal(err)
			}
			for range 15 {
				mustAppend(t, s, "a", events("e", 100, 1000))
				time.Sleep(time.Millisecond)
			}
			if err := s.Claim("a", Range{1, 10}); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, Options{Fsync: f})
			if got := readAll(t, s, "a", 500); len(got) != 1500 {
				t.Fatalf("read %d", len(got))
			}
		})
	}
}

func TestTrimIdleTail(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentBytes: mib})
	r := mustAppend(t, s, "c", events("a", 200, 1000))
	if err := s.Trim("c"); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir, "c")); n != 1 {
		t.Fatalf("trim with unacked events: %d segments, want the tail alone", n)
	}
	if err := s.Ack("c", r); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Classes["c"].Bytes
	if err := s.Trim("c"); err != nil {
		t.Fatal(err)
	}
	after := s.Stats().Classes["c"].Bytes
	if files := segFiles(t, dir, "c"); len(files) != 1 || after >= before {
		t.Fatalf("after trim: files %v, bytes %d → %d", files, before, after)
	}
	// Seqs continue after the trimmed tail, also across a reopen.
	r2 := mustAppend(t, s, "c", events("b", 1, 10))
	if r2.First != r.Last+1 {
		t.Fatalf("after trim appended %v, want first %d", r2, r.Last+1)
	}
	s.Close()
	s = openT(t, dir, Options{SegmentBytes: mib})
	if r3 := mustAppend(t, s, "c", events("c", 1, 10)); r3.First != r2.Last+1 {
		t.Fatalf("after reopen appended %v, want first %d", r3, r2.Last+1)
	}
	checkConsistent(t, s)
}

// TestReadStopsAtLast checks that a reader racing with appends never sees
// an event before Append has returned it (bbolt shows a commit before the
// spool publishes its seqs), so a claim of what was read is always valid.
func TestReadStopsAtLast(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SegmentBytes: mib})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 300 {
			mustAppend(t, s, "c", events("a", 10, 100))
		}
	}()
	var next uint64 = 1
	for {
		select {
		case <-done:
			return
		default:
		}
		last := s.Last("c")
		n, err := s.Read("c", next, 0, 0, func(e Entry) error {
			if e.Seq > s.Last("c") {
				return fmt.Errorf("read seq %d past Last %d", e.Seq, s.Last("c"))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > next {
			if err := s.Claim("c", Range{next, n - 1}); err != nil {
				t.Fatalf("claim of what was read (Last was %d): %v", last, err)
			}
			next = n
		}
	}
}
