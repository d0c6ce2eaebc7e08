package spool

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// untar extracts a .tar.gz of testdata into dir.
func untar(t *testing.T, name, dir string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// layoutOf reads the layout recorded in a closed segment file.
func layoutOf(t *testing.T, path string) byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, readOnlyOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var l byte
	if err := db.View(func(tx *bolt.Tx) error { l, err = segLayout(tx); return err }); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return l
}

// TestLayout1Upgrade opens a spool written by the code before layout 2
// (testdata/layout1-spool.tar.gz, SegmentBytes 1 MiB: class "a" has 25
// appends of 100 × 1000-byte events tagged oldNN, 1-150 acknowledged and
// 151-400 claimed; class "b" 3 appends of 5 × 50-byte events tagged oldbN).
// Every event must read back with its seq, the cursor and claim must
// survive, appends must go on in the old tail in layout 1, and the
// segments after it must be layout 2; after a reopen everything reads in
// order and Check finds nothing wrong.
func TestLayout1Upgrade(t *testing.T) {
	dir := t.TempDir()
	untar(t, "layout1-spool.tar.gz", dir)
	files := segFiles(t, dir, "a")
	if len(files) != 7 {
		t.Fatalf("%d segments in the old spool", len(files))
	}
	for _, f := range append(files, segFiles(t, dir, "b")...) {
		if l := layoutOf(t, f); l != segFlat {
			t.Fatalf("%s: layout %d in the old spool", f, l)
		}
	}
	if rep := mustCheck(t, dir); !rep.OK() {
		t.Fatalf("Check of the old spool: %+v", rep.Damaged)
	}

	var want []got
	for i := range 25 {
		for j, e := range events(fmt.Sprintf("old%02d", i), 100, 1000) {
			if seq := uint64(i*100 + j + 1); seq > 150 {
				want = append(want, got{seq, e})
			}
		}
	}
	var wantB []got
	for i := range 3 {
		for j, e := range events(fmt.Sprintf("oldb%d", i), 5, 50) {
			wantB = append(wantB, got{uint64(i*5 + j + 1), e})
		}
	}
	equal := func(a, b got) bool { return a.seq == b.seq && bytes.Equal(a.data, b.data) }

	s, err := Open(dir, Options{SegmentBytes: mib})
	if err != nil {
		t.Fatal(err)
	}
	if s.Acked("a") != 150 || s.Last("a") != 2500 || !slices.Equal(s.Claims("a"), []Range{{151, 400}}) {
		t.Fatalf("old spool: acked %d, last %d, claims %v", s.Acked("a"), s.Last("a"), s.Claims("a"))
	}
	if all := readAll(t, s, "a", 333); !slices.EqualFunc(all, want, equal) {
		t.Fatalf("class a: read %d events, want %d", len(all), len(want))
	}
	if all := readAll(t, s, "b", 4); !slices.EqualFunc(all, wantB, equal) {
		t.Fatalf("class b: read %v", all)
	}
	// New appends: into the old tail while it has room, then new segments.
	for i := range 12 {
		tag := fmt.Sprintf("new%02d", i)
		r := mustAppend(t, s, "a", events(tag, 100, 1000))
		for j, e := range events(tag, 100, 1000) {
			want = append(want, got{r.First + uint64(j), e})
		}
	}
	r := mustAppend(t, s, "b", events("newb", 5, 50))
	for j, e := range events("newb", 5, 50) {
		wantB = append(wantB, got{r.First + uint64(j), e})
	}
	if err := s.Ack("a", Range{151, 400}); err != nil {
		t.Fatal(err)
	}
	want = want[250:]
	checkConsistent(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	after := segFiles(t, dir, "a") // the first one is acknowledged: deleted
	if slices.Contains(after, files[0]) || !slices.Contains(after, files[len(files)-1]) || len(after) <= len(files)-1 {
		t.Fatalf("segments after the upgrade: %v", after)
	}
	next := after[slices.Index(after, files[len(files)-1])+1]
	if first, _ := parseSegName(filepath.Base(next)); first <= 2501 {
		t.Fatalf("the old tail took no appends: next segment %s", filepath.Base(next))
	}
	for _, f := range after {
		wantLayout := byte(segNested)
		if slices.Contains(files, f) {
			wantLayout = segFlat
		}
		if l := layoutOf(t, f); l != wantLayout {
			t.Fatalf("%s: layout %d, want %d", filepath.Base(f), l, wantLayout)
		}
	}
	if l := layoutOf(t, segFiles(t, dir, "b")[0]); l != segFlat {
		t.Fatalf("class b's old tail: layout %d", l)
	}
	if rep := mustCheck(t, dir); !rep.OK() {
		t.Fatalf("Check after the upgrade: %+v", rep.Damaged)
	}
	s = openT(t, dir, Options{SegmentBytes: mib})
	if all := readAll(t, s, "a", 777); !slices.EqualFunc(all, want, equal) {
		t.Fatalf("class a after reopen: read %d events, want %d", len(all), len(want))
	}
	if all := readAll(t, s, "b", 100); !slices.EqualFunc(all, wantB, equal) {
		t.Fatalf("class b after reopen: read %v", all)
	}
	checkConsistent(t, s)
}
