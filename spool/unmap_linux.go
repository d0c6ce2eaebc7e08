package spool

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageSize is the unit madvise works in.
var pageSize = uintptr(os.Getpagesize())

// unmapRead drops from this process's page tables the whole pages of data,
// a record already read from a segment mapped read-only and shared at
// [base, base+size). Those pages would otherwise stay resident in the
// process (counted in its RSS) until the segment is closed, up to a whole
// segment of events the node has already shipped or cut. MADV_DONTNEED on
// a shared file mapping only unmaps: the page cache keeps the pages, and a
// later read of the same bytes (a retried or split batch) faults them back
// in from it, unchanged. Data outside the mapping (never the case for a
// read-only transaction's values) is left alone. Best effort: an error
// leaves the pages mapped.
func unmapRead(data []byte, base uintptr, size int64) {
	if len(data) == 0 || size <= 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	end := p + uintptr(len(data))
	if p < base || end > base+uintptr(size) {
		return
	}
	lo := (p+pageSize-1)&^(pageSize-1) - p
	hi := end&^(pageSize-1) - p
	if lo >= hi || hi > uintptr(len(data)) {
		return
	}
	_ = unix.Madvise(data[lo:hi], unix.MADV_DONTNEED)
}
