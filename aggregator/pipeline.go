package aggregator

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/spool"
)

// A pipeline carries one class's batches from cut to publish, so that one
// class can use every core: the lane's shipper cuts batches in spool order
// (one goroutine: the cursor, the set-aside ranges and the level's
// decision stay its own), the claimer claims them durably in the spool,
// compression workers, each with its own reused encoder, compress them in
// parallel, and the sequencer hands them to the publisher one by one in
// the order they were cut, each as soon as it is claimed and compressed
// and every batch before it has gone. The shaper's admission still decides
// when each goes (publisher.send).
//
// Claims: a claim is a spool commit (an fsync under FsyncAlways, shared
// with the appends queued with it). The shipper does not wait for it: it
// cuts the next batches while the claimer waits, and the claimer claims
// every batch cut meanwhile in one commit (spool.Claim of several ranges).
// A batch is sent only once its claim is durable; a claim that cannot be
// made before ctx ends (a failing disk at shutdown) leaves its batch and
// every later one unsent and unclaimed, as a send refused does (below):
// the shipper's cursor lives in memory only, so after a restart they are
// cut anew.
//
// Bounded: a batch takes a slot before it is cut and gives it back once
// the publisher has sent it (or let it go unsent), so at most depth,
// 2×(workers+1), batches are read but not yet published: one waiting in
// send while the workers compress the next ones, and as many again cut
// while their claim commits (a claim waits for the commit in progress,
// then its own, both fsync'd behind the appends of the moment: with
// workers+1 slots, the ingest class's shipper waited for room about as
// long as it had waited for the claims themselves). A batch holds its
// NDJSON only until compressed, its compressed body until acknowledged.
// Publishing in claim order keeps the class's batches in spool order on
// the stream, as with one goroutine.
//
// Shutdown: the shipper closes the pipeline (done) when it stops; the
// workers compress what was cut and exit, and the sequencer sends it all
// unless the publisher refuses one (ctx ended, or a deferred class while
// draining), after which it stops sending (the stop channel also tells the
// shipper) and gives the rest's buffers back: their ranges are claimed,
// so the next start republishes them, identically.
type pipeline struct {
	bt      *batcher
	send    func(context.Context, *flight) bool // the publisher's send
	workers int
	depth   int // slots: batches cut and not yet sent

	slots  chan struct{} // a token per batch cut and not yet sent
	jobs   chan *job     // to the workers
	order  chan *job     // to the sequencer, in cut order
	claims chan *job     // to the claimer, in cut order
	stop   chan struct{} // closed by the sequencer once a send failed

	// claim claims ranges in one spool commit, retrying a failing spool;
	// false once ctx ended first (batcher.claimAll).
	claim func(context.Context, []spool.Range) bool

	// busy counts the slots held, peak its maximum, blocked the times
	// the shipper waited for one (tests).
	busy, peak, blocked atomic.Int64
}

// A job is one batch in the pipeline.
type job struct {
	f       *flight
	ready   chan struct{} // closed once f is compressed (or skipped after stop)
	claimed chan struct{} // closed once f's range is claimed, or never will be (unclaimed)
	// unclaimed is set before claimed is closed if the claim could not be
	// made: f must not be sent.
	unclaimed bool
}

// newPipeline returns the pipeline for bt's batches, sent with send,
// compressed by workers goroutines (at least 1), claimed with a backoff
// between retryMin and retryMax on spool failures.
func newPipeline(bt *batcher, send func(context.Context, *flight) bool, workers int, retryMin, retryMax time.Duration) *pipeline {
	workers = max(workers, 1)
	depth := 2 * (workers + 1)
	return &pipeline{
		bt: bt, send: send, workers: workers, depth: depth,
		slots:  make(chan struct{}, depth),
		jobs:   make(chan *job, depth),
		order:  make(chan *job, depth),
		claims: make(chan *job, depth),
		stop:   make(chan struct{}),
		claim: func(ctx context.Context, rs []spool.Range) bool {
			return bt.claimAll(ctx, retryMin, retryMax, rs)
		},
	}
}

// tryAcquire takes a slot if one is free and the sequencer has not
// stopped.
func (pl *pipeline) tryAcquire() bool {
	if pl.stopped() {
		return false
	}
	select {
	case pl.slots <- struct{}{}:
		pl.took()
		return true
	default:
		return false
	}
}

// acquire waits for a slot. It returns false if ctx ends or the sequencer
// has stopped first.
func (pl *pipeline) acquire(ctx context.Context) bool {
	if pl.tryAcquire() {
		return true
	}
	if pl.stopped() {
		return false
	}
	pl.blocked.Add(1)
	select {
	case pl.slots <- struct{}{}:
		pl.took()
		return true
	case <-ctx.Done():
		return false
	case <-pl.stop:
		return false
	}
}

func (pl *pipeline) took() {
	n := pl.busy.Add(1)
	for {
		p := pl.peak.Load()
		if n <= p || pl.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (pl *pipeline) release() {
	pl.busy.Add(-1)
	<-pl.slots
}

// stopped reports whether the sequencer has stopped sending.
func (pl *pipeline) stopped() bool { return isClosed(pl.stop) }

// submit hands f, cut under a slot the caller holds, to the claimer
// (unless claimed: a range claimed before a restart, cut again), the
// workers and the sequencer. It never blocks: the channels hold as many
// jobs as there are slots.
func (pl *pipeline) submit(f *flight, claimed bool) {
	j := &job{f: f, ready: make(chan struct{}), claimed: make(chan struct{})}
	if claimed {
		close(j.claimed)
	} else {
		pl.claims <- j
	}
	pl.jobs <- j
	pl.order <- j
}

// done tells the claimer, the workers and the sequencer that nothing more
// comes.
func (pl *pipeline) done() {
	close(pl.claims)
	close(pl.jobs)
	close(pl.order)
}

// claimer claims the jobs' ranges in cut order until the pipeline is done:
// all the jobs waiting when it is free in one spool commit. Once a claim
// failed for good (ctx ended), it claims no more: the remaining jobs are
// unclaimed too, so no batch is claimed after one that never was.
func (pl *pipeline) claimer(ctx context.Context) {
	var group []*job
	var rs []spool.Range
	failed := false
	for j := range pl.claims {
		group = append(group[:0], j)
	more:
		for len(group) < cap(pl.claims) {
			select {
			case j, ok := <-pl.claims:
				if !ok {
					break more
				}
				group = append(group, j)
			default:
				break more
			}
		}
		if !failed {
			rs = rs[:0]
			for _, j := range group {
				rs = append(rs, j.f.rng())
			}
			failed = !pl.claim(ctx, rs)
		}
		for _, j := range group {
			j.unclaimed = failed
			close(j.claimed)
		}
		clear(group)
	}
}

// compressor is a worker: it compresses jobs with its encoders until the
// pipeline is done. After a stop it only passes them on.
func (pl *pipeline) compressor(enc *encoders) {
	defer enc.close()
	for j := range pl.jobs {
		if !pl.stopped() {
			pl.bt.compress(enc, &j.f.batch)
		}
		close(j.ready)
	}
}

// sequence is the sequencer: it sends the batches in cut order, each once
// claimed and compressed, until the pipeline is done, then returns. After
// a failed send or claim it only gives the remaining batches' buffers
// back.
func (pl *pipeline) sequence(ctx context.Context) {
	for j := range pl.order {
		<-j.ready
		<-j.claimed
		if j.unclaimed || pl.stopped() || !pl.send(ctx, j.f) {
			if !pl.stopped() {
				close(pl.stop)
			}
			// Not published: it stays claimed (or, unclaimed, unread
			// after a restart) and goes after a restart.
			pl.bt.release(&j.f.batch)
		}
		pl.release()
	}
}
