package blast

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/priority"
)

// The suite's link: 20 Mbit/s and 20 ms each way, the node told its
// ceiling, the default classes and headroom.
const (
	SuiteLinkRate = 20 * linkemu.Mbit
	SuiteLatency  = 20 * time.Millisecond
	suiteHeadroom = 0.8
	suiteLinkBps  = 20e6 / 8 // bytes/s
	suiteTarget   = suiteHeadroom * suiteLinkBps
)

// SuiteScenario is one blast-radius scenario of the suite: a Scenario and
// the interval in which it overloads something, from which its recovery is
// measured.
type SuiteScenario struct {
	Scenario
	About string
	// Overload is when the scenario's overload (burst, storm, step down,
	// outage, CPU burner) starts and ends, from the start of the run.
	Overload [2]time.Duration
	// Steady are the intervals (from the start of the run) whose every
	// second the node's capacity estimate is judged in against the
	// emulated link's rate (Figures.EstimateLow).
	Steady [][2]time.Duration
}

// LinkRateAt is the emulated link's upstream rate at t from the start of
// the run in bytes/s: 0 when unlimited or down.
func (sc Scenario) LinkRateAt(t time.Duration) float64 {
	s := sc.Link
	for _, st := range sc.Schedule {
		if st.At <= t {
			s = st.Settings
		}
	}
	if s.Outage != linkemu.OutageNone {
		return 0
	}
	return float64(s.Upstream.Bandwidth) / 8
}

// SuiteOptions configures RunSuite.
type SuiteOptions struct {
	// Dir holds each run's spool and NATS store (removed after the run).
	Dir string
	// Scenarios to run, by name; empty runs all.
	Scenarios []string
	// Modes to run each scenario in; empty runs all, the node's first.
	Modes []Mode
	// Scale multiplies every duration of the suite (1 = the full suite,
	// about 36 minutes; CI's smoke run uses less).
	Scale float64
	// Events are real events to offer (JSON objects, cycled); nil offers
	// generated events.
	Events [][]byte
	// Progress receives one line per run per 5 s, and at each run's end.
	Progress func(string)
	// NodeLog, if set, is a file name: each node run writes its debug log
	// (level changes with their signals, estimator states) beside it, as
	// NAME-SCENARIO-MODE.log.
	NodeLog string
}

// SuiteResult is one scenario's runs.
type SuiteResult struct {
	Spec SuiteScenario
	Runs map[Mode]*Outcome
}

// SuiteNode returns the node options of every suite run: the default
// classes for the suite's link, its ceiling and headroom.
func SuiteNode() aggregator.Options {
	return aggregator.Options{
		Classes: priority.Defaults(suiteLinkBps),
		Link:    aggregator.Link{Ceil: suiteLinkBps, Headroom: suiteHeadroom},
	}
}

// SuiteScenarios returns the suite at scale (1 = full length), offering
// events (nil: generated) at rates set in compressed bytes against the
// shaper's target of 16 Mbit/s.
func SuiteScenarios(scale float64, events [][]byte) []SuiteScenario {
	if scale <= 0 {
		scale = 1
	}
	d := func(s float64) time.Duration { return time.Duration(s * scale * float64(time.Second)) }
	at := func(rate linkemu.Rate) linkemu.Settings {
		return linkemu.Symmetric(linkemu.Shape{Bandwidth: rate, Latency: SuiteLatency})
	}
	full := at(SuiteLinkRate)
	// load offers class at frac of the target in wire bytes.
	const bulkSize, bulkEntropy, ingestSize, ingestEntropy = 1000, 0.6, 800, 0.4
	load := func(class string, frac float64, from, to float64) Load {
		ld := Load{Class: class, Size: ingestSize, Entropy: ingestEntropy, From: d(from), To: d(to)}
		if class == priority.ClassReplication || class == priority.ClassBackfill {
			ld.Size, ld.Entropy = bulkSize, bulkEntropy
		}
		if events != nil && class == priority.ClassIngest {
			ld.Events = events
		}
		ld.Rate = frac * suiteTarget / (LoadWireRatio(ld) * float64(loadEventSize(ld)))
		return ld
	}
	critical := Load{Class: priority.ClassCritical, Rate: 100, Size: 300}
	spike := load(priority.ClassIngest, 2.7, 10, 20)
	spike.ID = "ingest-spike"
	// after names a load that follows another of its class.
	after := func(ld Load) Load {
		ld.ID = ld.Class + "-after"
		return ld
	}
	return []SuiteScenario{
		{About: "Steady mixed traffic well under the link: the cost of shaping when nothing is wrong.",
			Scenario: Scenario{Name: "steady", Link: full, Duration: d(30), Drain: d(20),
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 0), load(priority.ClassReplication, 0.2, 0, 0)}}},
		{About: "A launch: ingest bursts to 10× its rate (3× the target) for 10 s.",
			Overload: [2]time.Duration{d(10), d(20)},
			Scenario: Scenario{Name: "launch-spike", Link: full, Duration: d(45), Drain: d(30),
				Loads: []Load{critical, load(priority.ClassIngest, 0.3, 0, 0), spike}}},
		{About: "A backfill at 3× the link starts beside live traffic for 20 s.",
			Overload: [2]time.Duration{d(10), d(30)},
			Scenario: Scenario{Name: "backfill-interference", Link: full, Duration: d(40), Drain: d(30),
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 0), load(priority.ClassBackfill, 3.75, 10, 30)}}},
		{About: "Replication catches up at 2× the link for 20 s beside live traffic.",
			Overload: [2]time.Duration{d(10), d(30)},
			Scenario: Scenario{Name: "replication-storm", Link: full, Duration: d(40), Drain: d(30),
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 0), load(priority.ClassReplication, 2.5, 10, 30)}}},
		{About: "The link steps down from 20 to 5 Mbit/s for 20 s, then back.",
			Overload: [2]time.Duration{d(15), d(35)},
			Scenario: Scenario{Name: "link-step", Link: full, Duration: d(60), Drain: d(30),
				Schedule: linkemu.Schedule{{At: d(15), Settings: at(5 * linkemu.Mbit)}, {At: d(35), Settings: full}},
				Loads:    []Load{critical, load(priority.ClassIngest, 0.5, 0, 0), load(priority.ClassReplication, 0.3, 0, 0)}}},
		{About: "A CPU burner (a spinning thread per core, in a process of its own) beside the node for 30 s, with the link unconstrained (no rate limit, no delay) and traffic at 90% of the target, so that the shaper paces: the node must not read its own slowness as the link's.",
			Overload: [2]time.Duration{d(10), d(40)},
			Scenario: Scenario{Name: "cpu-contention", Link: linkemu.Settings{}, Duration: d(50), Drain: d(20),
				Burn:  Burn{Threads: runtime.NumCPU(), From: d(10), To: d(40)},
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 0), load(priority.ClassReplication, 0.4, 0, 0)}}},
		{About: "20 s of the steady scenario's traffic, a minute with only critical's trickle, then replication at 3× the link for 10 s beside ingest. The capacity estimate is judged in every second of the first 20 s after the warm-up and of the 20 s after the idle minute.",
			Overload: [2]time.Duration{d(80), d(90)},
			Steady:   [][2]time.Duration{{min(Warmup, d(10)), d(20)}, {d(80), d(100)}},
			Scenario: Scenario{Name: "idle-overload", Link: full, Duration: d(100), Drain: d(60),
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 20), load(priority.ClassReplication, 0.2, 0, 20),
					after(load(priority.ClassIngest, 0.5, 80, 100)), after(load(priority.ClassReplication, 3.75, 80, 90))}}},
		{About: "The link blackholes for 15 s (connections held, nothing forwarded), then returns.",
			Overload: [2]time.Duration{d(15), d(30)},
			Scenario: Scenario{Name: "outage", Link: full, Duration: d(50), Drain: d(30),
				Schedule: linkemu.Schedule{{At: d(15), Settings: linkemu.Settings{Upstream: full.Upstream, Downstream: full.Downstream, Outage: linkemu.OutageBlackhole}},
					{At: d(30), Settings: full}},
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 0)}}},
		{About: "The link's latency jumps to 3 s each way for 15 s: every ack outlives the 5 s ack timeout, so every publish is retried while its original is still on the wire.",
			Overload: [2]time.Duration{d(10), d(25)},
			Scenario: Scenario{Name: "retry-storm", Link: full, Duration: d(45), Drain: d(30),
				Schedule: linkemu.Schedule{{At: d(10), Settings: linkemu.Symmetric(linkemu.Shape{Bandwidth: SuiteLinkRate, Latency: 3 * time.Second})},
					{At: d(25), Settings: full}},
				Loads: []Load{critical, load(priority.ClassIngest, 0.5, 0, 0)}}},
	}
}

// RunSuite runs the suite's scenarios, each in every mode, one after the
// other.
func RunSuite(ctx context.Context, o SuiteOptions) ([]SuiteResult, error) {
	modes := o.Modes
	if len(modes) == 0 {
		modes = Modes
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	var specs []SuiteScenario
	for _, s := range SuiteScenarios(o.Scale, o.Events) {
		if len(o.Scenarios) == 0 || slices.Contains(o.Scenarios, s.Name) {
			specs = append(specs, s)
		}
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("bench: no scenario named %v", o.Scenarios)
	}
	var out []SuiteResult
	n, total := 0, len(specs)*len(modes)
	for _, spec := range specs {
		res := SuiteResult{Spec: spec, Runs: map[Mode]*Outcome{}}
		for _, mode := range modes {
			n++
			sc := spec.Scenario
			sc.Node = SuiteNode()
			if o.NodeLog != "" && mode != ModeNaive {
				base := strings.TrimSuffix(o.NodeLog, filepath.Ext(o.NodeLog))
				if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
					return out, err
				}
				f, err := os.Create(base + "-" + sc.Name + "-" + string(mode) + ".log")
				if err != nil {
					return out, err
				}
				defer f.Close()
				sc.Node.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
			}
			dir, err := os.MkdirTemp(o.Dir, sc.Name+"-"+string(mode)+"-")
			if err != nil {
				return out, err
			}
			prefix := fmt.Sprintf("[%d/%d] %s/%s", n, total, sc.Name, mode)
			progress(fmt.Sprintf("%s: %s of load, up to %s of drain", prefix, sc.Duration, sc.Drain))
			rctx, cancel := context.WithTimeout(ctx, sc.Duration+sc.Drain+2*time.Minute)
			oc, err := sc.Run(rctx, dir, mode, func(w Window) {
				if int(math.Round(w.T))%5 == 0 {
					progress(prefix + " " + w.String())
				}
			})
			cancel()
			os.RemoveAll(dir)
			if err != nil {
				return out, fmt.Errorf("%s: %w", prefix, err)
			}
			res.Runs[mode] = oc
			f := res.Figures(mode)
			progress(fmt.Sprintf("%s: done: critical p99 %s, ingest p99 %s, max level %d (%d s above 0), %d deferrals, %d dropped%s, %s", prefix,
				fmtMs(f.P99[priority.ClassCritical]), fmtMs(f.P99[priority.ClassIngest]), f.MaxLevel, f.LevelSeconds, f.Deferrals, f.Dropped,
				f.estimateText(), f.Verdict()))
		}
		out = append(out, res)
	}
	return out, nil
}

// LoadWireRatio is the compressed ÷ raw size of ld's events in a batch of
// 1,000 (zstd, fastest level).
func LoadWireRatio(ld Load) float64 {
	var raw []byte
	for _, ev := range newEventGen(ld).next(1000, time.Now().UnixNano()) {
		raw = append(append(raw, ev...), '\n')
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	defer enc.Close()
	return float64(len(enc.EncodeAll(raw, nil))) / float64(len(raw))
}

// loadEventSize is the mean size of ld's events.
func loadEventSize(ld Load) int {
	evs := newEventGen(ld).next(100, time.Now().UnixNano())
	n := 0
	for _, ev := range evs {
		n += len(ev)
	}
	return n / len(evs)
}

// SuiteEvents returns the real SDK events of the shared data directory
// (see SDKEvents) for the suite's ingest class, or nil without it.
func SuiteEvents() ([][]byte, string) {
	if DataDir() == "" {
		return nil, "synthetic events"
	}
	evs, src, err := SDKEvents(10_000)
	if err != nil {
		return nil, "synthetic events (" + err.Error() + ")"
	}
	return evs, src + " from " + filepath.Join(DataDir(), "sdk_wire_from_apache")
}
