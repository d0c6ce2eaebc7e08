//go:build !linux

package spool

// unmapRead drops the pages of a record read from a segment's mapping on
// Linux; elsewhere they stay mapped until the segment is closed.
func unmapRead(data []byte, base uintptr, size int64) {}
