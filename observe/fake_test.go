package observe

import (
	"maps"
	"sync"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/priority"
)

// fakeNode is a Node whose snapshots the test sets.
type fakeNode struct {
	mu        sync.Mutex
	stats     aggregator.Stats
	accepting bool
	diskFull  bool
	calls     int                     // Stats calls
	shapes    []aggregator.ClassShape // Shape's answer if set, else the defaults'
}

func newFakeNode() *fakeNode {
	f := &fakeNode{accepting: true, stats: aggregator.Stats{
		Classes: map[string]aggregator.ClassStats{},
		Link: aggregator.LinkStats{
			Capacity: 10e6, Target: 8e6, Pacing: 8e6, MinRTT: 2 * time.Millisecond, SRTT: 3 * time.Millisecond,
			Probe: "cruise", Signals: [5]int{0, 0, 1, 0, 0},
		},
		SpoolBytes: 1 << 20,
	}}
	for _, c := range classes {
		f.stats.Classes[c] = aggregator.ClassStats{Dropped: map[string]uint64{"drop_oldest": 0}}
	}
	return f
}

func (f *fakeNode) set(mod func(*aggregator.Stats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mod(&f.stats)
}

// add adds to one class's counters.
func (f *fakeNode) add(class string, mod func(*aggregator.ClassStats)) {
	f.set(func(s *aggregator.Stats) {
		c := s.Classes[class]
		mod(&c)
		s.Classes[class] = c
	})
}

func (f *fakeNode) Stats() aggregator.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	s := f.stats
	s.Classes = maps.Clone(s.Classes)
	for k, c := range s.Classes {
		c.Dropped = maps.Clone(c.Dropped)
		s.Classes[k] = c
	}
	return s
}

func (f *fakeNode) Shape() []aggregator.ClassShape {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shapes != nil {
		return f.shapes
	}
	var out []aggregator.ClassShape
	for _, c := range priority.Defaults(linkCeil) {
		out = append(out, aggregator.ClassShape{
			Class: c.Name, Priority: c.Priority, Critical: c.Critical,
			Rate: c.Rate, Ceil: c.Ceil, Guaranteed: c.Rate, Action: c.ActionAt(0).Kind,
		})
	}
	return out
}

func (f *fakeNode) LatencyHistograms() map[string]aggregator.Histogram {
	out := map[string]aggregator.Histogram{}
	for _, c := range classes {
		out[c] = aggregator.Histogram{}
	}
	return out
}

func (f *fakeNode) Accepting() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepting
}

func (f *fakeNode) DiskFull() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.diskFull
}

type fakeIngest struct{}

func (fakeIngest) Stats() ingest.Stats { return ingest.Stats{Requests: 3, Accepted: 30} }

type fakeNATS struct{}

func (fakeNATS) Stats() ingest.NATSStats {
	a := ingest.NATSCounts{Messages: 2, Events: 2, Busy: 1}
	return ingest.NATSStats{Total: ingest.NATSCounts{Messages: 6, Events: 6}, Subscriptions: []ingest.NATSSubscriptionStats{
		{Subject: "a.>", NATSCounts: a},
		{Subject: "b.>", Stream: "B", NATSCounts: a},
		{Subject: "a.>", NATSCounts: a}, // same labels: summed
	}}
}
