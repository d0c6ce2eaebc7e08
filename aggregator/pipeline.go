package aggregator

import (
	"context"
	"sync/atomic"
)

// A pipeline carries one class's batches from cut to publish, so that one
// class can use every core: the lane's shipper cuts and claims batches in
// spool order (one goroutine: the cursor, the set-aside ranges and the
// level's decision stay its own), compression workers, each with its own
// reused encoder, compress them in parallel, and the sequencer hands them
// to the publisher one by one in the order they were cut, each as soon as
// it and every batch before it are compressed. The shaper's admission
// still decides when each goes (publisher.send).
//
// Bounded: a batch takes a slot before it is cut and gives it back once
// the publisher has sent it (or let it go unsent), so at most workers+1
// batches are read but not yet published: one waiting in send while the
// workers compress the next ones. Publishing in claim order keeps the
// class's batches in spool order on the stream, as with one goroutine.
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

	slots chan struct{} // a token per batch cut and not yet sent
	jobs  chan *job     // to the workers
	order chan *job     // to the sequencer, in cut order
	stop  chan struct{} // closed by the sequencer once a send failed

	// busy counts the slots held, peak its maximum, blocked the times
	// the shipper waited for one (tests).
	busy, peak, blocked atomic.Int64
}

// A job is one batch in the pipeline.
type job struct {
	f     *flight
	ready chan struct{} // closed once f is compressed (or skipped after stop)
}

// newPipeline returns the pipeline for bt's batches, sent with send,
// compressed by workers goroutines (at least 1).
func newPipeline(bt *batcher, send func(context.Context, *flight) bool, workers int) *pipeline {
	workers = max(workers, 1)
	return &pipeline{
		bt: bt, send: send, workers: workers,
		slots: make(chan struct{}, workers+1),
		jobs:  make(chan *job, workers+1),
		order: make(chan *job, workers+1),
		stop:  make(chan struct{}),
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

// submit hands f, cut and claimed under a slot the caller holds, to the
// workers and the sequencer. It never blocks: both channels hold as many
// jobs as there are slots.
func (pl *pipeline) submit(f *flight) {
	j := &job{f: f, ready: make(chan struct{})}
	pl.jobs <- j
	pl.order <- j
}

// done tells the workers and the sequencer that nothing more comes.
func (pl *pipeline) done() {
	close(pl.jobs)
	close(pl.order)
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

// sequence is the sequencer: it sends the batches in cut order until the
// pipeline is done, then returns. After a failed send it only gives the
// remaining batches' buffers back.
func (pl *pipeline) sequence(ctx context.Context) {
	for j := range pl.order {
		<-j.ready
		if pl.stopped() || !pl.send(ctx, j.f) {
			if !pl.stopped() {
				close(pl.stop)
			}
			// Not published: it stays claimed and goes after a restart.
			pl.bt.release(&j.f.batch)
		}
		pl.release()
	}
}
