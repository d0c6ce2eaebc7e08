//go:build !linux

package spool

// readahead is posix_fadvise WILLNEED on Linux; elsewhere the mmap's page
// faults read the segment alone.
func readahead(path string) {}
