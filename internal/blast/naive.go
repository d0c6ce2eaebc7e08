package blast

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Naive baseline settings: what a tracking client without an aggregator
// does. Every event is one JetStream message with its id as Nats-Msg-Id,
// published asynchronously with at most naiveMaxPending unacknowledged; a
// publish that fails or times out goes again after naiveRetryAfter, with
// no jitter and no budget; events wait in memory (no spool) and an event
// that finds the queue full is dropped.
const (
	naiveMaxPending = 256
	naiveQueue      = 100_000 // events per class
	naiveRetryAfter = time.Second
	naiveAckTimeout = 5 * time.Second // aggregator.Options.AckTimeout's default
)

// errNaiveFull is the naive client's answer when its queue is full.
var errNaiveFull = errors.New("bench: naive client queue full: event dropped")

// naive is the one-publish-per-event baseline.
type naive struct {
	js      jetstream.JetStream
	subject string
	ctx     context.Context
	classes map[string]*naiveClass
	wg      sync.WaitGroup
}

type naiveClass struct {
	queue                          chan *nats.Msg
	acked, attempts, dropped, wire atomic.Uint64
	firstSends                     atomic.Uint64
	mu                             sync.Mutex
	ackedIDs                       map[string]struct{} // an event acked twice (its ack outlived its timeout, then its retry's) counts once
}

// newNaive starts one publisher per class on nc, which the caller closes
// after stop.
func newNaive(ctx context.Context, nc *nats.Conn, subject string, classes []string) (*naive, error) {
	nv := &naive{subject: subject, ctx: ctx, classes: map[string]*naiveClass{}}
	for _, c := range classes {
		nv.classes[c] = &naiveClass{queue: make(chan *nats.Msg, naiveQueue), ackedIDs: map[string]struct{}{}}
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(naiveMaxPending),
		jetstream.WithPublishAsyncTimeout(naiveAckTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			if c := nv.class(m.Subject); c != nil {
				id := m.Header.Get(jetstream.MsgIDHeader)
				c.mu.Lock()
				_, seen := c.ackedIDs[id]
				c.ackedIDs[id] = struct{}{}
				c.mu.Unlock()
				if !seen {
					c.acked.Add(1)
				}
			}
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
			nv.retry(m)
		}))
	if err != nil {
		return nil, err
	}
	nv.js = js
	for _, c := range nv.classes {
		nv.wg.Go(func() { nv.publish(c) })
	}
	return nv, nil
}

func (nv *naive) class(subject string) *naiveClass {
	return nv.classes[subject[strings.LastIndexByte(subject, '.')+1:]]
}

// Ingest queues each event as its own message; it drops what does not
// fit, as an SDK with a bounded memory queue does.
func (nv *naive) Ingest(_ context.Context, class string, evs ...[]byte) error {
	c := nv.classes[class]
	for _, ev := range evs {
		_, id := parseEvent(ev)
		m := &nats.Msg{Subject: nv.subject + "." + class, Data: ev, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, id)
		select {
		case c.queue <- m:
		default:
			c.dropped.Add(1)
			return errNaiveFull
		}
	}
	return nil
}

// retry publishes m again after naiveRetryAfter.
func (nv *naive) retry(m *nats.Msg) {
	c := nv.class(m.Subject)
	if c == nil {
		return
	}
	time.AfterFunc(naiveRetryAfter, func() { nv.send(c, m) })
}

func (nv *naive) publish(c *naiveClass) {
	for {
		select {
		case <-nv.ctx.Done():
			return
		case m := <-c.queue:
			c.firstSends.Add(1)
			c.wire.Add(uint64(len(m.Data)))
			nv.send(c, m)
		}
	}
}

// send publishes m, waiting while the client has naiveMaxPending
// unacknowledged messages.
func (nv *naive) send(c *naiveClass, m *nats.Msg) {
	for nv.ctx.Err() == nil {
		_, err := nv.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Second))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			continue // nothing sent: the client waits for room
		}
		c.attempts.Add(1)
		if err != nil {
			nv.retry(m)
		}
		return
	}
}

// backlog is the events of class queued, or sent and not yet acknowledged.
func (nv *naive) backlog(class string) uint64 {
	c := nv.classes[class]
	sent := c.firstSends.Load()
	return uint64(len(c.queue)) + sent - min(sent, c.acked.Load())
}

func (nv *naive) stop() { nv.wg.Wait() }
