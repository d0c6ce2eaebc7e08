package spool

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// threeSegments writes 30 appends of 100 × 1000-byte events tagged by call
// into 1 MiB segments and closes the spool. It returns the segment files.
func threeSegments(t *testing.T, dir string) []string {
	t.Helper()
	s, err := Open(dir, Options{SegmentBytes: mib})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		mustAppend(t, s, "a", events(fmt.Sprintf("call%02d", i), 100, 1000))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir, "a")
	if len(files) < 3 {
		t.Fatalf("%d segments", len(files))
	}
	return files
}

// flipIn flips one byte after every occurrence of marker in file (bbolt may
// keep stale copies of a record in free pages).
func flipIn(t *testing.T, file, marker string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 0; ; n++ {
		i := bytes.Index(b[off:], []byte(marker))
		if i < 0 {
			break
		}
		b[off+i+len(marker)+3] ^= 0x40
		off += i + len(marker)
	}
	if n == 0 {
		t.Fatalf("%q not in %s", marker, file)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// firstTag returns the tag of the first event stored in a segment file.
func firstTag(t *testing.T, file string) string {
	t.Helper()
	b, _ := os.ReadFile(file)
	i := bytes.Index(b, []byte("call"))
	return string(b[i : i+len("call00-000000")])
}

func TestQuarantineSealedAtOpen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, file string)
	}{
		{"truncated", func(t *testing.T, file string) {
			fi, _ := os.Stat(file)
			if err := os.Truncate(file, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", func(t *testing.T, file string) {
			b := make([]byte, 64<<10)
			for i := range b {
				b[i] = byte(rand.IntN(256))
			}
			if err := os.WriteFile(file, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"crc", func(t *testing.T, file string) { flipIn(t, file, firstTag(t, file)) }},
		{"tiny", func(t *testing.T, file string) { _ = os.WriteFile(file, []byte("x"), 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := threeSegments(t, dir)
			victim := files[1] // sealed, with segments on both sides
			vfirst, _ := parseSegName(filepath.Base(victim))
			nfirst, _ := parseSegName(filepath.Base(files[2]))
			tc.damage(t, victim)

			s := openT(t, dir, Options{SegmentBytes: mib})
			st := s.Stats()
			if st.Quarantined != 1 || st.Classes["a"].Dropped["quarantine"] != nfirst-vfirst {
				t.Fatalf("Quarantined %d, dropped %v; want 1, %d", st.Quarantined, st.Classes["a"].Dropped, nfirst-vfirst)
			}
			if _, err := os.Stat(victim); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("damaged file still in place")
			}
			if q := quarantined(t, dir); len(q) != 1 || !strings.HasPrefix(q[0], "a."+filepath.Base(victim)) {
				t.Fatalf("quarantine/ holds %v", q)
			}
			all := readAll(t, s, "a", 333)
			if uint64(len(all)) != 3000-(nfirst-vfirst) {
				t.Fatalf("read %d events", len(all))
			}
			for _, g := range all {
				if g.seq >= vfirst && g.seq < nfirst {
					t.Fatalf("read seq %d from the quarantined segment", g.seq)
				}
				call, i := (g.seq-1)/100, (g.seq-1)%100
				if !bytes.Equal(g.data, event(fmt.Sprintf("call%02d", call), int(i), 1000)) {
					t.Fatalf("seq %d: wrong data %.14q", g.seq, g.data)
				}
			}
			if s.Last("a") != 3000 {
				t.Fatalf("Last %d", s.Last("a"))
			}
			mustAppend(t, s, "a", events("after", 1, 10))
			checkConsistent(t, s)
		})
	}
}

// TestQuarantineSealedAtRead damages a sealed segment while the spool is open:
// the read quarantines it and goes on.
func TestQuarantineSealedAtRead(t *testing.T) {
	dir := t.TempDir()
	files := threeSegments(t, dir)
	s := openT(t, dir, Options{SegmentBytes: mib})
	vfirst, _ := parseSegName(filepath.Base(files[1]))
	nfirst, _ := parseSegName(filepath.Base(files[2]))
	// A record in the middle of the segment: not checked at open.
	bad := (vfirst-1)/100 + 2
	flipIn(t, files[1], fmt.Sprintf("call%02d-000050", bad))
	// Events of the segment before the damaged record are delivered before
	// the damage is found; the rest of the segment is skipped.
	before := bad*100 + 1 - vfirst
	all := readAll(t, s, "a", 500)
	if uint64(len(all)) != 3000-(nfirst-vfirst)+before {
		t.Fatalf("read %d events", len(all))
	}
	// Those delivered are not counted as dropped: their acks are to come.
	st := s.Stats()
	if st.Quarantined != 1 || st.Classes["a"].Dropped["quarantine"] != nfirst-vfirst-before || len(quarantined(t, dir)) != 1 {
		t.Fatalf("stats %+v; want %d dropped", st, nfirst-vfirst-before)
	}
	checkConsistent(t, s)
}

// TestQuarantineOldestAtOpen damages the oldest segment, partly
// acknowledged: Open counts its unacknowledged events as dropped (as Check
// predicts) before the cursor moves past it.
func TestQuarantineOldestAtOpen(t *testing.T) {
	dir := t.TempDir()
	files := threeSegments(t, dir)
	s := openT(t, dir, Options{SegmentBytes: mib})
	if err := s.Ack("a", Range{1, 50}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	nfirst, _ := parseSegName(filepath.Base(files[1]))
	fi, _ := os.Stat(files[0])
	if err := os.Truncate(files[0], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if ca := classReport(t, mustCheck(t, dir), "a"); ca.Lost != nfirst-1-50 {
		t.Fatalf("Check: lost %d; want %d", ca.Lost, nfirst-1-50)
	}
	s = openT(t, dir, Options{SegmentBytes: mib})
	st := s.Stats()
	if st.Quarantined != 1 || st.Classes["a"].Dropped["quarantine"] != nfirst-1-50 || s.Acked("a") != nfirst-1 ||
		st.Classes["a"].Depth != 3000-(nfirst-1) {
		t.Fatalf("Open: quarantined %d, dropped %v, acked %d, depth %d; want 1, %d, %d, %d",
			st.Quarantined, st.Classes["a"].Dropped, s.Acked("a"), st.Classes["a"].Depth, nfirst-1-50, nfirst-1, 3000-(nfirst-1))
	}
	if all := readAll(t, s, "a", 1000); uint64(len(all)) != 3000-(nfirst-1) || all[0].seq != nfirst {
		t.Fatalf("read %d events", len(all))
	}
	checkConsistent(t, s)
}

func TestMetaGarbage(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "a", events("e", 10, 10))
	if err := s.Claim("a", Range{1, 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("a", Range{1, 3}); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meta.db"), bytes.Repeat([]byte("garbage!"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if s.ID() != id || s.Stats().Quarantined != 1 || len(quarantined(t, dir)) != 1 {
		t.Fatalf("ID %s quarantined %d", s.ID(), s.Stats().Quarantined)
	}
	// Rebuilt: cursor at the first available seq - 1, data kept, and the
	// claim too: claims live in the segments, not in meta.db.
	if s.Acked("a") != 0 || s.Last("a") != 10 || !slices.Equal(s.Claims("a"), []Range{{1, 5}}) {
		t.Fatalf("Acked %d Last %d Claims %v", s.Acked("a"), s.Last("a"), s.Claims("a"))
	}
	if got := readAll(t, s, "a", 100); len(got) != 10 {
		t.Fatalf("read %d", len(got))
	}
	if r := mustAppend(t, s, "a", events("n", 1, 1)); r.First != 11 {
		t.Fatalf("append after rebuild: %v", r)
	}
	if err := s.Claim("a", Range{11, 11}); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s)
}

// TestTailLostNoSeqReuse damages or removes the tail: the next seq must skip
// past every seq the lost tail could have issued.
func TestTailLostNoSeqReuse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, file string)
		loseMeta bool
	}{
		{"garbage", func(t *testing.T, f string) { _ = os.WriteFile(f, bytes.Repeat([]byte{7}, 8192), 0o600) }, false},
		{"removed", func(t *testing.T, f string) { _ = os.Remove(f) }, false},
		{"garbage_and_meta_lost", func(t *testing.T, f string) { _ = os.WriteFile(f, []byte("junk"), 0o600) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := threeSegments(t, dir)
			tail := files[len(files)-1]
			tfirst, _ := parseSegName(filepath.Base(tail))
			tc.damage(t, tail)
			if tc.loseMeta {
				_ = os.Remove(filepath.Join(dir, "meta.db"))
			}
			s := openT(t, dir, Options{SegmentBytes: mib})
			hb := uint64(s.hardBound)
			if s.Last("a") < tfirst+hb-1 {
				t.Fatalf("Last %d: seqs of the lost tail (from %d) could be reused", s.Last("a"), tfirst)
			}
			r := mustAppend(t, s, "a", events("new", 5, 10))
			if r.First < tfirst+hb {
				t.Fatalf("new range %v may reuse seqs of the lost tail starting %d", r, tfirst)
			}
			all := readAll(t, s, "a", 1000)
			if uint64(len(all)) != tfirst-1+5 {
				t.Fatalf("read %d events, want %d", len(all), tfirst-1+5)
			}
			// Acking everything readable moves the cursor past the gap.
			if err := s.Ack("a", Range{1, r.Last}); err != nil {
				t.Fatal(err)
			}
			if s.Acked("a") != r.Last || s.Stats().Classes["a"].Depth != 0 {
				t.Fatalf("Acked %d", s.Acked("a"))
			}
			checkConsistent(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Stable across another reopen, even with every segment acked away.
			s = openT(t, dir, Options{SegmentBytes: mib})
			if r2 := mustAppend(t, s, "a", events("again", 1, 10)); r2.First != r.Last+1 {
				t.Fatalf("after reopen: %v, want first %d", r2, r.Last+1)
			}
		})
	}
}
