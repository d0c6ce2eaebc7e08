//go:build unix

package connlimit

import (
	"net"
	"syscall"
)

// drain reads and discards what the peer has already sent, without
// waiting, so that closing c sends a FIN and not a RST: a socket closed with
// unread data is reset, and a reset can make the client miss the refusal
// written just before. At most 64 KiB; bytes still in flight are not waited
// for.
func drain(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		var buf [4096]byte
		for range 16 {
			n, err := syscall.Read(int(fd), buf[:])
			if n <= 0 || err != nil {
				break
			}
		}
		return true // done: never wait for readability
	})
}
