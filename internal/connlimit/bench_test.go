package connlimit

import (
	"net"
	"testing"
)

// BenchmarkAcceptClose measures what the wrapper adds to an accept and a
// close: the inner listener and conn are fakes that do nothing.
func BenchmarkAcceptClose(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"limit", Options{Max: 1024}},
		{"perIP", Options{Max: 1024, PerIP: 16}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			nc := &fakeConn{peer: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}}
			l, err := New(oneConn{nc}, bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := l.Accept()
				if err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
			if s := l.Stats(); s.Open != 0 {
				b.Fatalf("open %d", s.Open)
			}
		})
	}
}

// oneConn is a listener that returns the same conn forever.
type oneConn struct{ c net.Conn }

func (o oneConn) Accept() (net.Conn, error) { return o.c, nil }
func (o oneConn) Close() error              { return nil }
func (o oneConn) Addr() net.Addr            { return o.c.RemoteAddr() }
