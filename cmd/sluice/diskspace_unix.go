//go:build unix

package main

import "golang.org/x/sys/unix"

// diskSpace returns the bytes available to an unprivileged user and the
// size of the file system holding dir.
func diskSpace(dir string) (free, size uint64, ok bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), uint64(st.Blocks) * uint64(st.Bsize), true
}
