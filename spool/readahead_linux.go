package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// readaheadChunk is the length of each posix_fadvise WILLNEED: Linux reads
// at most the device's readahead window per call (read_ahead_kb, often
// 128 KiB), so a whole segment takes a call per chunk.
const readaheadChunk = 128 << 10

// readahead asks the kernel to read the file at path into the page cache
// (posix_fadvise WILLNEED over the whole file, which starts the reads and
// does not wait for them). A reader draining segments that the page cache
// no longer holds (a backlog larger than memory, or one left by a reboot)
// otherwise faults their pages in through the mmap, and the kernel's
// read-around gives up on a mapping with many misses: the drain then waits
// for the disk a page at a time. Best effort: a file that cannot be opened
// is read by the faults alone.
func readahead(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return
	}
	for off := int64(0); off < fi.Size(); off += readaheadChunk {
		if unix.Fadvise(int(f.Fd()), off, readaheadChunk, unix.FADV_WILLNEED) != nil {
			return
		}
	}
}
