package spool

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const mib = 1 << 20

func openT(t testing.TB, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// event makes a recognisable event: tag, index, then padding to size.
func event(tag string, i, size int) []byte {
	b := fmt.Appendf(nil, "%s-%06d|", tag, i)
	for len(b) < size {
		b = append(b, byte('a'+len(b)%26))
	}
	return b
}

func events(tag string, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = event(tag, i, size)
	}
	return out
}

func mustAppend(t testing.TB, s *Spool, class string, evs [][]byte) Range {
	t.Helper()
	r, err := s.Append(context.Background(), class, evs)
	if err != nil {
		t.Fatalf("Append(%s): %v", class, err)
	}
	if r.Len() != uint64(len(evs)) {
		t.Fatalf("Append(%s) = %v for %d events", class, r, len(evs))
	}
	return r
}

type got struct {
	seq  uint64
	data []byte
}

// readAll reads every live event of class in batches of batch events.
func readAll(t testing.TB, s *Spool, class string, batch int) []got {
	t.Helper()
	var out []got
	next := uint64(0)
	for {
		n := 0
		nx, err := s.Read(class, next, batch, 0, func(e Entry) error {
			out = append(out, got{e.Seq, bytes.Clone(e.Data)})
			n++
			return nil
		})
		if err != nil {
			t.Fatalf("Read(%s, %d): %v", class, next, err)
		}
		if n == 0 {
			return out
		}
		if nx <= next {
			t.Fatalf("Read(%s, %d) did not advance: next %d", class, next, nx)
		}
		next = nx
	}
}

// segFiles lists a class's segment files.
func segFiles(t testing.TB, dir, class string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, class, "seg-*.db"))
	return m
}

// checkConsistent checks invariants that must hold after every test step:
// Stats.Bytes equals the segment files on disk, per-class bytes add up,
// Acked <= Last, and claims are above the cursor.
func checkConsistent(t testing.TB, s *Spool) {
	t.Helper()
	var disk int64
	_ = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "seg-") && !strings.Contains(p, quarantineDir) {
			fi, _ := d.Info()
			disk += fi.Size()
		}
		return nil
	})
	st := s.Stats()
	if st.Bytes != disk {
		t.Errorf("Stats.Bytes = %d, segment files on disk = %d", st.Bytes, disk)
	}
	var sum int64
	for name, cs := range st.Classes {
		sum += cs.Bytes
		if s.Acked(name) > s.Last(name) {
			t.Errorf("class %s: Acked %d > Last %d", name, s.Acked(name), s.Last(name))
		}
		if n := len(segFiles(t, s.dir, name)); n != cs.Segments {
			t.Errorf("class %s: %d segment files, Stats says %d", name, n, cs.Segments)
		}
		for _, r := range s.Claims(name) {
			if r.Last <= s.Acked(name) {
				t.Errorf("class %s: claim %v at or below cursor %d", name, r, s.Acked(name))
			}
		}
	}
	if sum != st.Bytes {
		t.Errorf("class bytes add up to %d, total %d", sum, st.Bytes)
	}
}

func quarantined(t testing.TB, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(dir, quarantineDir))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
