package aggregator

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

// compressPolicy is one lane's compression policy: the level its batches
// are compressed at and the raw size they are cut to. A class with a fixed
// level keeps it, and its batches are cut to batchAirtime at the link's
// target, as before the policy. An automatic class (priority.CompressionAuto)
// asks shaper.ChooseCompression at each cut, from the link's target (once
// the estimator has found the link), whether sends waited for the link
// lately, its compression workers' busy fraction, and each level's ratio
// and speed measured on its own batches.
type compressPolicy struct {
	class    string
	lo, hi   shaper.CompressLevel
	workers  int
	link     func() (target int64, found, full bool) // shaping.linkEstimate
	now      func() time.Time
	log      *slog.Logger
	maxBytes func() int     // the class's Batch.MaxBytes
	ratio    func() float64 // wire/raw of the batches published so far (1 before any)

	level  atomic.Uint32 // shaper.CompressLevel in use
	batch  atomic.Int64  // raw bytes bound of the next batch
	neck   atomic.Pointer[string]
	busyNs atomic.Int64  // compression wall time, all workers, since New
	busyPM atomic.Uint32 // busy fraction of the last window, parts per million

	mu       sync.Mutex
	meter    *shaper.CompressMeter
	winStart time.Time // the busy window (mu)
	winBusy  int64
	changes  uint64
	changed  time.Time // the last level change (mu)
}

// Compression policy constants.
const (
	// cpuBusy: compression workers busy at least this fraction of a
	// window are the class's bottleneck; the link's estimate is then only
	// what they produced.
	cpuBusy = 0.9
	// busyWindow is the least time the busy fraction is measured over.
	busyWindow = time.Second
	// heldWindow: a send held back by the shaper within this long says the
	// link (its target) is what bounds the class.
	heldWindow = time.Second
	// levelHold is the least time a level is kept after a change: a
	// busy window, so that the next decision weighs the new level's own
	// busy fraction and batches. (Without it the first cuts of a busy
	// node went fastest, better, default, fastest, default within 0.2 s,
	// each decision on the previous level's figures.)
	levelHold = busyWindow
)

// newCompressPolicy returns class c's policy, for its workers compression
// goroutines, with the link's estimate from link, the class's batch bound
// from maxBytes and its observed wire/raw from ratio.
func newCompressPolicy(c *priority.Class, workers int, link func() (int64, bool, bool), maxBytes func() int, ratio func() float64,
	now func() time.Time, log *slog.Logger) *compressPolicy {
	p := &compressPolicy{
		class: c.Name, workers: max(workers, 1), link: link, now: now, log: log,
		maxBytes: maxBytes, ratio: ratio, meter: shaper.NewCompressMeter(0),
	}
	p.lo, p.hi = shaper.CompressBounds(c)
	p.level.Store(uint32(p.lo))
	p.batch.Store(int64(maxBytes()))
	neck := string(shaper.BottleneckUnknown)
	p.neck.Store(&neck)
	p.winStart = now()
	return p
}

// auto reports whether the level is the policy's to choose.
func (p *compressPolicy) auto() bool { return p.lo != p.hi }

// current is the level batches are compressed at now.
func (p *compressPolicy) current() shaper.CompressLevel { return shaper.CompressLevel(p.level.Load()) }

// zstdLevel is current as zstd's level.
func (p *compressPolicy) zstdLevel() zstd.EncoderLevel {
	return wire.EncoderLevel(p.current().String())
}

// observe records a batch compressed at level l from raw to wire bytes in
// busy: the meter's sample, and the busy time.
func (p *compressPolicy) observe(l shaper.CompressLevel, raw, wire int, busy time.Duration) {
	p.busyNs.Add(int64(busy))
	p.mu.Lock()
	p.meter.Observe(l, raw, wire, busy)
	p.mu.Unlock()
}

// batchBytes decides the level and returns the raw size bound of the next
// batch.
func (p *compressPolicy) batchBytes() int {
	maxBytes := p.maxBytes()
	target, found, full := p.link()
	if !p.auto() {
		// A fixed level: batches of batchAirtime at the class's ratio.
		if target <= 0 {
			return maxBytes
		}
		return shaper.BatchRawBytes(target, batchAirtime, p.ratio(), minBatchBytes, maxBytes)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if dt := now.Sub(p.winStart); dt >= busyWindow {
		b := p.busyNs.Load()
		frac := float64(b-p.winBusy) / (float64(p.workers) * float64(dt))
		p.busyPM.Store(uint32(min(max(frac, 0), 1) * 1e6))
		p.winStart, p.winBusy = now, b
	}
	busy := float64(p.busyPM.Load()) / 1e6
	cur := p.current()
	in := shaper.CompressInputs{
		LinkBytesPerSec: target, LinkFull: full && busy < cpuBusy, Cores: float64(p.workers),
		Min: p.lo, Max: p.hi, Current: cur, Levels: p.meter.Estimates(),
		Airtime: shaper.DefaultBulkAirtime, MinBatchBytes: minBatchBytes, MaxBatchBytes: maxBytes,
	}
	if !found {
		// The target is the estimator's first guess: it sizes batches,
		// as always, but says nothing of what the link can carry.
		in.Max = in.Min
	} else if !p.changed.IsZero() && now.Sub(p.changed) < levelHold && cur >= in.Min && cur <= in.Max {
		in.Min, in.Max = cur, cur
	}
	c := shaper.ChooseCompression(in)
	if !found {
		c.Bottleneck = shaper.BottleneckUnknown
	}
	if c.Level != cur {
		p.level.Store(uint32(c.Level))
		p.changes++
		p.changed = now
		p.log.Info("compression level changed", "class", p.class, "from", cur.String(), "to", c.Level.String(),
			"bottleneck", string(c.Bottleneck), "target_bps", target*8, "busy", busy, "batch_bytes", c.BatchBytes)
	}
	if neck := string(c.Bottleneck); *p.neck.Load() != neck {
		p.neck.Store(&neck)
	}
	p.batch.Store(int64(c.BatchBytes))
	return c.BatchBytes
}

// CompressionStats is a class's compression policy as it stands.
type CompressionStats struct {
	Level      string  // the level batches are compressed at: fastest, default, better, best
	Auto       bool    // the level is chosen by the policy (compression auto)
	Min, Max   string  // the policy's bounds (both Level when fixed)
	BatchBytes int     // raw bytes bound of the next batch
	Bottleneck string  // what bounds the class at that level: link, cpu, unknown (no link estimate)
	Busy       float64 // the compression workers' busy fraction over the last second or more
	Changes    uint64  // level changes since New
}

func (p *compressPolicy) stats() CompressionStats {
	p.mu.Lock()
	changes := p.changes
	p.mu.Unlock()
	s := CompressionStats{
		Level: p.current().String(), Auto: p.auto(), Min: p.lo.String(), Max: p.hi.String(),
		BatchBytes: int(p.batch.Load()), Bottleneck: *p.neck.Load(),
		Busy: float64(p.busyPM.Load()) / 1e6, Changes: changes,
	}
	if !s.Auto {
		s.Bottleneck = ""
	}
	return s
}
