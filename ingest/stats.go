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
}

type handlerCounters struct {
	requests, failed, unauthorized, accepted, rejected, duplicates, dropped atomic.Uint64
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
	}
	if h.dedup != nil {
		s.DedupEntries = h.dedup.stats().Entries
	}
	return s
}
