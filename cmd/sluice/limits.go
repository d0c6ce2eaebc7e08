package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/ingest"
)

// limitsConfig is the "limits" section: what the node lets traffic from
// the network cost it. Every field is optional; the defaults follow the
// memory the node may use and the descriptors it may open.
type limitsConfig struct {
	// MaxInflightBytes is the memory budget of the HTTP requests in flight
	// ("96MiB" or bytes): bodies as received and decompressed, events
	// rebuilt and stamped (ingest.Options.MaxInflightBytes). Default: a
	// quarter of the memory limit (cgroup memory.max, else GOMEMLIMIT),
	// between 32 MiB and 1 GiB; 64 MiB where there is no limit.
	MaxInflightBytes string `yaml:"max_inflight_bytes"`
	// MaxExpansion bounds the events of one request, as stored, to this
	// multiple of its decoded body (ingest.Options.MaxExpansion); default 8.
	MaxExpansion float64 `yaml:"max_expansion"`
	// MaxConnections bounds the open HTTP connections; default from the
	// descriptor limit (see internal/connlimit). MaxConnectionsPerIP bounds
	// those of one client address; default 0, no per-address cap (a pod
	// behind a load balancer sees one address for everyone).
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
}

// Bounds of the derived default of limits.max_inflight_bytes.
const (
	minDerivedInflight = 32 << 20
	maxDerivedInflight = 1 << 30
)

// cgroupMemoryMax is where cgroup v2 publishes the memory limit of the
// container the process runs in (a test may point it elsewhere).
var cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimit returns the memory the process may use, in bytes, and where
// the figure comes from: the cgroup v2 limit, else GOMEMLIMIT (or
// debug.SetMemoryLimit); 0 when neither is set.
func memoryLimit() (int64, string) {
	if b, err := os.ReadFile(cgroupMemoryMax); err == nil {
		s := strings.TrimSpace(string(b))
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			return n, "cgroup memory.max"
		}
	}
	if n := debug.SetMemoryLimit(-1); n > 0 && n < math.MaxInt64 {
		return n, "GOMEMLIMIT"
	}
	return 0, ""
}

// check refuses limits that cannot work with the ingest options o (their
// MaxInflightBytes already resolved).
func (l limitsConfig) check(o ingest.Options) error {
	switch {
	case l.MaxExpansion < 0 || (l.MaxExpansion > 0 && l.MaxExpansion < 1):
		return fmt.Errorf("max_expansion %v: want ≥ 1 (the events of a body are never smaller than it), or 0 for the default %d", l.MaxExpansion, ingest.DefaultMaxExpansion)
	case l.MaxConnections < 0:
		return fmt.Errorf("max_connections %d: want ≥ 0 (0 = from the descriptor limit)", l.MaxConnections)
	case l.MaxConnectionsPerIP < 0:
		return fmt.Errorf("max_connections_per_ip %d: want ≥ 0 (0 = no cap)", l.MaxConnectionsPerIP)
	}
	if need := minInflight(o); o.MaxInflightBytes < need {
		return fmt.Errorf("max_inflight_bytes %d: want at least %d, 8 × ingest.max_body_bytes: a quarter of it (for requests whose key has not passed) must hold one body as received and decompressed", o.MaxInflightBytes, need)
	}
	return nil
}

// minInflight is the least budget that serves one body of o's largest
// before its key passed: the pre-auth quarter holds it as received and
// decompressed (MaxDecodedBytes defaults to MaxBodyBytes).
func minInflight(o ingest.Options) int64 {
	body := o.MaxBodyBytes
	if body <= 0 {
		body = ingest.DefaultMaxBodyBytes
	}
	return 4 * 2 * body
}

// gcHeadroom is what the Go runtime's soft memory limit allows beyond the
// requests' budget: the node's own working set (spool, batches, NATS
// client, status history, connections' buffers and stacks). With 64 MiB
// the suite's peak RSS reached 175 MiB on a 64 MiB budget with tests
// running beside it (the bound is 160); with 32 MiB, 125 MiB with a CPU
// burner beside it.
const gcHeadroom = 32 << 20

// setMemoryLimit gives the Go runtime a soft memory limit when GOMEMLIMIT
// is not set: the requests' budget plus gcHeadroom (32 MiB), and at most 80% of the
// cgroup's memory.max (Go reads the cgroup's CPU quota but not its memory
// limit). Requests free what they charged when they are answered, but the
// collector returns it only at its next cycle, which GOGC alone puts at
// twice the live heap: under a flood the heap held twice the budget. The
// limit makes the collector run before that. It returns the limit set, or
// 0 when GOMEMLIMIT decides.
func setMemoryLimit(inflight int64) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	gc := inflight + gcHeadroom
	if n, from := memoryLimit(); from == "cgroup memory.max" {
		gc = min(gc, n/10*8)
	}
	debug.SetMemoryLimit(gc)
	return gc
}

// inflightBudget returns limits.max_inflight_bytes, or its default derived
// from limit (memoryLimit's), and how it was chosen.
func (l limitsConfig) inflightBudget(limit int64, source string, o ingest.Options) (int64, string, error) {
	if l.MaxInflightBytes != "" {
		n, err := parseSize(l.MaxInflightBytes)
		if err != nil {
			return 0, "", fmt.Errorf("max_inflight_bytes: %w", err)
		}
		if n <= 0 {
			return 0, "", errors.New("max_inflight_bytes: want > 0")
		}
		return n, "limits.max_inflight_bytes", nil
	}
	if limit <= 0 {
		return max(ingest.DefaultMaxInflightBytes, minInflight(o)), "default (no memory limit found)", nil
	}
	n := min(max(limit/4, minDerivedInflight), maxDerivedInflight)
	if need := minInflight(o); n < need {
		return need, fmt.Sprintf("8 × ingest.max_body_bytes, more than a quarter of %s (%d MiB): lower max_body_bytes or raise the limit", source, limit>>20), nil
	}
	return n, fmt.Sprintf("a quarter of %s (%d MiB)", source, limit>>20), nil
}
