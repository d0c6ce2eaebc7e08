package ingest

import "sync/atomic"

// Stats counts what the handler did since NewHandler.
type Stats struct {
	Requests     uint64 // requests to an ingest endpoint
	Failed       uint64 // of which answered 4xx or 5xx
	Unauthorized uint64 // of which answered 401
	Accepted     uint64 // events made durable
	Rejected     uint64 // events refused as invalid, each listed in its response
	Duplicates   uint64 // events dropped as client retries by the dedup window
	Dropped      uint64 // events refused by a full drop_newest class
	DedupEntries int    // event ids the dedup window holds now
	// Busy counts requests answered 429 because the memory budget
	// (Options.MaxInflightBytes) stayed spent; TooLarge those answered 413.
	Busy, TooLarge uint64
	// AuthorizedBytes and PreAuthBytes are what is held now of the
	// memory budget's two parts (Options.MaxInflightBytes): authorized
	// requests and the NATS source's batches (which share the pipeline),
	// and requests whose write key has not passed yet. The Peak
	// fields are the most each part held at once since the start.
	AuthorizedBytes, AuthorizedPeak int64
	PreAuthBytes, PreAuthPeak       int64
}

type handlerCounters struct {
	requests, failed, unauthorized, accepted, rejected, duplicates, dropped atomic.Uint64
	busy, tooLarge                                                          atomic.Uint64
}

// Stats returns the handler's counters.
func (h *Handler) Stats() Stats {
	s := Stats{
		Requests:     h.stats.requests.Load(),
		Failed:       h.stats.failed.Load(),
		Unauthorized: h.stats.unauthorized.Load(),
		Accepted:     h.stats.accepted.Load(),
		Rejected:     h.stats.rejected.Load(),
		Duplicates:   h.stats.duplicates.Load(),
		Dropped:      h.stats.dropped.Load(),
		Busy:         h.stats.busy.Load(),
		TooLarge:     h.stats.tooLarge.Load(),
	}
	b := h.p.Budget()
	s.AuthorizedBytes, s.AuthorizedPeak = b.AuthorizedBytes, b.AuthorizedPeak
	s.PreAuthBytes, s.PreAuthPeak = b.PreAuthBytes, b.PreAuthPeak
	if h.p.dedup != nil {
		s.DedupEntries = h.p.dedup.stats().Entries
	}
	return s
}
