package connlimit

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// conn is an admitted connection. It holds its slot until its first Close.
type conn struct {
	net.Conn
	l      *Listener
	key    netip.Addr // with a per-client cap
	cl     *client    // nil without
	closed atomic.Bool

	// Guarded by l.mu.
	released  bool
	idle      bool
	idleSince time.Time
	links     [2]link // in l.idle and in cl.idle
}

// Close closes the connection and frees its slot. Only the first call does
// anything; later calls return nil.
func (c *conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return err
}

// NetConn returns the underlying connection (a *net.TCPConn from a TCP
// listener), for SetLinger, SetNoDelay and the like. Close this conn, not
// that one: closing the underlying one directly frees no slot.
func (c *conn) NetConn() net.Conn { return c.Conn }

// Indexes of the two queues a conn can be in.
const (
	globalQ = 0
	clientQ = 1
)

type link struct{ prev, next *conn }

// queue is an intrusive doubly linked list of conns through links[i]:
// O(1) push, remove and oldest, no allocation.
type queue struct {
	head, tail *conn
	i          int
}

func (q *queue) push(c *conn) {
	lk := &c.links[q.i]
	lk.prev, lk.next = q.tail, nil
	if q.tail != nil {
		q.tail.links[q.i].next = c
	} else {
		q.head = c
	}
	q.tail = c
}

func (q *queue) remove(c *conn) {
	lk := &c.links[q.i]
	if lk.prev != nil {
		lk.prev.links[q.i].next = lk.next
	} else {
		q.head = lk.next
	}
	if lk.next != nil {
		lk.next.links[q.i].prev = lk.prev
	} else {
		q.tail = lk.prev
	}
	*lk = link{}
}
