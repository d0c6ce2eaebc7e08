package aggregator

import (
	"math"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a node's counters. Counters count since New.
type Stats struct {
	Classes map[string]ClassStats
	// Link is the shaper's view of the upstream link.
	Link LinkStats
	// SpoolBytes is the disk space of the whole spool.
	SpoolBytes int64
	// Quarantined counts damaged spool files moved aside since New.
	Quarantined int
	// StreamRefused is why the node publishes nothing to its stream
	// (Node.StreamRefused's message), or "" while it does.
	StreamRefused string
}

// ClassStats are one class's counters.
type ClassStats struct {
	Ingested      uint64 // events accepted by Ingest
	IngestedBytes uint64 // their bytes, as spooled
	Refused       uint64 // events refused with ErrFull
	Batches       uint64 // batches published (first sends, split halves included)
	Published     uint64 // events in those batches
	RawBytes      uint64 // uncompressed NDJSON bytes of those batches
	WireBytes     uint64 // compressed bytes of those batches
	Acked         uint64 // events acknowledged by JetStream
	Duplicates    uint64 // batches JetStream reported as duplicates (already stored)
	Retries       uint64 // republishes after a failure
	Errors        uint64 // failed publish attempts
	BudgetDenied  uint64 // failures whose immediate retry the budget, horizon or level refused
	Splits        uint64 // batches split in two because the server refused their size
	SpoolErrors   uint64 // failed spool reads or claims (retried)
	InFlight      int64  // batches published and not yet acknowledged
	Degraded      uint64 // batches sent with fields dropped
	Deferrals     uint64 // times the class was deferred by the degradation level
	Expired       uint64 // events past the class's MaxAge, not sent (Expire drop)
	Demoted       uint64 // events past the class's MaxAge, sent after the newer ones in batches labelled Sluice-Stale (Expire demote)
	TooLarge      uint64 // single events larger than the server's max payload, not sent

	// Dictionary: the class's trained zstd dictionaries (Options.Dictionary).
	DictMode          DictMode // auto, on or off
	Dict              uint32   // id of the dictionary batches are compressed with now; 0: none
	DictBatches       uint64   // batches compressed with a dictionary
	DictTrainings     uint64   // trainings started
	DictTrainErrors   uint64   // trainings that failed (too few samples, builder error, round trip)
	DictAdoptions     uint64   // dictionaries published to the bucket and put in use
	DictPublishErrors uint64   // failed writes of a dictionary to the bucket (batches went on without it)
	// DictRatio and DictPlainRatio are the compression ratios (raw/wire)
	// of the class's held-out recent events in batches of its size, with
	// and without the dictionary of the last training or check; 0 before.
	DictRatio, DictPlainRatio float64

	// Spool state.
	Depth      uint64            // events spooled and not yet acknowledged
	SpoolBytes int64             // disk bytes of the class's segments
	OldestAge  time.Duration     // age of the oldest unacknowledged event
	Dropped    map[string]uint64 // events dropped by the spool, by reason
	Latency    Quantiles         // ingest → JetStream ack, per batch (its oldest event)

	// Compression is the class's compression policy now: level, batch
	// bound, bottleneck.
	Compression CompressionStats
}

// Quantiles of a latency distribution, accurate to about 10%.
type Quantiles struct {
	Count         uint64
	P50, P95, P99 time.Duration
	Max           time.Duration
}

type laneStats struct {
	ingested, ingestedBytes, refused                   atomic.Uint64
	batches, published, rawBytes, wireBytes            atomic.Uint64
	acked, duplicates, retries, errors, spoolErrors    atomic.Uint64
	budgetDenied, splits, degraded, deferrals, expired atomic.Uint64
	tooLarge, demoted                                  atomic.Uint64
	dictBatches, dictTrainings, dictTrainErrors        atomic.Uint64
	dictAdoptions, dictPublishErrors                   atomic.Uint64
	dictID                                             atomic.Uint32
	inflight                                           atomic.Int64
	latency                                            histogram
}

// Stats returns a snapshot of the node's counters.
func (n *Node) Stats() Stats {
	sp := n.spool.Stats()
	s := Stats{
		Classes:     make(map[string]ClassStats, len(n.lanes)),
		Link:        *n.drv.snap.Load(),
		SpoolBytes:  sp.Bytes,
		Quarantined: sp.Quarantined,
	}
	if err := n.StreamRefused(); err != nil {
		s.StreamRefused = err.Error()
	}
	now := time.Now()
	for _, l := range n.lanes {
		c := ClassStats{
			Ingested:      l.stats.ingested.Load(),
			IngestedBytes: l.stats.ingestedBytes.Load(),
			Refused:       l.stats.refused.Load(),
			Batches:       l.stats.batches.Load(),
			Published:     l.stats.published.Load(),
			RawBytes:      l.stats.rawBytes.Load(),
			WireBytes:     l.stats.wireBytes.Load(),
			Acked:         l.stats.acked.Load(),
			Duplicates:    l.stats.duplicates.Load(),
			Retries:       l.stats.retries.Load(),
			Errors:        l.stats.errors.Load(),
			BudgetDenied:  l.stats.budgetDenied.Load(),
			Splits:        l.stats.splits.Load(),
			SpoolErrors:   l.stats.spoolErrors.Load(),
			InFlight:      l.stats.inflight.Load(),
			Degraded:      l.stats.degraded.Load(),
			Deferrals:     l.stats.deferrals.Load(),
			Expired:       l.stats.expired.Load(),
			Demoted:       l.stats.demoted.Load(),
			TooLarge:      l.stats.tooLarge.Load(),
			Latency:       l.stats.latency.quantiles(),
			Compression:   l.pol.stats(),
			DictMode:      DictOff,
		}
		if d := l.bt.dict; d != nil {
			c.DictMode = d.mode
			c.Dict = l.stats.dictID.Load()
			c.DictBatches = l.stats.dictBatches.Load()
			c.DictTrainings = l.stats.dictTrainings.Load()
			c.DictTrainErrors = l.stats.dictTrainErrors.Load()
			c.DictAdoptions = l.stats.dictAdoptions.Load()
			c.DictPublishErrors = l.stats.dictPublishErrors.Load()
			if last := d.last.Load(); last != nil {
				c.DictRatio, c.DictPlainRatio = last.ratio(), last.plainRatio()
			}
		}
		if cs, ok := sp.Classes[l.name]; ok {
			c.Depth = cs.Depth
			c.SpoolBytes = cs.Bytes
			c.Dropped = cs.Dropped
			if cs.OldestTime != 0 {
				c.OldestAge = now.Sub(time.Unix(0, cs.OldestTime))
			}
		}
		s.Classes[l.name] = c
	}
	return s
}

// histogram counts durations in logarithmic buckets, 8 per doubling, from
// 1µs to about 18 minutes. Lock-free: observe is two atomic adds.
type histogram struct {
	buckets [histBuckets]atomic.Uint64
	sum     atomic.Int64 // nanoseconds, for Histogram.Sum
	max     atomic.Int64
}

const (
	histPerDoubling = 8
	histBuckets     = 30 * histPerDoubling
)

func histIndex(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	i := int(math.Log2(us) * histPerDoubling)
	return min(i, histBuckets-1)
}

func histUpper(i int) time.Duration {
	return time.Duration(math.Exp2(float64(i+1)/histPerDoubling) * float64(time.Microsecond))
}

func (h *histogram) observe(d time.Duration) {
	h.buckets[histIndex(d)].Add(1)
	h.sum.Add(int64(d))
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (h *histogram) quantiles() Quantiles {
	var counts [histBuckets]uint64
	var total uint64
	for i := range counts {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	q := Quantiles{Count: total, Max: time.Duration(h.max.Load())}
	if total == 0 {
		return q
	}
	at := func(p float64) time.Duration {
		rank := uint64(math.Ceil(p * float64(total)))
		var cum uint64
		for i := range counts {
			cum += counts[i]
			if cum >= rank {
				return min(histUpper(i), q.Max)
			}
		}
		return q.Max
	}
	q.P50, q.P95, q.P99 = at(0.50), at(0.95), at(0.99)
	return q
}
