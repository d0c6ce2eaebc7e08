package spool

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestLayout2Damage moves the bucket of one commit of a layout-2 tail
// under a key that is not its first record's (the records themselves
// intact): Check must report the segment damaged from that commit on, Open
// must seal it there, and Read must deliver the commits before it and
// quarantine the rest, as for a damaged record.
func TestLayout2Damage(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: mib})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // 2 KB a commit: a bucket each
		mustAppend(t, s, "a", events(fmt.Sprintf("call%02d", i), 10, 200))
	}
	mustAppend(t, s, "a", events("small", 2, 10)) // a record of "r" itself
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir, "a")
	if len(files) != 1 || layoutOf(t, files[0]) != segNested {
		t.Fatalf("segments %v", files)
	}
	db, err := bolt.Open(files[0], 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		r := tx.Bucket(bucketRecords)
		var kinds []string
		_ = r.ForEach(func(k, v []byte) error {
			kinds = append(kinds, fmt.Sprintf("%d:%v", binary.BigEndian.Uint64(k), v == nil))
			return nil
		})
		if want := []string{"1:true", "11:true", "21:true", "31:true", "41:true", "51:false"}; !slices.Equal(kinds, want) {
			return fmt.Errorf("entries of r %v, want %v", kinds, want)
		}
		old := r.Bucket(seqKey(21))
		moved, err := r.CreateBucket(seqKey(22))
		if err != nil {
			return err
		}
		if err := old.ForEach(func(k, v []byte) error { return moved.Put(bytes.Clone(k), bytes.Clone(v)) }); err != nil {
			return err
		}
		return r.DeleteBucket(seqKey(21))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	rep := mustCheck(t, dir)
	if len(rep.Damaged) != 1 {
		t.Fatalf("damaged %+v", rep.Damaged)
	}
	if d := rep.Damaged[0]; d.Action != ActionQuarantineOnRead || d.Seqs != (Range{21, 52}) || !strings.Contains(d.Reason, "first record key") {
		t.Fatalf("damage %+v", d)
	}
	s = openT(t, dir, Options{SegmentBytes: mib})
	if s.Last("a") != 52 {
		t.Fatalf("last %d", s.Last("a"))
	}
	all := readAll(t, s, "a", 7)
	if len(all) != 20 || all[19].seq != 20 || !bytes.Equal(all[19].data, event("call01", 9, 200)) {
		t.Fatalf("read %d events", len(all))
	}
	if st := s.Stats(); st.Quarantined != 1 || st.Classes["a"].Dropped["quarantine"] != 32 {
		t.Fatalf("quarantined %d, dropped %v", st.Quarantined, st.Classes["a"].Dropped)
	}
	checkConsistent(t, s)
}
