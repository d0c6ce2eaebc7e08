//go:build !unix

package connlimit

import "net"

// drain does nothing where the socket cannot be read without waiting.
func drain(net.Conn) {}
