package blast

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// Figures are the numbers one run of a suite scenario is judged by.
type Figures struct {
	Mode Mode
	// P99 is each class's end-to-end p99 over the whole run, ms.
	P99 map[string]float64
	// BaseP99 is the median of a class's 1 s p99s before the overload,
	// after the warm-up, ms; WorstP99 the worst 1 s p99 from the start of
	// the overload to the end of the run, ms.
	BaseP99, WorstP99 map[string]float64
	// Recovery is the seconds from the end of the overload until the
	// urgent classes (critical, ingest) are back: backlog at its level
	// before the overload and 1 s p99 within 2× (or 50 ms of) its level
	// before, for 3 s in a row. -1: not within the run; NaN: the scenario
	// has no overload.
	Recovery float64
	// BulkDrained is the seconds from the end of the overload until the
	// bulk classes' (replication, backfill) backlog is empty; -1: not
	// within the run; NaN: no bulk class or no overload.
	BulkDrained float64
	// MaxLevel is the highest degradation level seen (the node's modes).
	MaxLevel int
	// Amplification is publish attempts ÷ first sends from the start of
	// the overload to its end (1 = no retries); NaN without an overload or
	// sends.
	Amplification float64
	// EstimateLow and EstimateHigh are the lowest and highest capacity
	// estimate over the emulated link's rate, less 1 (-0.25: 25% under),
	// in the scenario's steady seconds; NaN when none was judged (no
	// steady interval, no estimate in this mode, an unlimited link).
	// EstimateOff counts the judged seconds outside ±25%, of
	// EstimateSeconds.
	EstimateLow, EstimateHigh    float64
	EstimateOff, EstimateSeconds int
	// LevelSeconds counts the one-second windows that ended at a level
	// above 0; Deferrals the times classes were deferred by the level (the
	// node's count, 0 for the naive client).
	LevelSeconds int
	Deferrals    uint64
	// Exactly-once verdict over every class.
	Offered, Acked, Delivered, Duplicates, Dropped uint64
	// Lost counts acknowledged events neither delivered nor, when the run
	// ended before its drain did, still in the node's spool. (The naive
	// client has no spool: its acknowledgements are the stream's.)
	Lost    uint64
	Drained bool
}

// urgent reports whether a class's latency is judged: the default classes
// that are never deferred.
func urgent(class string) bool {
	return class == priority.ClassCritical || class == priority.ClassIngest
}

// Figures computes mode's figures, or nil if mode did not run.
func (r SuiteResult) Figures(mode Mode) *Figures {
	o := r.Runs[mode]
	if o == nil {
		return nil
	}
	f := &Figures{Mode: mode, P99: o.P99, BaseP99: map[string]float64{}, WorstP99: map[string]float64{},
		Recovery: math.NaN(), BulkDrained: math.NaN(), Amplification: math.NaN(), Drained: o.Drained}
	for class, a := range o.Acknowledged {
		f.Offered += o.Offered[class]
		f.Acked += a
		f.Delivered += o.Delivered[class]
		f.Duplicates += o.Duplicates[class]
		f.Dropped += o.Dropped[class]
		// Acknowledged events are delivered or, when the run ends before
		// the drain does, still in the node's spool.
		left := o.Final.Classes[class].Depth
		if o.Drained {
			left = 0
		}
		if o.Delivered[class]+left < a {
			f.Lost += a - o.Delivered[class] - left
		}
	}
	for _, w := range o.Windows {
		f.MaxLevel = max(f.MaxLevel, w.Level)
		if w.Level > 0 {
			f.LevelSeconds++
		}
	}
	for _, c := range o.Final.Classes {
		f.Deferrals += c.Deferrals
	}
	f.EstimateLow, f.EstimateHigh = math.NaN(), math.NaN()
	for _, w := range o.Windows {
		link := r.Spec.LinkRateAt(time.Duration((w.T - 0.5) * float64(time.Second)))
		if w.Capacity <= 0 || link <= 0 || !r.Spec.steady(w.T) {
			continue
		}
		e := float64(w.Capacity)/link - 1
		if f.EstimateSeconds == 0 {
			f.EstimateLow, f.EstimateHigh = e, e
		}
		f.EstimateLow, f.EstimateHigh = min(f.EstimateLow, e), max(f.EstimateHigh, e)
		f.EstimateSeconds++
		if math.Abs(e) > 0.25 {
			f.EstimateOff++
		}
	}
	from, to := r.Spec.Overload[0].Seconds(), r.Spec.Overload[1].Seconds()
	if to == 0 {
		from = math.Inf(1)
	}
	// Before the overload, after the warm-up (or its first half, in a
	// shortened suite): median 1 s p99 and the largest backlog.
	warm := min(Warmup.Seconds(), from/2)
	baseBacklog := map[string]uint64{}
	base := map[string][]float64{}
	var attempts, firsts uint64
	for _, w := range o.Windows {
		for class, c := range w.Classes {
			switch {
			case w.T > warm && w.T <= from:
				if c.Delivered > 0 {
					base[class] = append(base[class], c.P99)
				}
				baseBacklog[class] = max(baseBacklog[class], c.Backlog)
			case w.T > from:
				f.WorstP99[class] = max(f.WorstP99[class], c.P99)
			}
		}
		if w.T > from && w.T <= to+0.5 {
			attempts += w.Attempts
			firsts += w.FirstSends
		}
	}
	for class, ps := range base {
		f.BaseP99[class] = median(ps)
	}
	if to == 0 {
		return f
	}
	if firsts > 0 {
		f.Amplification = float64(attempts) / float64(firsts)
	}
	f.Recovery = recovery(o.Windows, to, func(w Window) bool {
		for class, c := range w.Classes {
			if !urgent(class) {
				continue
			}
			if c.Backlog > max(baseBacklog[class]*3/2, 100) {
				return false
			}
			if bp := f.BaseP99[class]; c.Delivered > 0 && c.P99 > max(2*bp, bp+50) {
				return false
			}
		}
		return true
	})
	hasBulk := false
	for class := range o.Acknowledged {
		hasBulk = hasBulk || !urgent(class)
	}
	if hasBulk {
		f.BulkDrained = recovery(o.Windows, to, func(w Window) bool {
			for class, c := range w.Classes {
				if !urgent(class) && c.Backlog > 0 {
					return false
				}
			}
			return true
		})
	}
	return f
}

// steady reports whether the window ending at t (seconds from the start)
// lies wholly inside one of the scenario's steady intervals.
func (s SuiteScenario) steady(t float64) bool {
	for _, iv := range s.Steady {
		if t-1 >= iv[0].Seconds()-0.1 && t <= iv[1].Seconds()+0.1 {
			return true
		}
	}
	return false
}

// estimateText describes the estimate figure for progress lines, empty
// when none was judged.
func (f *Figures) estimateText() string {
	if f.EstimateSeconds == 0 {
		return ""
	}
	return fmt.Sprintf(", capacity estimate %+.0f%% .. %+.0f%% of the link, %d of %d steady seconds outside ±25%%",
		100*f.EstimateLow, 100*f.EstimateHigh, f.EstimateOff, f.EstimateSeconds)
}

// recovery returns the seconds after end until ok holds for 3 windows in a
// row (or to the last window), or -1.
func recovery(ws []Window, end float64, ok func(Window) bool) float64 {
	for i, w := range ws {
		if w.T < end+1 {
			continue
		}
		good := true
		for j := i; j < min(i+3, len(ws)); j++ {
			good = good && ok(ws[j])
		}
		if good {
			return w.T - 1 - end
		}
	}
	return -1
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Verdict says in words whether every acknowledged event arrived once.
func (f *Figures) Verdict() string {
	switch {
	case f.Lost > 0 || f.Duplicates > 0:
		return fmt.Sprintf("FAILED: %d acknowledged events lost, %d duplicates", f.Lost, f.Duplicates)
	case !f.Drained:
		return fmt.Sprintf("no loss or duplicates; %d of %d acknowledged delivered when the run ended", f.Delivered, f.Acked)
	}
	return fmt.Sprintf("exactly once: %d acknowledged, %d delivered, 0 duplicates", f.Acked, f.Delivered)
}

// fmtMs formats a latency in ms for tables.
func fmtMs(ms float64) string {
	switch {
	case ms == 0:
		return "—"
	case ms >= 10_000:
		return strconv.FormatFloat(ms/1000, 'f', 1, 64) + " s"
	case ms >= 1000:
		return strconv.FormatFloat(ms/1000, 'f', 2, 64) + " s"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
}

// fmtSec formats a recovery figure.
func fmtSec(s float64, runEnd time.Duration) string {
	switch {
	case math.IsNaN(s):
		return "—"
	case s < 0:
		return "not by " + strconv.FormatFloat(runEnd.Seconds(), 'f', 0, 64) + " s"
	}
	return strconv.FormatFloat(s, 'f', 0, 64) + " s"
}
