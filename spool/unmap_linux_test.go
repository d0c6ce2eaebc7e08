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

	"golang.org/x/sys/unix"
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
		// from the mapping). Once unmapEvery bytes are read, the pages
		// are unmapped: far less than the 8 MiB read stays resident
		// (without unmapping, all of it).
		if rss := mappingRSS(t, base); rss > 2*mib {
			t.Errorf("pass %d: %d KiB of the segment resident after reading 8 MiB of records", pass, rss>>10)
		}
	}
}

// TestUnmapReadPages unmaps a file mapping whose pages were all read: none
// stays resident in the mapping, and its bytes read the same after.
func TestUnmapReadPages(t *testing.T) {
	const pages = 256
	path := t.TempDir() + "/f"
	want := bytes.Repeat([]byte("0123456789abcdef"), pages*int(pageSize)/16)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	base := uintptr(unsafe.Pointer(&m[0]))
	if !bytes.Equal(m, want) {
		t.Fatal("mapping differs from the file")
	}
	if rss := mappingRSS(t, base); rss < int64(len(want))/2 {
		t.Fatalf("only %d KiB resident after reading %d KiB", rss>>10, len(want)>>10)
	}
	unmapReadPages(base, int64(len(want)))
	if rss := mappingRSS(t, base); rss != 0 {
		t.Errorf("%d KiB resident after unmapping", rss>>10)
	}
	if !bytes.Equal(m, want) {
		t.Fatal("the mapping reads differently after unmapping")
	}
}
