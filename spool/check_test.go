package spool

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestCheckHealthy checks a healthy spool's report against what Open then
// finds: the same classes, bytes, cursor, pending events and claims.
func TestCheckHealthy(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: mib})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		mustAppend(t, s, "a", events(fmt.Sprint(i), 100, 1000))
	}
	mustAppend(t, s, "b", events("b", 10, 10))
	for _, r := range []Range{{1, 300}, {301, 400}, {401, 450}} {
		if err := s.Claim("a", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack("a", Range{1, 300}); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	rep := mustCheck(t, dir)
	if !rep.OK() || rep.ID != id || rep.Dir != dir || len(rep.Quarantined) != 0 || len(rep.Classes) != 2 {
		t.Fatalf("report %+v", rep)
	}
	s = openT(t, dir, Options{SegmentBytes: mib})
	st := s.Stats()
	if rep.Bytes != st.Bytes {
		t.Errorf("Check bytes %d, Stats %d", rep.Bytes, st.Bytes)
	}
	for _, c := range rep.Classes {
		cs := st.Classes[c.Name]
		if c.Segments != cs.Segments || c.Bytes != cs.Bytes || c.Pending != cs.Depth || c.Acked != s.Acked(c.Name) ||
			c.Last != s.Last(c.Name) || c.First != 1 || c.Lost != 0 || c.Damaged != 0 {
			t.Errorf("class %s: Check %+v; Open: %+v acked %d last %d", c.Name, c, cs, s.Acked(c.Name), s.Last(c.Name))
		}
		if want := s.Claims(c.Name); !slices.Equal(c.Claims, want) && len(c.Claims)+len(want) > 0 {
			t.Errorf("class %s: Check claims %v, Open %v", c.Name, c.Claims, want)
		}
	}
	if ca := classReport(t, rep, "a"); ca.Pending != 2200 || ca.Acked != 300 || !slices.Equal(ca.Claims, []Range{{301, 400}, {401, 450}}) {
		t.Errorf("class a: %+v", ca)
	}
}

// TestCheckInUse: a spool held by a running node (here an open Spool, whose
// exclusive lock a second open file refuses as another process's would) is
// reported as in use within about lockTimeout, not checked half-way. Time
// is synctest's, so the bound holds on a busy machine as on an idle one.
func TestCheckInUse(t *testing.T) {
	synctest.Test(t, testCheckInUse)
}

func testCheckInUse(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	mustAppend(t, s, "a", events("e", 1, 10))
	start := time.Now()
	if _, err := Check(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("Check of an open spool = %v, want ErrInUse", err)
	}
	if d := time.Since(start); d > 2*lockTimeout {
		t.Fatalf("Check took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := mustCheck(t, dir); !rep.OK() {
		t.Fatalf("after Close: %+v", rep.Damaged)
	}
}

func TestCheckNotASpool(t *testing.T) {
	empty := t.TempDir()
	for _, dir := range []string{empty, filepath.Join(empty, "nope")} {
		if _, err := Check(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Check(%s) = %v, want os.ErrNotExist", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(empty, "meta.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Check created meta.db")
	}
}

// TestCheckMetaAndID damages meta.db and the ID file: Check predicts the
// rebuild and the new id, and the class as Open will see it (the cursor is
// lost, so what was acknowledged is pending again).
func TestCheckMetaAndID(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "a", events("e", 10, 10))
	if err := s.Ack("a", Range{1, 4}); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meta.db"), bytes.Repeat([]byte("garbage!"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ID"), []byte("not an id"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := mustCheck(t, dir)
	if len(rep.Damaged) != 2 || rep.ID != "" {
		t.Fatalf("damaged %+v, id %q", rep.Damaged, rep.ID)
	}
	if d := rep.Damaged[0]; d.File != "ID" || d.Action != ActionNewID {
		t.Errorf("damage 0 = %+v", d)
	}
	if d := rep.Damaged[1]; d.File != "meta.db" || d.Action != ActionRebuild || d.Reason == "" {
		t.Errorf("damage 1 = %+v", d)
	}
	if ca := classReport(t, rep, "a"); ca.Acked != 0 || ca.Pending != 10 {
		t.Errorf("class a: %+v", ca)
	}
	s = openT(t, dir, Options{})
	if s.ID() == id || s.Stats().Quarantined != 1 || s.Acked("a") != 0 || s.Stats().Classes["a"].Depth != 10 {
		t.Fatalf("Open: id %s (was %s), quarantined %d, acked %d", s.ID(), id, s.Stats().Quarantined, s.Acked("a"))
	}
}

// TestCheckTail damages the tail segment. Lost whole, it is quarantined at
// Open with an unknown end; with a bad record between the first and the
// last, Open seals it behind a new tail, Read serves up to the damage,
// quarantines it there and goes on: the class never stalls.
func TestCheckTail(t *testing.T) {
	t.Run("truncated", func(t *testing.T) {
		dir := t.TempDir()
		files := threeSegments(t, dir)
		tail := files[len(files)-1]
		first, _ := parseSegName(filepath.Base(tail))
		fi, _ := os.Stat(tail)
		if err := os.Truncate(tail, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		rep := mustCheck(t, dir)
		if len(rep.Damaged) != 1 {
			t.Fatalf("damaged %+v", rep.Damaged)
		}
		if d := rep.Damaged[0]; d.Action != ActionQuarantine || d.Seqs != (Range{first, 0}) || !strings.Contains(d.Reason, "truncated") {
			t.Fatalf("damage %+v", d)
		}
		if ca := classReport(t, rep, "a"); ca.Last != first-1 || ca.Pending != first-1 {
			t.Fatalf("class a: %+v", ca)
		}
		s := openT(t, dir, Options{SegmentBytes: mib})
		if s.Stats().Quarantined != 1 || len(readAll(t, s, "a", 1000)) != int(first-1) {
			t.Fatalf("Open: %+v", s.Stats())
		}
	})
	t.Run("bad_record", func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(dir, Options{SegmentBytes: mib})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 { // 5 KB: one segment, the tail
			mustAppend(t, s, "a", events(fmt.Sprintf("call%02d", i), 10, 100))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		files := segFiles(t, dir, "a")
		if len(files) != 1 {
			t.Fatalf("%d segments", len(files))
		}
		const bad = 21 // the third append
		flipIn(t, files[0], "call02-000000")
		rep := mustCheck(t, dir)
		if len(rep.Damaged) != 1 {
			t.Fatalf("damaged %+v", rep.Damaged)
		}
		if d := rep.Damaged[0]; d.Action != ActionQuarantineOnRead || d.Seqs != (Range{bad, 50}) || !strings.Contains(d.Reason, "crc") ||
			!strings.HasPrefix(d.Effect, "sealed at start") {
			t.Fatalf("damage %+v", d)
		}
		if ca := classReport(t, rep, "a"); ca.Pending != bad-1 || ca.Lost != 51-bad {
			t.Fatalf("class a: %+v", ca)
		}
		var logs bytes.Buffer
		opts := Options{SegmentBytes: mib, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		s = openT(t, dir, opts)
		if st := s.Stats(); st.Quarantined != 0 || st.Classes["a"].Segments != 2 || s.Last("a") != 50 {
			t.Fatalf("Open: %+v, last %d; want the tail kept, sealed, and a new one", st, s.Last("a"))
		}
		if !strings.Contains(logs.String(), "damaged record in the tail segment") || !strings.Contains(logs.String(), "seq=21") {
			t.Errorf("Open's log:\n%s", logs.String())
		}
		// Appends go to the new tail; a read serves up to the damage,
		// quarantines the old tail there, and goes on to them.
		mustAppend(t, s, "a", events("new", 3, 10))
		var seqs []uint64
		next, err := s.Read("a", 0, 0, 0, func(e Entry) error { seqs = append(seqs, e.Seq); return nil })
		var want []uint64
		for seq := uint64(1); seq < bad; seq++ {
			want = append(want, seq)
		}
		want = append(want, 51, 52, 53)
		if err != nil || !slices.Equal(seqs, want) || next != 54 {
			t.Fatalf("Read: %v, next %d, %v; want %v, 54", seqs, next, err, want)
		}
		st := s.Stats()
		if st.Quarantined != 1 || st.Classes["a"].Dropped["quarantine"] != 51-bad || len(quarantined(t, dir)) != 1 {
			t.Fatalf("after reading: quarantined %d, dropped %v", st.Quarantined, st.Classes["a"].Dropped)
		}
		if err := s.Ack("a", Range{1, 53}); err != nil {
			t.Fatal(err)
		}
		checkConsistent(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if rep := mustCheck(t, dir); !rep.OK() {
			t.Fatalf("after recovery: %+v", rep.Damaged)
		}
	})
}

// TestCheckQuarantineNames parses the names quarantine gives moved files.
func TestCheckQuarantineNames(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	mustAppend(t, s, "a", events("e", 1, 10))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, quarantineDir)
	if err := os.MkdirAll(q, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{
		"my-class.seg-00000000000000000101.db.20240102T030405.000000006": 3,
		"meta.db.20240102T030405.123456789":                              2,
		"notes.txt":                                                      1,
	} {
		if err := os.WriteFile(filepath.Join(q, name), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustCheck(t, dir)
	want := []Quarantined{
		{File: "meta.db.20240102T030405.123456789", Original: "meta.db", Bytes: 2, Time: time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)},
		{File: "my-class.seg-00000000000000000101.db.20240102T030405.000000006", Class: "my-class", Original: "seg-00000000000000000101.db", Bytes: 3,
			Time: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)},
		{File: "notes.txt", Original: "notes.txt", Bytes: 1},
	}
	if !rep.OK() || !slices.EqualFunc(rep.Quarantined, want, func(a, b Quarantined) bool {
		return a.File == b.File && a.Class == b.Class && a.Original == b.Original && a.Bytes == b.Bytes && a.Time.Equal(b.Time)
	}) {
		t.Fatalf("quarantined %+v\nwant %+v", rep.Quarantined, want)
	}
}
