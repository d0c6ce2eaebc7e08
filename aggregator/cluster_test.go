package aggregator_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluicehq/sluice/internal/linkemu"
)

// quietPorts are the ports quietPort has handed out in this process, so
// that parallel tests never share one.
var quietPorts = struct {
	sync.Mutex
	taken map[int]bool
}{taken: make(map[int]bool)}

// quietPort returns a free loopback port below the kernel's ephemeral
// range. A server that is stopped and restarted on the same port needs
// one: while nothing listens on a port of the ephemeral range, a client
// reconnecting to it every 50 ms can be given that very port as its source
// and connect to itself (TCP simultaneous open), which then keeps the
// restarted server from binding it.
func quietPort(t testing.TB) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil {
			lo = first
		}
	}
	const base = 10000
	if lo <= base+1000 {
		t.Fatalf("ephemeral ports start at %d: no quiet range below them", lo)
	}
	quietPorts.Lock()
	defer quietPorts.Unlock()
	for range 1000 {
		p := base + rand.IntN(lo-base)
		if quietPorts.taken[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		quietPorts.taken[p] = true
		return p
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// jsCluster is a JetStream cluster of in-process nats-servers on loopback.
// Every route between two servers runs through a link emulator of its own
// (one per direction of solicitation), so that a server can be cut off
// from its peers before it stops: crash then makes a server vanish the way
// a kill -9 does, without the leadership hand-off of a clean shutdown.
type jsCluster struct {
	t       testing.TB
	name    string
	dirs    []string
	ports   []int // client ports
	cports  []int // cluster (route) ports
	dead    int   // a reserved port nothing listens on: the advertised route address
	proxies [][]*linkemu.Link
	mu      sync.Mutex
	srvs    []*server.Server // nil while stopped
}

// startCluster starts a cluster of size servers and waits until each one
// accepts clients. JetStream's meta group may still be electing its leader
// when it returns.
func startCluster(t testing.TB, size int) *jsCluster {
	t.Helper()
	c := &jsCluster{t: t, name: "sluice-faults", dead: quietPort(t)}
	for range size {
		c.dirs = append(c.dirs, t.TempDir())
		c.ports = append(c.ports, quietPort(t))
		c.cports = append(c.cports, quietPort(t))
	}
	c.srvs = make([]*server.Server, size)
	c.proxies = make([][]*linkemu.Link, size)
	for i := range size {
		c.proxies[i] = make([]*linkemu.Link, size)
		for j := range size {
			if i == j {
				continue
			}
			l, err := linkemu.New(linkemu.Options{
				Upstream:   fmt.Sprintf("127.0.0.1:%d", c.cports[j]),
				OutageMode: linkemu.OutageReset,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			c.proxies[i][j] = l
		}
	}
	t.Cleanup(func() {
		for i := range size {
			c.stop(i)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, size)
	for i := range size {
		wg.Go(func() { errs[i] = c.start(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// options builds server i's options afresh: the server keeps and changes
// the struct it was given, so a restart must not reuse it.
func (c *jsCluster) options(i int) *server.Options {
	var routes []string
	for j, l := range c.proxies[i] {
		if j != i {
			routes = append(routes, "nats-route://"+l.Addr())
		}
	}
	return &server.Options{
		ServerName: fmt.Sprintf("faults-%d", i),
		Host:       "127.0.0.1",
		Port:       c.ports[i],
		JetStream:  true,
		StoreDir:   c.dirs[i],
		Cluster: server.ClusterOpts{
			Name: c.name,
			Host: "127.0.0.1",
			Port: c.cports[i],
			// Gossip would send peers straight to the real route port,
			// around the emulators; the address it names answers nothing,
			// so only the configured routes (through the emulators) exist.
			Advertise: fmt.Sprintf("127.0.0.1:%d", c.dead),
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		NoLog:  true,
		NoSigs: true,
	}
}

// start starts server i (again) on its ports and store.
func (c *jsCluster) start(i int) error {
	s, err := server.NewServer(c.options(i))
	if err != nil {
		return fmt.Errorf("server %d: %w", i, err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("server %d not ready after 30 s", i)
	}
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
	return nil
}

// stop shuts server i down cleanly, if it runs.
func (c *jsCluster) stop(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// isolate resets every route of server i and refuses new ones (down) or
// lets them through again.
func (c *jsCluster) isolate(i int, down bool) {
	for j := range c.proxies {
		if j == i {
			continue
		}
		for _, l := range []*linkemu.Link{c.proxies[i][j], c.proxies[j][i]} {
			if err := l.SetDown(down); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// crash makes server i vanish as a killed process does: its routes are
// reset first, so the leaderships it holds cannot be handed over, then it
// stops (its clients see their connection closed).
func (c *jsCluster) crash(i int) {
	c.isolate(i, true)
	c.stop(i)
}

// restart brings a crashed server back on its ports and store.
func (c *jsCluster) restart(i int) {
	c.isolate(i, false)
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
}

// index returns the index of the server named name, or -1.
func (c *jsCluster) index(name string) int {
	for i := range c.ports {
		if fmt.Sprintf("faults-%d", i) == name {
			return i
		}
	}
	return -1
}

// url is server i's client URL.
func (c *jsCluster) url(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.ports[i]) }

// urls lists every server's client URL, comma-separated.
func (c *jsCluster) urls() string {
	var us []string
	for i := range c.ports {
		us = append(us, c.url(i))
	}
	return strings.Join(us, ",")
}

// waitJetStream polls f, a request to the cluster, until it succeeds or
// timeout passes: a fresh cluster answers JetStream requests only once its
// meta group has a leader.
func waitJetStream(t testing.TB, timeout time.Duration, what string, f func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v after %v", what, err, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
