package observe

import (
	"fmt"
	"reflect"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
)

// Node is what ops reads from a running node. *aggregator.Node implements
// it; tests use fakes.
type Node interface {
	Stats() aggregator.Stats
	Shape() []aggregator.ClassShape
	LatencyHistograms() map[string]aggregator.Histogram
	Accepting() bool
	DiskFull() bool
}

// IngestStats is the HTTP intake; *ingest.Handler implements it.
type IngestStats interface {
	Stats() ingest.Stats
}

// NATSStats is the NATS intake; *ingest.NATSSource implements it.
type NATSStats interface {
	Stats() ingest.NATSStats
}

// Sources are the snapshots ops reads, at scrape time and at each sample.
// Node is required; a nil Ingest or NATS (including a typed nil pointer,
// such as a *ingest.NATSSource that was never started) is skipped, and its
// metric families are not exported.
type Sources struct {
	Node   Node
	Ingest IngestStats
	NATS   NATSStats
}

// check validates s and turns typed nil pointers into nil interfaces, so
// that an absent source is skipped instead of panicking at the first
// scrape.
func (s Sources) check() (Sources, error) {
	if isNil(s.Node) {
		return s, fmt.Errorf("%w: Sources.Node is required", ErrInvalidOptions)
	}
	if isNil(s.Ingest) {
		s.Ingest = nil
	}
	if isNil(s.NATS) {
		s.NATS = nil
	}
	return s, nil
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return r.IsNil()
	}
	return false
}
