package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// clockSkew bounds how far the node's clock may be ahead of the servers'
// for the lookup of onceGuard: a batch first published at node time t is
// looked for among the messages the stream stored from server time
// t - clockSkew on.
const clockSkew = time.Minute

// onceGuard keeps one class's batches from being stored twice when they
// are sent again past the stream's duplicate window, where JetStream's
// Nats-Msg-Id deduplication no longer holds.
//
// # When
//
// An attempt of a batch is late when the batch's first attempt may have
// been made more than H = retryHorizon(W) ago, W the node's duplicate
// window (which the stream's is at least, or the node refuses it, see
// checkStream): when the batch was first sent by this process more than H
// ago (the flight's firstSent), or when it was claimed before the node
// started (a claim New found in the spool: its first attempt, if any, was
// made by an earlier process, after every event of the range was
// ingested, so no earlier than now - H if its oldest event is younger
// than that). An attempt that is not late is sent as before: it reaches
// the stream less than W after the first attempt was stored, so the
// stream's duplicate window drops it if the first got there.
//
// # How
//
// A late attempt first looks for its batch in the stream: it reads the
// headers of the messages stored on the class's subject, from the first
// stored at or after (first attempt's lower bound - clockSkew) through
// the subject's last message, S. If one carries the batch's Nats-Msg-Id,
// the batch is stored: it is not sent, and is acknowledged as a duplicate
// (the spool reclaims its range). If none does, it is published with
// Nats-Expected-Last-Subject-Sequence S: JetStream stores it only if the
// subject's last message is still S, and otherwise refuses it (wrong last
// sequence), and the guard reads on from S+1 and tries again.
//
// # Why it never stores a batch twice
//
// Say the late attempt P stores the batch at stream sequence q. JetStream
// stored it only because the subject's last message was S, so no message
// of the subject lies in (S, q). The read covered the subject from the
// lower bound through S and found no copy. An earlier copy stored before
// q lies at or after the lower bound (it was stored after the batch's
// first attempt, which is after the bound), so it would have been found:
// there is none. A copy stored after q comes from an attempt that
// reaches the stream after P: a later late attempt reads the stream first
// and finds P's copy; an attempt that is not late, or one sent before P
// and still on its way, arrives less than W after P was stored and is
// dropped by the duplicate window, which P's id entered at q.
//
// # Why it never loses a batch
//
// A batch is acknowledged without being sent only when a message with its
// Nats-Msg-Id is in the stream. The id names the spool, the class and the
// spool range (wire.MsgID), so that message holds the range's events.
// Any failure (the read, the publish, a conflict that persists) is an
// error of the attempt, which the publisher retries as it retries any
// failed publish: the batch stays claimed in the spool.
//
// # Assumptions
//
//   - An attempt reaches the stream, if ever, within W - H (20 s, or W/2
//     for a window under 40 s) of being published: the node's connection
//     keeps no reconnect buffer (nats.ReconnectBufSize(-1), as sluice run
//     sets), so an attempt made while disconnected fails at once instead
//     of going out later.
//   - The node's clock is at most clockSkew ahead of the servers', and is
//     not set back across a restart by more than that.
//   - The batch's earlier copy is still in the stream: not expired by the
//     stream's max age, deleted or purged. One that is gone is stored
//     again.
//   - Every attempt of the batch went to the class's subject of this
//     node's Subject: a changed subject prefix hides earlier copies.
//   - Spool ids are unique among the nodes that publish to the stream
//     (docs/wire.md), as the duplicate window already needs.
//
// # Cost
//
// Only late attempts pay: one stream info, one last-message lookup and one
// ordered consumer reading headers only, of the class's messages since
// the lower bound (every node's), once per class: the guard remembers the
// ids of its own spool it has read and reads on from where it stopped. A
// late attempt is published synchronously, one at a time per class.
type onceGuard struct {
	js      jetstream.JetStream
	stream  string
	subject string // the class's subject
	prefix  string // the Nats-Msg-Id prefix of the class's batches: spool id "." class "."
	horizon time.Duration
	timeout time.Duration
	window  time.Duration
	log     *slog.Logger
	now     func() time.Time
	ctx     context.Context // the node's: ends at a hard stop

	claimed map[spool.Range]bool // claims found at New (first attempted by an earlier process); read-only

	mu sync.Mutex // serializes late attempts and guards the read
	// The read so far: the guard's own ids stored on the subject, by
	// Nats-Msg-Id, from the first message at or after from (zero: the
	// stream's first) through stream sequence next-1.
	from time.Time
	next uint64
	ids  map[string]uint64
}

// newOnceGuard returns the guard of class, whose claims found at New are
// claimed; ctx ends its lookups.
func newOnceGuard(ctx context.Context, o *Options, js jetstream.JetStream, spoolID, class string, claimed []spool.Range, now func() time.Time) *onceGuard {
	g := &onceGuard{
		js: js, stream: o.Stream, subject: o.Subject + "." + class,
		prefix:  spoolID + "." + class + ".", // wire.MsgID's
		horizon: retryHorizon(o.DuplicateWindow), timeout: o.AckTimeout, window: o.DuplicateWindow,
		log: o.Logger, now: now, ctx: ctx,
		claimed: make(map[spool.Range]bool, len(claimed)),
	}
	for _, r := range claimed {
		g.claimed[r] = true
	}
	return g
}

// publish makes attempt f.attempts of batch f: asynchronously, as before,
// unless the attempt is late (see onceGuard), when it looks for the batch
// in the stream first. A nil guard always publishes.
func (g *onceGuard) publish(js jetstream.Publisher, f *flight) (jetstream.PubAckFuture, error) {
	if g == nil {
		return js.PublishMsgAsync(f.msg)
	}
	bound, late := g.late(f)
	if !late {
		return js.PublishMsgAsync(f.msg)
	}
	ack, err := g.publishLate(f, bound)
	if err != nil {
		return nil, err
	}
	return doneFuture{msg: f.msg, ack: ack}, nil
}

// late says whether an attempt of f now is late, and the lower bound of
// its first attempt's time (zero: unknown).
func (g *onceGuard) late(f *flight) (time.Time, bool) {
	now := g.now()
	claimed := g.claimed[f.rng()]
	if claimed {
		// First attempted by an earlier process, after every event of
		// the range was ingested (the range was claimed then).
		if f.Oldest.IsZero() || now.Sub(f.Oldest) > g.horizon {
			return f.Oldest, true
		}
	}
	if !f.firstSent.IsZero() && now.Sub(f.firstSent) > g.horizon {
		if claimed {
			return f.Oldest, true
		}
		return f.firstSent, true
	}
	return time.Time{}, false
}

// publishLate looks for f in the stream and publishes it only if it is
// not there, conditionally on the subject's last message being the last
// one read. The ack says Duplicate when the batch was found.
func (g *onceGuard) publishLate(f *flight, bound time.Time) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(g.ctx, 4*g.timeout)
	defer cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	id := f.msg.Header.Get(wire.HdrMsgID)
	start := time.Time{}
	if !bound.IsZero() {
		start = bound.Add(-clockSkew)
	}
	for range 8 {
		last, err := g.read(ctx, start)
		if err != nil {
			return nil, fmt.Errorf("aggregator: look for batch %s in stream %s: %w", id, g.stream, err)
		}
		if seq, ok := g.ids[id]; ok {
			g.log.Info("batch found in the stream past the duplicate window: not sent again", "msg_id", id, "seq", seq)
			return &jetstream.PubAck{Stream: g.stream, Sequence: seq, Duplicate: true}, nil
		}
		f.msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(last, 10))
		ack, err := g.js.PublishMsg(ctx, f.msg)
		f.msg.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
		if err == nil {
			if !ack.Duplicate {
				g.ids[id] = ack.Sequence
				g.log.Info("batch sent past the duplicate window, not found in the stream", "msg_id", id, "seq", ack.Sequence)
			}
			return ack, nil
		}
		if !wrongLastSequence(err) {
			return nil, err
		}
		// A message reached the subject since the read: read on.
	}
	return nil, fmt.Errorf("aggregator: batch %s: the subject %s kept changing under 8 conditional publishes", id, g.subject)
}

// wrongLastSequence says whether err is JetStream's refusal of a
// conditional publish.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// read brings the read of the subject up to its last message, starting
// (again) at the first message stored at or after start if the read so
// far began later (or much earlier: the ids it holds are then given up
// rather than kept for good), and returns the sequence of the subject's
// last message read (0: the subject has none). g.mu is held.
func (g *onceGuard) read(ctx context.Context, start time.Time) (uint64, error) {
	if g.ids == nil || start.Before(g.from) || start.Sub(g.from) > max(g.window, clockSkew) {
		g.from, g.next, g.ids = start, 0, make(map[string]uint64)
	}
	s, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return 0, err
	}
	var last uint64
	m, err := s.GetLastMsgForSubject(ctx, g.subject)
	switch {
	case err == nil:
		last = m.Sequence
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	default:
		return 0, err
	}
	if g.next > last {
		return last, nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{g.subject}, HeadersOnly: true,
		InactiveThreshold: max(2*g.timeout, time.Second)}
	switch {
	case g.next > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, g.next
	case !g.from.IsZero():
		from := g.from
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	c, err := g.js.OrderedConsumer(ctx, g.stream, cfg)
	if err != nil {
		return 0, err
	}
	defer func() {
		// Best effort: the server drops it after InactiveThreshold anyway.
		if info := c.CachedInfo(); info != nil {
			g.js.DeleteConsumer(context.WithoutCancel(ctx), g.stream, info.Name)
		}
	}()
	pending := c.CachedInfo().NumPending
	if pending == 0 {
		// Nothing on the subject since the start: the last message is
		// older.
		g.next = last + 1
		return last, nil
	}
	for g.next <= last {
		// Asking for no more than are pending, the fetch returns as soon
		// as they are here.
		batch, err := c.Fetch(int(min(max(pending, 1), 256)), jetstream.FetchMaxWait(g.timeout))
		if err != nil {
			return 0, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return 0, err
			}
			pending = md.NumPending
			if id := msg.Headers().Get(wire.HdrMsgID); strings.HasPrefix(id, g.prefix) {
				g.ids[id] = md.Sequence.Stream
			}
			g.next = md.Sequence.Stream + 1
			if md.NumPending == 0 && g.next <= last {
				// The subject's last message was deleted: nothing more.
				g.next = last + 1
			}
		}
		if err := batch.Error(); err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, fmt.Errorf("read of %s stopped at seq %d before its last message %d", g.subject, g.next, last)
		}
	}
	// Read through last, and maybe past it: what came since is read too.
	return g.next - 1, nil
}

// doneFuture is the outcome of a late attempt, already known.
type doneFuture struct {
	msg *nats.Msg
	ack *jetstream.PubAck
}

func (d doneFuture) Ok() <-chan *jetstream.PubAck {
	c := make(chan *jetstream.PubAck, 1)
	c <- d.ack
	return c
}

func (d doneFuture) Err() <-chan error { return nil }

func (d doneFuture) Msg() *nats.Msg { return d.msg }
