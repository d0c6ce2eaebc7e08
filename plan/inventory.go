package plan

import (
	"time"

	"github.com/sluicehq/sluice/priority"
)

// Inventory is what Evaluate plans: the hops between the edge and the hub,
// the flows that cross them at peak, and the classes they travel in. The
// zero value of every field but Hops and Flows is a default; Evaluate
// reports each field it cannot plan with as an *InputError.
type Inventory struct {
	// Headroom is the target utilization of the link, in (0, 1].
	// Default (0): shaper.DefaultHeadroom, 0.8.
	Headroom float64
	// Link names the hop sluice's estimator measures (its upstream link):
	// batches are sized at its target and the recommended rates share it.
	// Default (""): the hop of least bit/s (see LinkHop).
	Link string
	// Hops are the network hops, each named once. At least one.
	Hops []Hop
	// Flows are the event flows at their peak rates. At least one.
	Flows []Flow
	// Classes are the traffic classes the flows name, valid for
	// priority.Validate with any rates and ceilings: their byte rates and
	// byte ceilings are what the plan recommends and are ignored here.
	// Default (nil): priority.Defaults.
	Classes []priority.Class
	// SpoolMaxBytes caps all classes' spool together, for the time the
	// spool takes to fill when demand outruns the link. Default (0): no
	// cap.
	SpoolMaxBytes int64
	// Subject is the node's subject prefix and Node its name, which its
	// batches' headers and protocol lines carry (wire.MsgOverhead).
	// Defaults: "sluice", as `sluice run`'s; a name of MaxNodeBytes bytes,
	// the longest a host name (the node's default) may be, so that the
	// per-batch overhead is not under-counted.
	Subject string
	Node    string
	// Cores is the CPU, in cores, each class's compression may use on the
	// node (its compression workers: GOMAXPROCS), which the compression
	// policy weighs against the link (shaper.ChooseCompression). Default
	// (0): 1, the safe side (a faster link looks CPU-bound sooner).
	Cores float64
}

// MaxNodeBytes is the length of the node name Evaluate assumes when
// Inventory.Node is empty: HOST_NAME_MAX on Linux.
const MaxNodeBytes = 64

// Hop is one network hop.
type Hop struct {
	// Name identifies the hop for Flow.Hops and Inventory.Link.
	Name string
	// BitsPerSec is the hop's bandwidth, > 0.
	BitsPerSec float64
	// PacketsPerSec is its message capacity; 0 = unlimited.
	PacketsPerSec float64
	// RTT is its round-trip time with empty queues; a batch crosses it in
	// half. 0 = none.
	RTT time.Duration
	// LatencyBudget bounds its queueing, service and propagation (RTT/2)
	// time. 0 = none.
	LatencyBudget time.Duration
}

// Flow is one flow of events at its peak.
type Flow struct {
	// Name identifies the flow, once.
	Name string
	// Class names one of Inventory.Classes.
	Class string
	// EventsPerSec is the peak (not the average) event rate, > 0.
	EventsPerSec float64
	// MeanBytes and P99Bytes are the events' sizes, > 0, P99Bytes ≥
	// MeanBytes. 0: measured on Sample (the mean, and the p99 by nearest
	// rank), which must then be given.
	MeanBytes, P99Bytes float64
	// Retry is the retry amplification, ≥ 1 (1.1 = 10% sent twice) and
	// FanOut the replication fan-out, ≥ 1. Default (0): 1.
	Retry, FanOut float64
	// CompressionRatio is raw/compressed, ≥ 1 (8 = 8:1), at the class's
	// lowest level (its fixed level, or compression_min under auto):
	// other levels are scaled from it by the compression policy's priors.
	// Or Sample, some of the flow's events (one a slice, without
	// newlines), compressed as the node would batch and compress them at
	// the levels its policy chooses (SampleRatio). Not both. Neither: 1,
	// no compression at any level.
	CompressionRatio float64
	Sample           [][]byte
	// Hops are the names of the hops the flow crosses, each once.
	Hops []string
	// LatencyBudget bounds the flow's end-to-end estimate. 0 = none.
	LatencyBudget time.Duration
}

// LinkBytesPerSec is the hop's bandwidth as `sluice run` configures a link
// of it: link_mbit BitsPerSec/1e6, in bytes/s, truncated.
func (h Hop) LinkBytesPerSec() int64 { return int64(h.BitsPerSec / 1e6 * 1e6 / 8) }

// LinkHop returns the index in hops of the link: the hop named link, or
// when link is "" the hop of least bit/s (the first of them) among those
// with a bandwidth. It returns -1 when there is none.
func LinkHop(hops []Hop, link string) int {
	best := -1
	for i, h := range hops {
		if link != "" {
			if h.Name == link {
				return i
			}
			continue
		}
		if h.BitsPerSec > 0 && (best < 0 || h.BitsPerSec < hops[best].BitsPerSec) {
			best = i
		}
	}
	return best
}
