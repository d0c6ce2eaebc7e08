package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The tests here damage a closed spool the way disks do (a file cut short, a
// flipped bit in a bbolt page header, a flipped bit inside a record) and
// check that Check reports exactly that damage, and that Open and Read then
// do what it predicted: quarantine, serve the rest in order, no panic.
// recovery_test.go covers each kind of damage alone on one segment.

// flipPageIDs flips a bit of the page id of every bbolt page run (a page and
// its overflow pages) of file that contains marker, live or freed: a page
// bbolt reaches then fails its id check (a panic inside bbolt).
func flipPageIDs(t *testing.T, file, marker string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// The page size is in the meta page, after the 16-byte page header,
	// magic and version.
	psize := int(binary.NativeEndian.Uint32(b[16+8:]))
	if psize < 512 || psize > 64<<10 {
		t.Fatalf("%s: page size %d", file, psize)
	}
	flipped := 0
	for id := 2; id*psize < len(b); {
		off := id * psize
		run := 1
		if binary.NativeEndian.Uint64(b[off:]) == uint64(id) {
			run += int(binary.NativeEndian.Uint32(b[off+12:]))
		}
		end := min(off+run*psize, len(b))
		if bytes.Contains(b[off:end], []byte(marker)) {
			b[off] ^= 0x01
			flipped++
		}
		id += run
	}
	if flipped == 0 {
		t.Fatalf("%q not in any page of %s", marker, file)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// treeState is every file under dir: size, mode, mtime and content hash.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := ""
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		out[p] = fmt.Sprintf("%d %v %d %s", fi.Size(), fi.Mode(), fi.ModTime().UnixNano(), h)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustCheck(t *testing.T, dir string) *Report {
	t.Helper()
	before := treeState(t, dir)
	rep, err := Check(dir)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if after := treeState(t, dir); !mapsEqual(before, after) {
		t.Fatalf("Check changed the spool directory:\nbefore %v\nafter  %v", before, after)
	}
	return rep
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func classReport(t *testing.T, rep *Report, name string) ClassReport {
	t.Helper()
	for _, c := range rep.Classes {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no class %q in report %+v", name, rep.Classes)
	return ClassReport{}
}

// TestCorruptSegments writes class "a" across at least six 1 MiB segments
// (appends of 100 × 1000-byte events, tagged callNN) and a healthy class
// "b", acknowledges a's first append, closes, and damages three sealed
// segments of a: files[1] truncated to half, a page header of files[2]
// flipped (the leaf holding its last record, which Open's check reads),
// and a record in the middle of files[3] flipped (which only a full scan
// or a read finds). Check must report exactly those, without changing a
// byte; Open must quarantine the first two and log why; reading and
// acknowledging in order must deliver every other event, quarantine
// files[3] at its bad record, and leave a healthy spool.
func TestCorruptSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: mib}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	for len(segFiles(t, dir, "a")) < 7 {
		mustAppend(t, s, "a", events(fmt.Sprintf("call%02d", calls), 100, 1000))
		calls++
	}
	// The tail (the 7th file) is the newest; six sealed segments before it.
	for i := range 10 {
		mustAppend(t, s, "b", events(fmt.Sprintf("b%02d", i), 100, 100))
	}
	if err := s.Ack("a", Range{1, 100}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir, "a")
	firsts := make([]uint64, len(files))
	for i, f := range files {
		firsts[i], _ = parseSegName(filepath.Base(f))
		if firsts[i]%100 != 1 {
			t.Fatalf("segment %s does not start at an append", f)
		}
	}
	last := uint64(calls * 100)
	tag := func(seq uint64) string { return fmt.Sprintf("call%02d-%06d", (seq-1)/100, (seq-1)%100) }

	fi, err := os.Stat(files[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(files[1], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	flipPageIDs(t, files[2], tag(firsts[3]-1))
	// A record in the middle of files[3]: the second append after its first.
	badSeq := firsts[3] + 200
	if badSeq+100 > firsts[4] {
		t.Fatalf("segment %s too small for the test", files[3])
	}
	flipIn(t, files[3], tag(badSeq))

	rel := func(f string) string { r, _ := filepath.Rel(dir, f); return r }
	rep := mustCheck(t, dir)
	if rep.OK() || len(rep.Damaged) != 3 || len(rep.Quarantined) != 0 {
		t.Fatalf("Check: damaged %+v, quarantined %+v; want files 1, 2, 3", rep.Damaged, rep.Quarantined)
	}
	for i, want := range []struct {
		file, action, reason string
		seqs                 Range
	}{
		{rel(files[1]), ActionQuarantine, "truncated", Range{firsts[1], firsts[2] - 1}},
		{rel(files[2]), ActionQuarantine, "bbolt panic", Range{firsts[2], firsts[3] - 1}},
		{rel(files[3]), ActionQuarantineOnRead, "crc", Range{badSeq, firsts[4] - 1}},
	} {
		d := rep.Damaged[i]
		if d.Class != "a" || d.File != want.file || d.Action != want.action || !strings.Contains(d.Reason, want.reason) || d.Seqs != want.seqs || d.Effect == "" {
			t.Errorf("damage %d = %+v; want %s %s (%s) seqs %v", i, d, want.file, want.action, want.reason, want.seqs)
		}
	}
	lost := (firsts[3] - firsts[1]) + (firsts[4] - badSeq)
	pending := last - 100 - lost
	ca := classReport(t, rep, "a")
	if ca.Segments != len(files) || ca.Damaged != 3 || ca.Acked != 100 || ca.First != 1 || ca.Last != last || ca.Pending != pending || ca.Lost != lost {
		t.Fatalf("class a: %+v; want %d segments, 3 damaged, acked 100, seqs 1-%d, pending %d, lost %d", ca, len(files), last, pending, lost)
	}
	if cb := classReport(t, rep, "b"); cb.Damaged != 0 || cb.Pending != 1000 || cb.Acked != 0 {
		t.Fatalf("class b: %+v", cb)
	}

	var logs bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s = openT(t, dir, opts)
	st := s.Stats()
	if st.Quarantined != 2 || st.Classes["a"].Dropped["quarantine"] != firsts[3]-firsts[1] {
		t.Fatalf("after Open: quarantined %d, dropped %v; want 2, %d", st.Quarantined, st.Classes["a"].Dropped, firsts[3]-firsts[1])
	}
	for _, want := range []string{
		"spool: file quarantined", files[1], files[2], "truncated", "bbolt panic",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("Open's log lacks %q:\n%s", want, logs.String())
		}
	}
	if q := quarantined(t, dir); len(q) != 2 {
		t.Fatalf("quarantine/ holds %v", q)
	}

	// Read batches of 100 (one append) and acknowledge each as it comes, as
	// the batcher does.
	var served []uint64
	for next := uint64(0); ; {
		var r Range
		nx, err := s.Read("a", next, 100, 0, func(e Entry) error {
			if want := event(fmt.Sprintf("call%02d", (e.Seq-1)/100), int((e.Seq-1)%100), 1000); !bytes.Equal(e.Data, want) {
				return fmt.Errorf("seq %d: data %.14q, want %.14q", e.Seq, e.Data, want)
			}
			if r.First == 0 {
				r.First = e.Seq
			}
			r.Last = e.Seq
			served = append(served, e.Seq)
			return nil
		})
		if err != nil {
			t.Fatalf("Read(%d): %v", next, err)
		}
		if r.First == 0 {
			break
		}
		if err := s.Ack("a", r); err != nil {
			t.Fatalf("Ack %v: %v", r, err)
		}
		next = nx
	}
	var want []uint64
	for seq := uint64(101); seq <= last; seq++ {
		if (seq < firsts[1] || seq >= firsts[3]) && (seq < badSeq || seq >= firsts[4]) {
			want = append(want, seq)
		}
	}
	if !slices.Equal(served, want) {
		t.Fatalf("served %d events %v…; want %d (%d pending by Check)", len(served), served[:min(5, len(served))], len(want), pending)
	}
	// The Read that meets the bad record has delivered the append before it
	// (its limit is checked after the next record is parsed): those events
	// are the reader's, acknowledged later, and do not count as dropped.
	st = s.Stats()
	if st.Quarantined != 3 || st.Classes["a"].Dropped["quarantine"] != lost || st.Classes["a"].Depth != 0 || s.Acked("a") != last {
		t.Fatalf("after reading: quarantined %d, dropped %v, depth %d, acked %d; want 3, %d, 0, %d",
			st.Quarantined, st.Classes["a"].Dropped, st.Classes["a"].Depth, s.Acked("a"), lost, last)
	}
	if got := readAll(t, s, "b", 1000); len(got) != 1000 {
		t.Fatalf("class b: read %d", len(got))
	}
	if n := len(segFiles(t, dir, "a")); n != 1 {
		t.Fatalf("%d segment files left after acknowledging everything; want the tail", n)
	}
	mustAppend(t, s, "a", events("after", 10, 100))
	checkConsistent(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Healthy now; the three files wait in quarantine/ for an operator.
	rep = mustCheck(t, dir)
	if !rep.OK() || len(rep.Quarantined) != 3 {
		t.Fatalf("after recovery: damaged %+v, quarantined %+v", rep.Damaged, rep.Quarantined)
	}
	for i, q := range rep.Quarantined {
		if q.Class != "a" || q.Original != filepath.Base(files[i+1]) || q.Time.IsZero() || q.Bytes == 0 {
			t.Errorf("quarantined %d = %+v; want a, %s", i, q, filepath.Base(files[i+1]))
		}
	}
	if ca := classReport(t, rep, "a"); ca.Pending != 10 || ca.Acked != last || ca.Lost != 0 {
		t.Fatalf("class a after recovery: %+v", ca)
	}
}
