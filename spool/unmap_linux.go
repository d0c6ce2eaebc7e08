package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// pageSize is the unit madvise works in.
var pageSize = uintptr(os.Getpagesize())

// unmapEvery is how many bytes of records a segment's readers pass between
// two unmapReadPages of it: the bound on the pages read and still mapped.
const unmapEvery = 4 << 20

// unmapReadPages drops from this process's page tables every page of a
// segment mapped read-only and shared at [base, base+size). Without it,
// each page a reader touched (and each page bbolt copied when rewriting
// its last leaf) stays resident in the process, counted in its RSS, until
// the segment is closed: up to a whole segment of events the node has
// already shipped. MADV_DONTNEED on a shared file mapping only unmaps: the
// page cache keeps the pages, and a later access, of events not read yet
// or read again (a retried or split batch), or of the tree's pages, faults
// them back in from it, unchanged.
//
// Each call costs a TLB flush on every core running the process, so it is
// made once per unmapEvery bytes read rather than per record. It must run
// inside a read transaction of the segment, where the mapping cannot move.
// Best effort: an error leaves the pages mapped.
func unmapReadPages(base uintptr, size int64) {
	if base == 0 || size <= 0 {
		return
	}
	n := (uintptr(size) + pageSize - 1) &^ (pageSize - 1)
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, base, n, unix.MADV_DONTNEED)
}
