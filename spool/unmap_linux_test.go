package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// mappingRSS is the resident size of the mapping of this process that
// starts at addr, from /proc/self/smaps.
func mappingRSS(t *testing.T, addr uintptr) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	prefix := fmt.Sprintf("%x-", addr)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "-") && !strings.Contains(line, ":") || strings.HasPrefix(line, prefix) {
			in = strings.HasPrefix(line, prefix)
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); in && ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no mapping at %x in smaps", addr)
	return 0
}

// TestReadUnmapsRecords reads 8 MiB of records from the tail and checks that
// the segment's mapping does not keep them resident, and that reading them
// again gives the same bytes (the pages come back from the page cache).
func TestReadUnmapsRecords(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SegmentBytes: 64 * mib})
	var want [][]byte
	for i := range 64 {
		evs := events(fmt.Sprintf("r%d", i), 200, 640) // one record of ~128 KiB, like an HTTP request's
		mustAppend(t, s, "c", evs)
		want = append(want, evs...)
	}
	c := s.lookup("c")
	c.mu.Lock()
	base := c.tail.db.Info().Data
	c.mu.Unlock()

	for pass := range 2 {
		n := 0
		if _, err := s.Read("c", 1, 0, 0, func(e Entry) error {
			if !bytes.Equal(e.Data, want[n]) {
				return fmt.Errorf("pass %d: event %d differs", pass, e.Seq)
			}
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n != len(want) {
			t.Fatalf("pass %d: read %d events, want %d", pass, n, len(want))
		}
		// Appending maps the records too (bbolt rewrites the last leaf
		// from the mapping). Once read, each record keeps at most its
		// first and last partial pages mapped, beside the tree's pages:
		// far less than the 8 MiB read (without unmapping, all of it).
		if rss := mappingRSS(t, base); rss > 2*mib {
			t.Errorf("pass %d: %d KiB of the segment resident after reading 8 MiB of records", pass, rss>>10)
		}
	}
}

// TestUnmapReadOutside checks that memory outside the given mapping (here
// the Go heap, which MADV_DONTNEED would zero) is never advised.
func TestUnmapReadOutside(t *testing.T) {
	b := bytes.Repeat([]byte{7}, 256<<10)
	p := uintptr(unsafe.Pointer(&b[0]))
	for _, m := range []struct {
		base uintptr
		size int64
	}{
		{0, 4096},                       // a mapping far below
		{p + 4096, int64(len(b))},       // starts inside the slice
		{p, int64(len(b) - 1)},          // ends inside the slice
		{p + uintptr(len(b)), 64 << 20}, // just above
	} {
		unmapRead(b, m.base, m.size)
		if !bytes.Equal(b, bytes.Repeat([]byte{7}, len(b))) {
			t.Fatalf("mapping %x+%d: the slice at %x changed", m.base, m.size, p)
		}
	}
}
