package connlimit

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestNewOptions(t *testing.T) {
	for _, o := range []Options{{Max: -1}, {PerIP: -1}, {Reserve: -1}, {EvictAfter: -time.Second}} {
		if _, err := New(newFake(false), o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v): %v, want ErrInvalidOptions", o, err)
		}
	}
	if _, err := New(nil, Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("New(nil): %v, want ErrInvalidOptions", err)
	}
	l, err := New(newFake(false), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Max != DefaultMax(0) || s.PerIP != 0 || l.opts.EvictAfter != DefaultEvictAfter {
		t.Errorf("zero Options gave %+v, EvictAfter %v", s, l.opts.EvictAfter)
	}
	m := DefaultMax(0)
	if m < 1 || m > DefaultCap {
		t.Errorf("DefaultMax(0) = %d, outside [1, %d]", m, DefaultCap)
	}
	soft, ok := softNoFile()
	t.Logf("soft RLIMIT_NOFILE %d (known %v): DefaultMax(0) = %d", soft, ok, m)
}

func TestMaxFor(t *testing.T) {
	for _, tc := range []struct {
		soft    uint64
		reserve int
		want    int
	}{
		{1048576, 512, DefaultCap},
		{1 << 63, 512, DefaultCap}, // RLIM_INFINITY
		{2048 + 512, 512, 2048},
		{1500, 512, 988},
		{1024, 512, 512},
		{256, 512, 128}, // half kept for the rest
		{1, 512, 1},
		{0, 512, 1},
	} {
		if got := maxFor(tc.soft, tc.reserve); got != tc.want {
			t.Errorf("maxFor(%d, %d) = %d, want %d", tc.soft, tc.reserve, got, tc.want)
		}
	}
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string // "" for no key
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 5}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 5}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 5, Zone: "eth0"}, "fe80::"},
		{&net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5}, "192.0.2.7"},
		{&net.UnixAddr{Name: "/run/sluice.sock", Net: "unix"}, ""},
		{nil, ""},
	} {
		got, ok := clientKey(tc.addr)
		if want, _ := netip.ParseAddr(tc.want); got != want || ok != (tc.want != "") {
			t.Errorf("clientKey(%v) = %v, %v; want %q", tc.addr, got, ok, tc.want)
		}
	}
}
