//go:build !linux

package spool

// unmapEvery is how many bytes of records a segment's readers pass between
// two unmapReadPages of it.
const unmapEvery = 4 << 20

// unmapReadPages drops the pages of a segment's mapping from the process
// on Linux; elsewhere they stay mapped until the segment is closed.
func unmapReadPages(base uintptr, size int64) {}
