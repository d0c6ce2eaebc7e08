package spool

import (
	"context"
	"errors"
	"testing"
)

// TestCapAfterReopen: the caps count the segment files already on disk, so
// a spool found at (or, after an operator lowered it, over) its cap when a
// node starts applies its class's overflow policy to the first append, with
// the precise error. TestOverflow covers the policies within one Open; the
// tests of a really full filesystem are in diskfull_linux_test.go.
func TestCapAfterReopen(t *testing.T) {
	const capBytes = 3 * mib
	// fill makes a spool whose class "a" reached a 3 MiB cap, and returns
	// the last seq appended.
	fill := func(t *testing.T, dir string) uint64 {
		s, err := Open(dir, Options{SegmentBytes: mib, Default: ClassOptions{MaxBytes: capBytes}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for n := 0; n <= 100; n++ {
			if _, err := s.Append(context.Background(), "a", events("f", 100, 1000)); errors.Is(err, ErrFull) {
				return s.Last("a")
			} else if err != nil {
				t.Fatal(err)
			}
		}
		t.Fatal("cap never reached")
		return 0
	}
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr error
		wantMsg string
	}{
		{"block", Options{Default: ClassOptions{MaxBytes: capBytes}}, ErrFull, "spool: append a: class cap: spool is full"},
		{"lowered_total", Options{MaxBytes: 2 * mib}, ErrFull, "spool: append a: total cap: spool is full"},
		{"drop_newest", Options{Default: ClassOptions{MaxBytes: capBytes, Overflow: DropNewest}}, ErrDropped, "spool: append a: class cap: events dropped by overflow policy"},
		{"drop_oldest", Options{Default: ClassOptions{MaxBytes: capBytes, Overflow: DropOldest}}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			last := fill(t, dir)
			tc.opts.SegmentBytes = mib
			s, err := Open(dir, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			before := s.Stats()
			_, err = s.Append(context.Background(), "a", events("x", 100, 1000))
			if !errors.Is(err, tc.wantErr) || tc.wantErr != nil && err.Error() != tc.wantMsg {
				t.Fatalf("first append after reopen: %v; want %q", err, tc.wantMsg)
			}
			st := s.Stats().Classes["a"]
			switch tc.wantErr {
			case nil: // drop_oldest made room from the oldest segment
				if st.Dropped["drop_oldest"] == 0 || s.Acked("a") != st.Dropped["drop_oldest"] || s.Last("a") != last+100 {
					t.Fatalf("dropped %v, acked %d, last %d", st.Dropped, s.Acked("a"), s.Last("a"))
				}
			case ErrDropped:
				if st.Dropped["drop_newest"] != 100 || s.Last("a") != last {
					t.Fatalf("dropped %v, last %d", st.Dropped, s.Last("a"))
				}
			default: // refused: nothing changed
				if s.Stats().Bytes != before.Bytes || s.Last("a") != last || st.Depth != last {
					t.Fatalf("a refused append changed the spool: %+v", st)
				}
			}
			checkConsistent(t, s)
			if tc.wantErr == nil {
				return
			}
			// Acknowledging (upstream caught up) makes room again.
			if err := s.Ack("a", Range{1, last}); err != nil {
				t.Fatal(err)
			}
			mustAppend(t, s, "a", events("y", 100, 1000))
		})
	}
}
