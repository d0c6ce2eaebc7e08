package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
)

// `sluice plan FLOWS.yaml`: the bottleneck model for people. It reads a
// flow inventory, evaluates shaper's model (batch sizing, compression,
// per-message cost, utilization, M/D/1 queueing, propagation) per hop,
// models what the node sends and spools at peak (spoolAtPeak), and
// recommends a class configuration that `sluice run --config` accepts,
// unless a hop is over capacity (runPlan). docs/plan.md describes the
// inventory and the formulas.
//
// Classes: the four defaults, changed or extended by the inventory's
// "classes", which are the config file's (classConfig, buildClasses). An
// entry named like a default changes only the keys it gives; any other name
// adds a class. The recommended config lists the defaults, then the added
// classes, each with every key the inventory gave it and the plan's rate
// and ceil (the inventory's rate and ceil are replaced, with a warning).

// inventory is the FLOWS.yaml file.
type inventory struct {
	// Headroom is the target utilization, (0, 1]; default 0.8.
	Headroom float64 `yaml:"headroom"`
	// Link names the hop sluice's estimator measures (its upstream link):
	// batches are sized at its target. Default: the hop of least bit/s.
	Link  string     `yaml:"link"`
	Hops  []hopSpec  `yaml:"hops"`
	Flows []flowSpec `yaml:"flows"`
	// Classes change the default classes or add classes, with the config
	// file's schema; flows may name any of them.
	Classes []classConfig `yaml:"classes"`
	// Spool is the config file's spool cap, for the time the spool takes
	// to fill when demand outruns the link; it goes into the recommended
	// config.
	Spool inventorySpool `yaml:"spool"`
}

// inventorySpool is the part of the config file's "spool" the plan uses.
type inventorySpool struct {
	// MaxBytes caps all classes' spool together: "50GiB"; "" or 0 = no cap.
	MaxBytes string `yaml:"max_bytes"`
}

type hopSpec struct {
	Name string `yaml:"name"`
	// Bandwidth in bit/s with a unit: 100Mbit, 1Gbit, 12.5MB/s.
	Bandwidth string `yaml:"bandwidth"`
	// PacketsPerSec is the hop's packet (message) capacity; 0 = unlimited.
	PacketsPerSec float64 `yaml:"packets_per_sec"`
	// RTT is the hop's round-trip time with empty queues (what ping
	// shows); a batch crosses the hop in half of it. 0 = none.
	RTT time.Duration `yaml:"rtt"`
	// LatencyBudget bounds the hop's queueing, service and propagation
	// (rtt/2) time; 0 = none.
	LatencyBudget time.Duration `yaml:"latency_budget"`
}

type flowSpec struct {
	Name  string `yaml:"name"`
	Class string `yaml:"class"`
	// EventsPerSec is the peak (not average) event rate.
	EventsPerSec float64     `yaml:"events_per_sec"`
	Payload      payloadSpec `yaml:"payload"`
	// Retry is the retry amplification, ≥ 1 (1.1 = 10% sent twice); default 1.
	Retry float64 `yaml:"retry"`
	// FanOut is the replication fan-out, ≥ 1; default 1.
	FanOut float64 `yaml:"fan_out"`
	// CompressionRatio is raw/compressed (8 = 8:1); or Sample, an NDJSON
	// file (relative to the inventory) compressed as sluice batches it.
	// Neither: 1 (no compression).
	CompressionRatio float64  `yaml:"compression_ratio"`
	Sample           string   `yaml:"sample"`
	Hops             []string `yaml:"hops"`
	// LatencyBudget bounds the flow's end-to-end estimate; 0 = none.
	LatencyBudget time.Duration `yaml:"latency_budget"`
}

type payloadSpec struct {
	Mean string `yaml:"mean"` // "1KB", "800", "2KiB"
	P99  string `yaml:"p99"`
}

// maxSampleBytes bounds a sample file.
const maxSampleBytes = 64 << 20

// jetStreamMaxPayload is JetStream's default max_payload.
const jetStreamMaxPayload = 1 << 20

// runPlan is `sluice plan [--json] [--write-config FILE]
// [--allow-over-capacity] FLOWS.yaml`. An inventory whose peak load after
// batching is over some hop's capacity fails (after the plan is printed,
// without its recommended config, and --write-config writes nothing)
// unless --allow-over-capacity is given: a CI job that plans a deployment
// should not pass, nor ship a config, that cannot carry the load.
func runPlan(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the plan as JSON (the recommended config is its recommended_config string)")
	out := fs.String("write-config", "", "also write the recommended config to `file`")
	allowOver := fs.Bool("allow-over-capacity", false, "exit 0, print and write the recommended config even when a hop is over capacity at peak (default: exit 1, no config)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sluice plan [flags] FLOWS.yaml\n\nEvaluates the bottleneck model on a flow inventory (docs/plan.md).\n"+
			"Exits 1 when a hop is over capacity at peak after batching, unless --allow-over-capacity.\n\n")
		fs.PrintDefaults()
	}
	// Flags may come before or after the file.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) != 1 {
		fs.Usage()
		return errUsage
	}
	p, err := planFile(files[0])
	if err != nil {
		return err
	}
	var overErr error
	if len(p.OverCapacity) > 0 {
		overErr = fmt.Errorf("plan %s: over capacity at peak: %s; no recommended config (--allow-over-capacity prints and writes it anyway)", files[0], p.overCapacityText())
		if *allowOver {
			overErr = nil
		} else {
			p.Config, p.withheld = "", true
		}
	}
	if *out != "" && !p.withheld {
		if err := os.WriteFile(*out, []byte(p.Config), 0o644); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p); err != nil {
			return err
		}
		return overErr
	}
	if err := p.writeText(stdout); err != nil {
		return err
	}
	return overErr
}

// planFile reads, checks and evaluates an inventory file.
func planFile(path string) (*plan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	inv, lines, err := parseInventory(data)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	p, err := evaluate(inv, lines, path)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// parseInventory decodes an inventory as the config file is decoded
// (parseConfigEnv, without environment expansion): within the config's
// size cap and node budget (aliases expanded where used), one document,
// every key known, every value of its type, each problem on a line of its
// own naming its line and key, without Go's or YAML's type names. lines
// maps key paths ("flows[1].retry") to lines.
func parseInventory(data []byte) (inventory, map[string]int, error) {
	var inv inventory
	if len(data) > maxConfigBytes {
		return inv, nil, fmt.Errorf("inventory: larger than %d bytes (1 MiB), the limit of an inventory", maxConfigBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return inv, nil, errors.New("empty inventory: want hops and flows")
		}
		return inv, nil, withLine(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return inv, nil, withLine(data, err)
		}
		return inv, nil, fmt.Errorf("line %d: a second YAML document; want one", extra.Line)
	}
	if err := checkNodeBudget(&doc, maxConfigNodes); err != nil {
		return inv, nil, errors.New(strings.Replace(err.Error(), "the config", "the inventory", 1))
	}
	var errs lineErrors
	values := map[int][]keyedNode{}
	checkKeys(&doc, reflect.TypeFor[inventory](), "", &errs, values)
	if err := doc.Decode(&inv); err != nil {
		te, ok := errors.AsType[*yaml.TypeError](err)
		if !ok {
			return inventory{}, nil, withLine(data, err)
		}
		said := map[int]bool{} // lines checkKeys has an error for
		for _, e := range errs {
			said[e.line] = true
		}
		for _, m := range te.Errors {
			// typeErrorMessage reads one line: a value quoted with a
			// line break in it would leave the decoder's words as they are.
			if line, msg := typeErrorMessage(strings.ReplaceAll(m, "\n", `\n`), values); !said[line] {
				errs.addMsg(line, msg)
			}
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b lineError) int { return a.line - b.line })
		all := make([]error, len(errs))
		for i, e := range errs {
			// One problem, one line; checkKeys calls the file "the config".
			msg := strings.ReplaceAll(e.msg, "\n", `\n`)
			if rest, ok := strings.CutPrefix(msg, "the config:"); ok {
				msg = "the inventory:" + rest
			}
			if e.line > 0 {
				msg = fmt.Sprintf("line %d: %s", e.line, msg)
			}
			all[i] = errors.New(msg)
		}
		return inventory{}, nil, errors.Join(all...)
	}
	lines := map[string]int{}
	if len(doc.Content) == 1 {
		keyLines(doc.Content[0], "", lines)
	}
	for j := range inv.Classes { // for buildClasses' errors, as parseConfig does
		inv.Classes[j].line = lines[fmt.Sprintf("classes[%d]", j)]
	}
	return inv, lines, nil
}

// withLine adds the line to a YAML error that lacks one. The reader's
// ("control characters are not allowed", "invalid leading UTF-8 octet")
// are about the first byte that is not YAML text; the decoder's about
// anchors, aliases and merges about the first place those are spelled; the
// parser leaves out only line 1.
func withLine(data []byte, err error) error {
	msg := err.Error()
	if hasLine.MatchString(msg) {
		return err
	}
	at := func(off int) error {
		return fmt.Errorf("line %d: %w", 1+bytes.Count(data[:off], []byte("\n")), err)
	}
	for off := 0; off < len(data); {
		r, n := utf8.DecodeRune(data[off:])
		if !yamlRune(r, n) {
			return at(off)
		}
		off += n
	}
	var find string
	if m := anchorMsg.FindStringSubmatch(msg); m != nil {
		find = "*" + m[2]
		if m[1] == "anchor" {
			find = "&" + m[2]
		}
	} else if strings.Contains(msg, "aliasing") {
		find = "*"
	} else if strings.Contains(msg, "map merge") {
		find = "<<"
	} else if strings.Contains(msg, "!!binary") {
		find = "!!binary"
	}
	if i := bytes.Index(data, []byte(find)); find != "" && i >= 0 {
		return at(i)
	}
	return fmt.Errorf("line 1: %w", err)
}

var hasLine = regexp.MustCompile(`\bline \d+: `)

var anchorMsg = regexp.MustCompile(`(unknown anchor|anchor) '([^']*)' (referenced|value contains itself)`)

// yamlRune reports whether a rune of n bytes is one YAML allows (its
// printable set, with tab and line breaks).
func yamlRune(r rune, n int) bool {
	switch {
	case r == utf8.RuneError && n <= 1:
		return false
	case r == 0x09, r == 0x0A, r == 0x0D, r == 0x85:
	case r >= 0x20 && r <= 0x7E, r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD, r >= 0x10000 && r <= 0x10FFFF:
	default:
		return false
	}
	return true
}

// The plan: what `sluice plan` prints, and its JSON.
type plan struct {
	File              string  `json:"file"`
	Link              string  `json:"link"`
	LinkBitsPerSec    float64 `json:"link_bits_per_sec"`
	Headroom          float64 `json:"headroom"`
	TargetBytesPerSec int64   `json:"target_bytes_per_sec"`
	BatchAirtime      string  `json:"batch_airtime"`
	QueueModel        string  `json:"queue_model"`
	// Hops, the bottleneck (highest utilization after sluice) first.
	Hops    []hopPlan   `json:"hops"`
	Flows   []flowPlan  `json:"flows"`
	Classes []classPlan `json:"classes"`
	// Spool is what accumulates at peak when the link's demand outruns
	// what the node sends.
	Spool spoolPlan `json:"spool"`
	// OverCapacity names the hops whose peak load after sluice is above
	// their capacity (verdict "over capacity"); `sluice plan` then exits 1
	// and withholds the config unless --allow-over-capacity.
	OverCapacity []string `json:"over_capacity"`
	Warnings     []string `json:"warnings"`
	// Config is the recommended `sluice run --config` file; "" when it is
	// withheld (over capacity without --allow-over-capacity).
	Config string `json:"recommended_config"`

	given       map[string]classConfig // the inventory's classes entries, by name
	spoolMaxRaw string                 // the inventory's spool.max_bytes, as given
	withheld    bool                   // Config withheld: over capacity
}

// spoolPlan is the spool at peak: what the node sends over the link and
// what it keeps. The model is the lanes' steady state (see allocate) at
// the level the controller settles at: 0 while the link carries the
// demand, 2 when a backlog grows (a standing, growing queue; demand
// alone gives 1 or 2), on a healthy link (a plan's defer is then a
// throttle, shaper.EffectiveAction).
type spoolPlan struct {
	Level int `json:"level"`
	// DemandBytesPerSec is the link's peak demand after sluice (wire bytes
	// + 256 B a batch) and SentBytesPerSec what the node sends of it: at
	// most the target.
	DemandBytesPerSec float64 `json:"demand_bytes_per_sec"`
	SentBytesPerSec   float64 `json:"sent_bytes_per_sec"`
	// GrowthBytesPerSec is the event bytes all classes add to the spool
	// per second (0: it does not grow); MaxBytes the inventory's
	// spool.max_bytes (0: no cap) and FullSeconds the time, from empty, to
	// reach it (null: never).
	GrowthBytesPerSec float64  `json:"growth_bytes_per_sec"`
	MaxBytes          int64    `json:"max_bytes"`
	FullSeconds       *float64 `json:"full_seconds"`
	// DropFields: some class drops fields at Level, by an amount the plan
	// cannot know; the figures assume nothing is dropped (growth and
	// times to full are then bounds: at most, at least).
	DropFields bool `json:"drop_fields_unmodelled"`
}

type load struct {
	BitsPerSec    float64 `json:"bits_per_sec"`
	PacketsPerSec float64 `json:"packets_per_sec"`
	Utilization   float64 `json:"utilization"`
	Verdict       string  `json:"verdict"`
	// QueueWaitSeconds is the M/D/1 mean wait; null when ρ ≥ 1.
	QueueWaitSeconds *float64 `json:"queue_wait_seconds"`
	// ServiceSeconds is the mean time to carry one packet.
	ServiceSeconds float64 `json:"service_seconds"`
}

type hopPlan struct {
	Name                  string   `json:"name"`
	Rank                  int      `json:"rank"`
	CapacityBitsPerSec    float64  `json:"capacity_bits_per_sec"`
	CapacityPacketsPerSec float64  `json:"capacity_packets_per_sec"`
	Flows                 []string `json:"flows"`
	// Before: one message per event (payload × retry × fan-out); After:
	// sluice's batches, compressed, with the per-batch overhead.
	Before load `json:"before"`
	After  load `json:"after"`
	// Sent is, on the link hop when its demand outruns what the node
	// sends (Spool), the load the node does put on it: at most the target,
	// the rest waiting in the spool. Its queue wait, not After's, is the
	// hop's in the latency figures. Null otherwise.
	Sent *load `json:"sent"`
	// RTTSeconds is the hop's round-trip time (0 = none given); a batch
	// crosses it in half.
	RTTSeconds float64 `json:"rtt_seconds"`
	// LatencyBudgetSeconds is the hop's budget (0 = none) and WithinBudget
	// whether its queue wait (Sent's if any, else After's) plus service
	// time plus rtt/2 fits in it.
	LatencyBudgetSeconds float64 `json:"latency_budget_seconds"`
	WithinBudget         *bool   `json:"within_budget"`

	capacity     shaper.Capacity
	before, aftr shaper.Load
}

type flowPlan struct {
	Name             string   `json:"name"`
	Class            string   `json:"class"`
	Hops             []string `json:"hops"`
	EventsPerSec     float64  `json:"events_per_sec"`
	MeanBytes        float64  `json:"mean_bytes"`
	P99Bytes         float64  `json:"p99_bytes"`
	Amplification    float64  `json:"amplification"` // retry × fan-out
	CompressionRatio float64  `json:"compression_ratio"`
	RatioSource      string   `json:"compression_source"` // given, sample, none
	BatchBoundBytes  int      `json:"batch_bound_bytes"`
	EventsPerBatch   float64  `json:"events_per_batch"`
	BatchWireBytes   float64  `json:"batch_wire_bytes"`
	Before           struct {
		BitsPerSec    float64 `json:"bits_per_sec"`
		PacketsPerSec float64 `json:"packets_per_sec"`
	} `json:"before"`
	After struct {
		BitsPerSec    float64 `json:"bits_per_sec"`
		PacketsPerSec float64 `json:"packets_per_sec"`
	} `json:"after"`
	// LatencySeconds: batch formation (linger or fill) plus, per hop, the
	// M/D/1 wait, this flow's batch service time and rtt/2; null when a
	// hop's queue is unbounded or the flow's class grows in the spool.
	// PropagationSeconds is its Σ rtt/2 part.
	LatencySeconds       *float64 `json:"latency_seconds"`
	PropagationSeconds   float64  `json:"propagation_seconds"`
	LatencyBudgetSeconds float64  `json:"latency_budget_seconds"`
	WithinBudget         *bool    `json:"within_budget"`

	before, after shaper.Load
	wireFrac      float64
}

type classPlan struct {
	Name string `json:"name"`
	// DemandBytesPerSec is the class's peak load on the link after sluice
	// (what the shaper charges: compressed bytes + overhead per batch).
	DemandBytesPerSec float64 `json:"demand_bytes_per_sec"`
	RateBytesPerSec   int64   `json:"rate_bytes_per_sec"`
	CeilBytesPerSec   int64   `json:"ceil_bytes_per_sec"`
	// At peak, with the recommended rates (spoolPlan): the class's action
	// at the level, what the node sends of its demand (same units), the
	// event bytes it adds to the spool per second, its spool cap (0 =
	// only spool.max_bytes) and the time, from empty, to reach it (null:
	// never, or no cap of its own).
	Action            string   `json:"action"`
	SentBytesPerSec   float64  `json:"sent_bytes_per_sec"`
	SpoolGrowthPerSec float64  `json:"spool_growth_bytes_per_sec"`
	SpoolMaxBytes     int64    `json:"spool_max_bytes"`
	SpoolFullSeconds  *float64 `json:"spool_full_seconds"`
	Overflow          string   `json:"overflow"`

	rawBytesPerSec float64 // event bytes/s of its flows on the link
}

// evaluate checks inv, read from file, and evaluates the model on it.
// Every problem found is returned, in line order, each with its line.
func evaluate(inv inventory, lines map[string]int, file string) (*plan, error) {
	dir := filepath.Dir(file)
	type lineErr struct {
		line int
		err  error
	}
	var errs []lineErr
	bad := func(key string, format string, args ...any) {
		msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", `\n`) // one problem, one line
		// A key the file leaves out is reported at its parent's line.
		for k := key; k != ""; k = k[:max(strings.LastIndexAny(k, ".["), 0)] {
			if l, ok := lines[k]; ok {
				errs = append(errs, lineErr{l, fmt.Errorf("line %d: %s: %s", l, key, msg)})
				return
			}
		}
		errs = append(errs, lineErr{0, fmt.Errorf("%s: %s", key, msg)})
	}
	addErr := func(line int, err error) { errs = append(errs, lineErr{line, err}) }
	joined := func() error {
		slices.SortStableFunc(errs, func(a, b lineErr) int { return cmp.Compare(a.line, b.line) })
		all := make([]error, len(errs))
		for i, e := range errs {
			all[i] = e.err
		}
		return errors.Join(all...)
	}
	headroom := inv.Headroom
	if headroom == 0 {
		headroom = shaper.DefaultHeadroom
	}
	if !(headroom > 0 && headroom <= 1) {
		bad("headroom", "%v: want a fraction in (0, 1]", inv.Headroom)
	}
	if len(inv.Hops) == 0 {
		bad("hops", "none: want at least one hop")
	}
	if len(inv.Flows) == 0 {
		bad("flows", "none: want at least one flow")
	}
	hops := make([]hopPlan, len(inv.Hops))
	hopIndex := map[string]int{}
	for i, h := range inv.Hops {
		k := fmt.Sprintf("hops[%d]", i)
		hp := &hops[i]
		hp.Name = h.Name
		switch _, dup := hopIndex[h.Name]; {
		case h.Name == "":
			bad(k+".name", "empty")
		case dup:
			bad(k+".name", "%q: duplicate hop name", h.Name)
		default:
			hopIndex[h.Name] = i
		}
		bw, err := parseBandwidth(h.Bandwidth)
		if err != nil {
			bad(k+".bandwidth", "%v", err)
		}
		if h.PacketsPerSec < 0 || math.IsInf(h.PacketsPerSec, 0) || math.IsNaN(h.PacketsPerSec) {
			bad(k+".packets_per_sec", "%v: want ≥ 0 (0 = unlimited)", h.PacketsPerSec)
		}
		if h.LatencyBudget < 0 {
			bad(k+".latency_budget", "%v: want ≥ 0", h.LatencyBudget)
		}
		if h.RTT < 0 {
			bad(k+".rtt", "%v: want a round-trip time ≥ 0", h.RTT)
		}
		hp.capacity = shaper.Capacity{BitsPerSec: bw, MsgsPerSec: max(h.PacketsPerSec, 0)}
		hp.CapacityBitsPerSec, hp.CapacityPacketsPerSec = hp.capacity.BitsPerSec, hp.capacity.MsgsPerSec
		hp.LatencyBudgetSeconds = h.LatencyBudget.Seconds()
		hp.RTTSeconds = max(h.RTT, 0).Seconds()
		hp.Flows = []string{}
	}
	link := -1
	if inv.Link != "" {
		i, ok := hopIndex[inv.Link]
		if !ok {
			bad("link", "%q: no such hop", inv.Link)
		}
		link = i
		if !ok {
			link = -1
		}
	} else {
		for i := range hops {
			if hops[i].capacity.BitsPerSec > 0 && (link < 0 || hops[i].capacity.BitsPerSec < hops[link].capacity.BitsPerSec) {
				link = i
			}
		}
	}
	if link < 0 && inv.Link == "" && len(hops) > 0 && len(errs) == 0 {
		bad("hops", "no hop with a bandwidth")
	}
	var linkHop hopPlan
	if link >= 0 {
		linkHop = hops[link]
	}

	// The link as `sluice run` would configure it: link_mbit, and the
	// bytes/s resolve() derives from it.
	linkMbit := linkHop.capacity.BitsPerSec / 1e6
	linkBps := int64(linkMbit * 1e6 / 8)
	target := shaper.TargetRate(linkBps, linkBps, headroom)
	classes, given, replaced := planClasses(inv.Classes, linkBps, bad, addErr)
	var spoolMax int64
	if ms := inv.Spool.MaxBytes; ms != "" {
		var err error
		if spoolMax, err = parseSize(ms); err != nil {
			bad("spool.max_bytes", "%v", err)
		}
	}
	classOf := map[string]*priority.Class{}
	var classNames []string
	for i := range classes {
		classOf[classes[i].Name] = &classes[i]
		classNames = append(classNames, classes[i].Name)
	}

	p := &plan{
		File: file, Link: linkHop.Name, LinkBitsPerSec: linkHop.capacity.BitsPerSec, Headroom: headroom,
		TargetBytesPerSec: target, BatchAirtime: shaper.DefaultBatchAirtime.String(),
		QueueModel: "M/D/1: W = ρ/(2μ(1−ρ)), μ = 1/max(mean packet bits/bandwidth, 1/packets_per_sec)",
		Warnings:   []string{}, given: given, spoolMaxRaw: inv.Spool.MaxBytes, OverCapacity: []string{},
	}
	for _, r := range replaced {
		p.Warnings = append(p.Warnings, r+" in the inventory: replaced by the plan's (rate and ceil are what it recommends)")
	}
	for _, c := range classes {
		if c.Plan[0].Kind == priority.ActionDefer {
			p.Warnings = append(p.Warnings, fmt.Sprintf("class %s: its plan defers at level 0: its events are not sent while the link is healthy", c.Name))
		}
	}
	flowNames := map[string]bool{}
	for i, f := range inv.Flows {
		k := fmt.Sprintf("flows[%d]", i)
		fp := flowPlan{Name: f.Name, Class: f.Class, Hops: f.Hops, EventsPerSec: f.EventsPerSec}
		switch {
		case f.Name == "":
			bad(k+".name", "empty")
		case flowNames[f.Name]:
			bad(k+".name", "%q: duplicate flow name", f.Name)
		}
		flowNames[f.Name] = true
		class, ok := classOf[f.Class]
		if _, broken := given[f.Class]; !ok && !broken { // a broken class has its own error
			bad(k+".class", "%q: %swant one of %s", f.Class, hintFor(f.Class, classNames...), strings.Join(classNames, ", "))
		}
		if !(f.EventsPerSec > 0) || math.IsInf(f.EventsPerSec, 0) {
			bad(k+".events_per_sec", "%v: want the peak rate, > 0", f.EventsPerSec)
		}
		retry, fan := cmp.Or(f.Retry, 1), cmp.Or(f.FanOut, 1)
		if !(retry >= 1) || math.IsInf(retry, 0) {
			bad(k+".retry", "%v: want an amplification ≥ 1 (1.1 = 10%% of sends retried once)", f.Retry)
		}
		if !(fan >= 1) || math.IsInf(fan, 0) {
			bad(k+".fan_out", "%v: want ≥ 1 copies", f.FanOut)
		}
		fp.Amplification = retry * fan
		if len(f.Hops) == 0 {
			bad(k+".hops", "none: want the hops the flow traverses")
		}
		seen := map[string]bool{}
		for j, h := range f.Hops {
			if _, ok := hopIndex[h]; !ok {
				bad(fmt.Sprintf("%s.hops[%d]", k, j), "%q: no such hop", h)
			} else if seen[h] {
				bad(fmt.Sprintf("%s.hops[%d]", k, j), "%q: listed twice", h)
			}
			seen[h] = true
		}
		if f.LatencyBudget < 0 {
			bad(k+".latency_budget", "%v: want ≥ 0", f.LatencyBudget)
		}
		fp.LatencyBudgetSeconds = f.LatencyBudget.Seconds()
		var sample []byte
		switch {
		case f.CompressionRatio != 0 && f.Sample != "":
			bad(k+".sample", "give compression_ratio or sample, not both")
		case f.CompressionRatio != 0:
			if !(f.CompressionRatio >= 1) || math.IsInf(f.CompressionRatio, 0) {
				bad(k+".compression_ratio", "%v: want raw/compressed ≥ 1 (8 = 8:1)", f.CompressionRatio)
			}
			fp.CompressionRatio, fp.RatioSource = f.CompressionRatio, "given"
		case f.Sample != "":
			path := f.Sample
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			var err error
			if sample, err = readSample(path); err != nil {
				bad(k+".sample", "%v", err)
			}
			fp.RatioSource = "sample"
		default:
			fp.CompressionRatio, fp.RatioSource = 1, "none"
		}
		mean, p99, err := payloadSizes(f.Payload, sample)
		if err != nil {
			bad(k+".payload", "%v", err)
		}
		fp.MeanBytes, fp.P99Bytes = mean, p99
		if !ok || len(errs) > 0 {
			p.Flows = append(p.Flows, fp)
			continue
		}
		maxEvents, maxBytes, linger := class.Batch.Limits()
		if sample != nil {
			ratio, err := sampleRatio(sample, class, target, f.EventsPerSec)
			if err != nil {
				bad(k+".sample", "%v", err)
			}
			fp.CompressionRatio = ratio
		}
		fp.wireFrac = 1 / fp.CompressionRatio
		fp.BatchBoundBytes = shaper.BatchRawBytes(target, shaper.DefaultBatchAirtime, fp.wireFrac, shaper.MinBatchRawBytes, maxBytes)
		fp.EventsPerBatch = shaper.BatchEvents(f.EventsPerSec, mean, fp.BatchBoundBytes, maxEvents, linger)
		fp.BatchWireBytes = shaper.BatchWireBytes(fp.EventsPerBatch, mean, fp.wireFrac)
		fp.before = shaper.Load{BytesPerSec: f.EventsPerSec * mean, MsgsPerSec: f.EventsPerSec}.Scale(fp.Amplification)
		batches := f.EventsPerSec / fp.EventsPerBatch
		fp.after = shaper.Load{
			BytesPerSec: batches * shaper.MsgCost(fp.BatchWireBytes, shaper.DefaultOverheadBytes),
			MsgsPerSec:  batches,
		}.Scale(fp.Amplification)
		if !finite(fp.before.BitsPerSec()) || !finite(fp.after.BitsPerSec()) {
			bad(k+".events_per_sec", "%v events/s of %v B × %v: the load overflows", f.EventsPerSec, mean, fp.Amplification)
			p.Flows = append(p.Flows, fp)
			continue
		}
		fp.Before.BitsPerSec, fp.Before.PacketsPerSec = fp.before.BitsPerSec(), fp.before.MsgsPerSec
		fp.After.BitsPerSec, fp.After.PacketsPerSec = fp.after.BitsPerSec(), fp.after.MsgsPerSec
		if p99 > jetStreamMaxPayload {
			p.Warnings = append(p.Warnings, fmt.Sprintf("flow %s: p99 payload %s is over JetStream's default max_payload (1 MiB) and sluice's default ingest.max_event_bytes: such events are refused", f.Name, fmtBytes(p99)))
		} else if p99 > float64(fp.BatchBoundBytes) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("flow %s: p99 payload %s is over the batch bound %s: such events travel one per batch", f.Name, fmtBytes(p99), fmtBytes(float64(fp.BatchBoundBytes))))
		}
		for _, h := range f.Hops {
			hp := &hops[hopIndex[h]]
			hp.Flows = append(hp.Flows, f.Name)
			hp.before = hp.before.Add(fp.before)
			hp.aftr = hp.aftr.Add(fp.after)
		}
		p.Flows = append(p.Flows, fp)
	}
	for i, h := range hops {
		if !finite(h.before.BitsPerSec()) || !finite(h.aftr.BitsPerSec()) || !finite(h.before.MsgsPerSec) {
			bad(fmt.Sprintf("hops[%d]", i), "the flows' load on %s overflows", h.Name)
		}
	}
	if len(errs) > 0 {
		return nil, joined()
	}

	// Per hop: utilization, verdict, queueing.
	wait := make(map[string]*float64, len(hops))
	for i := range hops {
		hp := &hops[i]
		hp.Before = hopLoad(hp.before, hp.capacity, headroom)
		hp.After = hopLoad(hp.aftr, hp.capacity, headroom)
		wait[hp.Name] = hp.After.QueueWaitSeconds
		if hp.LatencyBudgetSeconds > 0 {
			ok := hp.After.QueueWaitSeconds != nil && *hp.After.QueueWaitSeconds+hp.After.ServiceSeconds+hp.RTTSeconds/2 <= hp.LatencyBudgetSeconds
			hp.WithinBudget = &ok
		}
	}

	// The recommended classes: guarantees in priority order (critical
	// first) out of the target, so that Σ rate ≤ target ≤ link; non-critical
	// ceilings at the link; critical ceilings at what the others'
	// guarantees leave (the most priority.Validate allows), which stays
	// above 0: with a critical class, the others' guarantees stop 1 B/s
	// short of the link.
	demand, demandMsgs, raw := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, fp := range p.Flows {
		if slices.Contains(fp.Hops, p.Link) {
			demand[fp.Class] += fp.after.BytesPerSec
			demandMsgs[fp.Class] += fp.after.MsgsPerSec
			raw[fp.Class] += fp.before.BytesPerSec
		}
	}
	order := slices.Clone(classes)
	slices.SortStableFunc(order, func(a, b priority.Class) int {
		if a.Critical != b.Critical {
			if a.Critical {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Priority, b.Priority)
	})
	hasCritical := slices.ContainsFunc(classes, func(c priority.Class) bool { return c.Critical })
	left := target
	var others int64
	rates := map[string]int64{}
	for _, c := range order {
		avail := left
		if hasCritical && !c.Critical {
			avail = max(0, min(avail, linkBps-1-others))
		}
		want := math.Ceil(demand[c.Name])
		r := avail
		if want < float64(avail) {
			r = int64(want)
		}
		if want > float64(r) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("class %s: peak demand %s on %s exceeds what the target leaves it (%s): guaranteed only that; the rest borrows or queues in the spool", c.Name, fmtBits(want*8), p.Link, fmtBits(float64(r)*8)))
		}
		if m := c.Ceil.MsgsPerSec; m > 0 && demandMsgs[c.Name] > float64(m) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("class %s: peak demand %s batches/s on %s exceeds its ceil_msgs %d: the rest queues in the spool", c.Name, fmtRate(demandMsgs[c.Name]), p.Link, m))
		}
		rates[c.Name] = r
		left -= r
		if !c.Critical {
			others += r
		}
	}
	final := slices.Clone(classes)
	for i := range final {
		c := &final[i]
		cp := classPlan{Name: c.Name, DemandBytesPerSec: demand[c.Name], RateBytesPerSec: rates[c.Name], CeilBytesPerSec: linkBps,
			SpoolMaxBytes: c.MaxBytes, Overflow: cmp.Or(c.Overflow, priority.OverflowBlock), rawBytesPerSec: raw[c.Name]}
		if c.Critical {
			cp.CeilBytesPerSec = linkBps - others
		}
		c.Rate.BytesPerSec, c.Ceil.BytesPerSec = cp.RateBytesPerSec, cp.CeilBytesPerSec
		p.Classes = append(p.Classes, cp)
	}
	if err := priority.Validate(final, priority.Rate{BytesPerSec: linkBps}); err != nil {
		return nil, fmt.Errorf("classes: the recommended rates do not validate (a bug in sluice plan): %w", err)
	}
	sentMsgs := p.spoolAtPeak(final, demandMsgs, target, spoolMax)
	if link >= 0 && p.Spool.SentBytesPerSec < p.Spool.DemandBytesPerSec {
		// The node holds back the rest: the link hop queues what is sent.
		hp := &hops[link]
		sent := hopLoad(shaper.Load{BytesPerSec: p.Spool.SentBytesPerSec, MsgsPerSec: sentMsgs}, hp.capacity, headroom)
		hp.Sent = &sent
		wait[hp.Name] = sent.QueueWaitSeconds
		if hp.LatencyBudgetSeconds > 0 {
			ok := sent.QueueWaitSeconds != nil && *sent.QueueWaitSeconds+sent.ServiceSeconds+hp.RTTSeconds/2 <= hp.LatencyBudgetSeconds
			hp.WithinBudget = &ok
		}
	}

	// Per flow: formation + Σ (wait + own service + rtt/2) against the
	// budget; unbounded when a hop's queue is, or when its class's spool
	// grows (each event waits longer than the last).
	grows := map[string]bool{}
	for _, c := range p.Classes {
		grows[c.Name] = c.SpoolGrowthPerSec > 0
	}
	for i := range p.Flows {
		fp := &p.Flows[i]
		_, _, linger := classOf[fp.Class].Batch.Limits()
		lat := min(linger.Seconds(), (fp.EventsPerBatch-1)/fp.EventsPerSec)
		cost := shaper.MsgCost(fp.BatchWireBytes, shaper.DefaultOverheadBytes)
		stable := !(grows[fp.Class] && slices.Contains(fp.Hops, p.Link))
		for _, h := range fp.Hops {
			hp := &hops[hopIndex[h]]
			fp.PropagationSeconds += hp.RTTSeconds / 2
			if w := wait[h]; w != nil {
				lat += *w + shaper.ServiceTime(cost, hp.capacity) + hp.RTTSeconds/2
			} else {
				stable = false
			}
		}
		if stable {
			fp.LatencySeconds = &lat
		}
		if fp.LatencyBudgetSeconds > 0 {
			ok := stable && lat <= fp.LatencyBudgetSeconds
			fp.WithinBudget = &ok
		}
	}
	slices.SortStableFunc(hops, func(a, b hopPlan) int { return cmp.Compare(b.After.Utilization, a.After.Utilization) })
	for i := range hops {
		hops[i].Rank = i + 1
		if hops[i].After.Verdict == string(shaper.VerdictOverCapacity) {
			p.OverCapacity = append(p.OverCapacity, hops[i].Name)
		}
	}
	p.Hops = hops

	var err error
	if p.Config, err = p.recommendedConfig(linkMbit); err != nil {
		return nil, err
	}
	return p, nil
}

// spoolAtPeak fills p.Spool and the spool figures of p.Classes: what the
// node sends of each class's peak demand on the link with the recommended
// classes (final), at the level the controller settles at, and what it
// keeps. A class's spool grows by the event bytes of what it does not
// send: its unsent share of the wire bytes times the event bytes of its
// flows (a lane is a FIFO, so every flow of a class waits alike). Growth
// is in event bytes; the caps count segment files, with their framing and
// pages, so a cap fills at least as fast as shown.
//
// It returns the batches/s the node sends over the link.
func (p *plan) spoolAtPeak(final []priority.Class, demandMsgs map[string]float64, target, spoolMax int64) (sentMsgs float64) {
	d := make([]float64, len(final))
	msgs := make([]float64, len(final))
	for i, c := range final {
		d[i], msgs[i] = p.Classes[i].DemandBytesPerSec, demandMsgs[c.Name]
	}
	actionsAt := func(level int) []priority.Action {
		acts := make([]priority.Action, len(final))
		for i := range final {
			acts[i] = shaper.EffectiveAction(&final[i], level, 0, false)
		}
		return acts
	}
	level, acts := 0, actionsAt(0)
	sent := allocate(final, acts, d, msgs, float64(target))
	for i := range final {
		if d[i]-sent[i] > growthEpsilon*d[i] {
			// A growing backlog: a standing queue that grows for 10 s is
			// level 2 (shaper.Controller), on a healthy link.
			level, acts = 2, actionsAt(2)
			sent = allocate(final, acts, d, msgs, float64(target))
			break
		}
	}
	sp := spoolPlan{Level: level, MaxBytes: spoolMax}
	for i := range final {
		cp := &p.Classes[i]
		cp.Action = actionString(acts[i])
		cp.SentBytesPerSec = sent[i]
		sp.DemandBytesPerSec += d[i]
		sp.SentBytesPerSec += sent[i]
		if d[i] > 0 {
			sentMsgs += sent[i] / d[i] * msgs[i]
		}
		if acts[i].Kind == priority.ActionDropFields && d[i] > 0 && level > 0 {
			sp.DropFields = true
		}
		if unsent := d[i] - sent[i]; unsent > growthEpsilon*d[i] {
			cp.SpoolGrowthPerSec = unsent / d[i] * cp.rawBytesPerSec
			sp.GrowthBytesPerSec += cp.SpoolGrowthPerSec
			if cp.SpoolMaxBytes > 0 && cp.SpoolGrowthPerSec > 0 {
				s := float64(cp.SpoolMaxBytes) / cp.SpoolGrowthPerSec
				cp.SpoolFullSeconds = &s
			}
		}
	}
	if spoolMax > 0 && sp.GrowthBytesPerSec > 0 {
		s := float64(spoolMax) / sp.GrowthBytesPerSec
		sp.FullSeconds = &s
	}
	p.Spool = sp
	return sentMsgs
}

// growthEpsilon is the share of a class's demand below which what it
// does not send is rounding, not growth.
const growthEpsilon = 1e-9

// allocate is the lanes' steady state (shaper.Lanes) under a peak that
// keeps every class with demand backlogged: what each class sends, in the
// units of demand (bytes/s, wire + overhead), of a link bucket refilled
// at target. msgs is each class's batches/s, for its *_msgs bounds. In
// order, each phase from what the ones before left:
//
//  1. critical classes, strict priority (then list order), up to demand
//     and ceil;
//  2. the guarantees of the classes whose action at the level is none or
//     drop_fields: rate (scaled down together when the target is below
//     the critical rates plus theirs, as Lanes.rescale does) and
//     rate_msgs, by priority, weighted fair within a priority;
//  3. borrowing by every class not deferred, up to demand and ceil, by
//     priority, weighted fair within a priority.
//
// A deferred class sends nothing.
func allocate(classes []priority.Class, acts []priority.Action, demand, msgs []float64, target float64) []float64 {
	n := len(classes)
	sent := make([]float64, n)
	perMsg := func(i int) float64 {
		if msgs[i] <= 0 {
			return 0
		}
		return demand[i] / msgs[i]
	}
	limit := make([]float64, n) // demand within the ceilings
	var critRate, sumRate float64
	for i, c := range classes {
		if acts[i].Kind == priority.ActionDefer || demand[i] <= 0 {
			continue
		}
		limit[i] = demand[i]
		if b := c.Ceil.BytesPerSec; b > 0 {
			limit[i] = min(limit[i], float64(b))
		}
		if m := c.Ceil.MsgsPerSec; m > 0 {
			limit[i] = min(limit[i], float64(m)*perMsg(i))
		}
	}
	for i, c := range classes {
		switch {
		case acts[i].Kind == priority.ActionDefer || acts[i].Kind == priority.ActionThrottle:
		case c.Critical:
			critRate += float64(c.Rate.BytesPerSec)
		default:
			sumRate += float64(c.Rate.BytesPerSec)
		}
	}
	scale := 1.0
	if sumRate > 0 && target-critRate < sumRate {
		scale = max(0, target-critRate) / sumRate
	}
	left := target
	// fill gives the classes ok accepts, by priority and weighted fair
	// within one, up to upTo(i) each in all, from left.
	fill := func(ok func(i int) bool, upTo func(i int) float64, fair bool) {
		for prio := 0; prio <= priority.MaxPriority; prio++ {
			var group []int
			for i, c := range classes {
				if c.Priority == prio && ok(i) && upTo(i) > sent[i] {
					group = append(group, i)
				}
			}
			if !fair {
				for _, i := range group {
					give := min(upTo(i)-sent[i], left)
					sent[i] += give
					left -= give
				}
				continue
			}
			left -= waterfill(group, func(i int) float64 { return upTo(i) - sent[i] },
				func(i int) float64 { return float64(classes[i].EffectiveWeight()) }, left, sent)
		}
	}
	fill(func(i int) bool { return classes[i].Critical }, func(i int) float64 { return limit[i] }, false)
	fill(func(i int) bool {
		k := acts[i].Kind
		return !classes[i].Critical && (k == priority.ActionNone || k == priority.ActionDropFields)
	}, func(i int) float64 {
		c := classes[i]
		if c.Rate.BytesPerSec <= 0 && c.Rate.MsgsPerSec <= 0 {
			return 0
		}
		g := math.Inf(1) // a dimension without a rate is not bounded by it
		if c.Rate.BytesPerSec > 0 {
			g = float64(c.Rate.BytesPerSec) * scale
		}
		if c.Rate.MsgsPerSec > 0 {
			g = min(g, float64(c.Rate.MsgsPerSec)*perMsg(i))
		}
		return min(g, limit[i])
	}, true)
	fill(func(i int) bool { return !classes[i].Critical }, func(i int) float64 { return limit[i] }, true)
	return sent
}

// waterfill shares budget among the classes of group in proportion to
// weight, none above its room, what one cannot take going to the others
// (weighted max-min fairness, what the lanes' start-time fair queueing
// converges to). It adds the shares to sent and returns their sum.
func waterfill(group []int, room, weight func(i int) float64, budget float64, sent []float64) float64 {
	slices.SortStableFunc(group, func(a, b int) int { return cmp.Compare(room(a)/weight(a), room(b)/weight(b)) })
	var w float64
	for _, i := range group {
		w += weight(i)
	}
	given := 0.0
	for k, i := range group {
		if budget <= 0 || w <= 0 {
			break
		}
		share := budget * weight(i) / w
		if r := room(i); r <= share {
			share = r
		} else {
			// Every class from here on has more room than its share.
			for _, j := range group[k:] {
				s := budget * weight(j) / w
				sent[j] += s
				given += s
			}
			return given
		}
		sent[i] += share
		given += share
		budget -= share
		w -= weight(i)
	}
	return given
}

// actionString spells a plan action as the config file does.
func actionString(a priority.Action) string {
	if a.Kind == priority.ActionDropFields {
		return a.Kind.String() + ":" + strconv.Itoa(a.MinFieldPriority)
	}
	return a.Kind.String()
}

// planClasses returns the plan's classes: the defaults for a link of
// linkBps bytes/s, changed or extended by the inventory's entries cfg,
// built and checked by buildClasses as the config file's are. It also
// returns cfg by name (for the recommended config) and, for the entries
// that give a rate or ceil, what the plan replaces. Problems go to bad (by
// key) and addErr (buildClasses' own, with their lines).
func planClasses(cfg []classConfig, linkBps int64, bad func(key, format string, args ...any), addErr func(int, error)) ([]priority.Class, map[string]classConfig, []string) {
	classes := priority.Defaults(linkBps)
	if len(cfg) == 0 {
		return classes, nil, nil
	}
	given := make(map[string]classConfig, len(cfg))
	var replaced []string
	// buildClasses validates the entries without their rates and ceilings,
	// which the plan sets: Validate's sums would judge values that are
	// about to be replaced.
	zero := "0"
	check := make([]classConfig, len(cfg))
	valid := true
	for i, cc := range cfg {
		k := fmt.Sprintf("classes[%d]", i)
		if cc.Name != "" && !spool.ValidClass(cc.Name) {
			bad(k+".name", "%q: want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\"", cc.Name)
			valid = false
		}
		for _, r := range []struct {
			key string
			v   *string
		}{{"rate", cc.Rate}, {"ceil", cc.Ceil}} {
			if r.v == nil {
				continue
			}
			if _, err := parseRate(*r.v, linkBps); err != nil {
				bad(k+"."+r.key, "%v", err)
				valid = false
			} else {
				replaced = append(replaced, fmt.Sprintf("%s (%s): %s %q", k, cc.Name, r.key, *r.v))
			}
		}
		if _, dup := given[cc.Name]; !dup {
			given[cc.Name] = cc
		}
		cc.Rate, cc.Ceil = &zero, &zero
		check[i] = cc
	}
	built, err := buildClassList(check, linkBps, false)
	if err != nil {
		classLine := func(msg string) (int, string) {
			for i := len(cfg) - 1; i >= 0; i-- { // the last: a duplicate's second entry
				if cfg[i].Name != "" && strings.Contains(msg, fmt.Sprintf("class %q", cfg[i].Name)) {
					return cfg[i].line, fmt.Sprintf("classes[%d]", i)
				}
			}
			return cfg[0].line, "classes"
		}
		for _, e := range splitErrors(err) {
			parts := []error{e}
			if u := errors.Unwrap(e); u != nil && strings.HasPrefix(e.Error(), "classes: ") {
				parts = splitErrors(u) // priority.Validate's, as "classes: …"
			}
			for _, e := range parts {
				msg := strings.ReplaceAll(e.Error(), "\n", `\n`) // a name may hold one
				var line int
				if _, serr := fmt.Sscanf(msg, "line %d:", &line); serr == nil {
					addErr(line, errors.New(msg)) // per entry: "line N: classes[i] (name): …"
					continue
				}
				line, key := classLine(msg)
				if strings.HasPrefix(msg, "classes: ") {
					addErr(line, fmt.Errorf("line %d: %s", line, msg))
					continue
				}
				addErr(line, fmt.Errorf("line %d: %s: %s", line, key, msg))
			}
		}
		return classes, given, replaced
	}
	if !valid { // reported; flows are checked against the defaults
		return classes, given, replaced
	}
	for _, c := range built {
		if i := slices.IndexFunc(classes, func(d priority.Class) bool { return d.Name == c.Name }); i >= 0 {
			classes[i] = c
		} else {
			classes = append(classes, c)
		}
	}
	return classes, given, replaced
}

// splitErrors returns the errors joined in err (errors.Join), or err.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func finite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }

// hopLoad evaluates a load on a hop.
func hopLoad(l shaper.Load, c shaper.Capacity, headroom float64) load {
	u := shaper.Utilization(l, c)
	out := load{BitsPerSec: l.BitsPerSec(), PacketsPerSec: l.MsgsPerSec, Utilization: u,
		Verdict: string(shaper.HeadroomVerdict(u, headroom))}
	out.ServiceSeconds = shaper.ServiceTime(l.MeanMsgBytes(), c)
	mu := math.Inf(1)
	if out.ServiceSeconds > 0 {
		mu = 1 / out.ServiceSeconds
	}
	if w, ok := shaper.MD1Wait(l.MsgsPerSec, mu); ok {
		s := w.Seconds()
		out.QueueWaitSeconds = &s
	}
	return out
}

// parseBandwidth parses a hop's bandwidth, in bit/s: a rate with a unit
// (parseRate's units: 100Mbit, 1Gbit, 12.5MB/s).
func parseBandwidth(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("missing: want a rate with a unit, such as 100Mbit or 1Gbit")
	}
	if _, unit := splitUnit(strings.TrimSuffix(s, "/s")); unit == "" || strings.HasSuffix(s, "%") {
		return 0, fmt.Errorf("%q: want a rate with a unit, such as 100Mbit or 1Gbit", s)
	}
	bps, err := parseRate(s, 0)
	if err != nil {
		return 0, err
	}
	if bps <= 0 {
		return 0, fmt.Errorf("%q: want > 0", s)
	}
	return float64(bps) * 8, nil
}

// payloadSizes returns the mean and p99 payload sizes: as given, or, for
// those not given, measured on the sample.
func payloadSizes(ps payloadSpec, sample []byte) (mean, p99 float64, err error) {
	var sm, s99 float64
	if sample != nil {
		sm, s99 = sampleSizes(sample)
	}
	get := func(key, s string, measured float64) (float64, error) {
		if s == "" {
			if sample == nil {
				return 0, fmt.Errorf("%s: missing: want a size such as 1KB (or a sample to measure it)", key)
			}
			return measured, nil
		}
		n, err := parseSize(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		if n <= 0 {
			return 0, fmt.Errorf("%s: %q: want > 0", key, s)
		}
		return float64(n), nil
	}
	if mean, err = get("mean", ps.Mean, sm); err != nil {
		return 0, 0, err
	}
	if p99, err = get("p99", ps.P99, s99); err != nil {
		return 0, 0, err
	}
	if p99 < mean {
		return 0, 0, fmt.Errorf("p99 %v B < mean %v B", p99, mean)
	}
	return mean, p99, nil
}

// readSample reads an NDJSON sample: at least one non-empty line, at most
// maxSampleBytes.
func readSample(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSampleBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSampleBytes {
		return nil, fmt.Errorf("%s: larger than %d MiB; a smaller sample measures the ratio as well", path, maxSampleBytes>>20)
	}
	if len(sampleLines(data)) == 0 {
		return nil, fmt.Errorf("%s: no events (want NDJSON, one event a line)", path)
	}
	return data, nil
}

func sampleLines(data []byte) [][]byte {
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxSampleBytes)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// sampleSizes returns the mean and the p99 (nearest rank) of the sample's
// event sizes.
func sampleSizes(data []byte) (mean, p99 float64) {
	lines := sampleLines(data)
	sizes := make([]int, len(lines))
	var sum int
	for i, l := range lines {
		sizes[i] = len(l)
		sum += len(l)
	}
	slices.Sort(sizes)
	rank := int(math.Ceil(0.99*float64(len(sizes)))) - 1
	return float64(sum) / float64(len(sizes)), float64(sizes[max(rank, 0)])
}

// sampleRatio measures raw/compressed on the sample batched as the node
// batches the class at the target: events per batch from the model, zstd
// at the class's level. The batch bound depends on the ratio, so it
// iterates until the batch size settles (at most 4 rounds).
func sampleRatio(data []byte, c *priority.Class, target int64, rate float64) (float64, error) {
	lines := sampleLines(data)
	var sum int
	for _, l := range lines {
		sum += len(l)
	}
	mean := float64(sum) / float64(len(lines))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(planZstdLevel(c.Compression)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	maxEvents, maxBytes, linger := c.Batch.Limits()
	frac, lastN := 1.0, -1
	var raw, dst []byte
	for range 4 {
		bound := shaper.BatchRawBytes(target, shaper.DefaultBatchAirtime, frac, shaper.MinBatchRawBytes, maxBytes)
		n := max(1, int(shaper.BatchEvents(rate, mean, bound, maxEvents, linger)))
		if n == lastN {
			break
		}
		lastN = n
		var rawN, wireN int
		for i := 0; i < len(lines); i += n {
			raw = raw[:0]
			for _, l := range lines[i:min(i+n, len(lines))] {
				raw = append(append(raw, l...), '\n')
			}
			dst = enc.EncodeAll(raw, dst[:0])
			rawN += len(raw)
			wireN += len(dst)
		}
		frac = float64(wireN) / float64(rawN)
	}
	return 1 / frac, nil
}

// planZstdLevel is aggregator's zstdLevel: "" and fastest are fastest.
func planZstdLevel(name string) zstd.EncoderLevel {
	switch name {
	case priority.CompressionDefault:
		return zstd.SpeedDefault
	case priority.CompressionBetter:
		return zstd.SpeedBetterCompression
	case priority.CompressionBest:
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedFastest
}

// recommendedConfig renders the recommended classes as a `sluice run
// --config` file: rate and ceil in bytes/s (exact integers: Validate's sums
// hold to the byte), and every other key the inventory gave the class. A
// default class the inventory leaves alone keeps the default's batch, plan
// and fields; an added class is defined by its keys alone, as in the
// inventory.
func (p *plan) recommendedConfig(linkMbit float64) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# sluice run --config: recommended by `sluice plan %s`.\n", filepath.Base(cmp.Or(p.File, "FLOWS.yaml")))
	fmt.Fprintf(&b, "# Link %s (%s), target %s at headroom %v. Rates and ceilings are\n", p.Link, fmtBits(p.LinkBitsPerSec), fmtBits(float64(p.TargetBytesPerSec)*8), p.Headroom)
	b.WriteString("# bytes/s on the wire (compressed batches + 256 B each), from peak demand.\n")
	if len(p.OverCapacity) > 0 {
		fmt.Fprintf(&b, "# Over capacity at peak (written with --allow-over-capacity): %s.\n", p.overCapacityText())
	}
	if p.Spool.GrowthBytesPerSec > 0 {
		fmt.Fprintf(&b, "# At peak the link's demand outruns what the node sends: the spool grows by %s/s.\n", fmtBytes(p.Spool.GrowthBytesPerSec))
	}
	fmt.Fprintf(&b, "link_mbit: %s\n", strconv.FormatFloat(linkMbit, 'f', -1, 64))
	fmt.Fprintf(&b, "headroom: %s\n", strconv.FormatFloat(p.Headroom, 'f', -1, 64))
	if p.spoolMaxRaw != "" {
		fmt.Fprintf(&b, "spool:\n  max_bytes: %s\n", configScalar(p.spoolMaxRaw))
	}
	b.WriteString("classes:\n")
	for _, c := range p.Classes {
		fmt.Fprintf(&b, "  - name: %s\n", configScalar(c.Name))
		fmt.Fprintf(&b, "    rate: %dB/s # %s; peak demand %s\n", c.RateBytesPerSec, fmtBits(float64(c.RateBytesPerSec)*8), fmtBits(c.DemandBytesPerSec*8))
		fmt.Fprintf(&b, "    ceil: %dB/s # %s\n", c.CeilBytesPerSec, fmtBits(float64(c.CeilBytesPerSec)*8))
		if cc, ok := p.given[c.Name]; ok {
			keys, err := classKeys(cc)
			if err != nil {
				return "", fmt.Errorf("classes: %s: %w", c.Name, err)
			}
			b.WriteString(keys)
		}
	}
	return b.String(), nil
}

// classOut is a classConfig without name, rate and ceil, for
// recommendedConfig: the keys the inventory gave.
type classOut struct {
	Priority    *int           `yaml:"priority,omitempty"`
	Critical    *bool          `yaml:"critical,omitempty"`
	RateMsgs    *int64         `yaml:"rate_msgs,omitempty"`
	CeilMsgs    *int64         `yaml:"ceil_msgs,omitempty"`
	Weight      *int           `yaml:"weight,omitempty"`
	MaxAge      *time.Duration `yaml:"max_age,omitempty"`
	Expire      *string        `yaml:"expire,omitempty"`
	Batch       *batchOut      `yaml:"batch,omitempty"`
	Compression *string        `yaml:"compression,omitempty"`
	Overflow    *string        `yaml:"overflow,omitempty"`
	MaxBytes    *string        `yaml:"max_bytes,omitempty"`
	Fields      *[]fieldConfig `yaml:"fields,omitempty"`
	Plan        *[]string      `yaml:"plan,flow,omitempty"`
}

type batchOut struct {
	MaxEvents *int           `yaml:"max_events,omitempty"`
	MaxBytes  *string        `yaml:"max_bytes,omitempty"`
	Linger    *time.Duration `yaml:"linger,omitempty"`
}

// classKeys renders the keys of cc other than name, rate and ceil as lines
// of a classes entry, escaped for the config file's ${NAME} expansion.
func classKeys(cc classConfig) (string, error) {
	o := classOut{Priority: cc.Priority, Critical: cc.Critical, RateMsgs: cc.RateMsgs, CeilMsgs: cc.CeilMsgs,
		Weight: cc.Weight, MaxAge: cc.MaxAge, Expire: cc.Expire, Compression: cc.Compression, Overflow: cc.Overflow,
		MaxBytes: cc.MaxBytes, Fields: cc.Fields, Plan: cc.Plan}
	if bc := cc.Batch; bc != nil {
		o.Batch = &batchOut{MaxEvents: bc.MaxEvents, MaxBytes: bc.MaxBytes, Linger: bc.Linger}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(o); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	text := strings.TrimSuffix(buf.String(), "\n")
	if text == "{}" {
		return "", nil
	}
	var b strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		if line != "" {
			b.WriteString("    ")
		}
		b.WriteString(strings.ReplaceAll(line, "${", "$${"))
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// configScalar spells s as a YAML scalar on one line, escaped for the
// config file's ${NAME} expansion.
func configScalar(s string) string {
	out, err := yaml.Marshal(s)
	if err != nil || bytes.Count(out, []byte("\n")) != 1 {
		out = []byte(strconv.Quote(s) + "\n") // JSON-style quoting is YAML too
	}
	return strings.ReplaceAll(strings.TrimSuffix(string(out), "\n"), "${", "$${")
}

// writeText prints the plan for people.
func (p *plan) writeText(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: link %s at %s, headroom %v → target %s; batches ≤ %s of air time at the target\n\n",
		p.File, p.Link, fmtBits(p.LinkBitsPerSec), p.Headroom, fmtBits(float64(p.TargetBytesPerSec)*8), p.BatchAirtime)
	b.WriteString("Hops, bottleneck first. before: one message per event; after: sluice's compressed batches.\n")
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "#\thop\tcapacity\trtt\tbefore bit/s\tpkt/s\tutil\tafter bit/s\tpkt/s\tutil\tverdict\tqueue M/D/1\tbudget")
	for _, h := range p.Hops {
		capacity := fmtBits(h.CapacityBitsPerSec)
		if h.CapacityPacketsPerSec > 0 {
			capacity += " " + fmtRate(h.CapacityPacketsPerSec) + " p/s"
		}
		rtt := "-"
		if h.RTTSeconds > 0 {
			rtt = fmtSeconds(h.RTTSeconds)
		}
		budget := "-"
		if h.WithinBudget != nil {
			budget = fmtSeconds(h.LatencyBudgetSeconds) + " " + okWord(*h.WithinBudget)
		}
		queue := fmtWait(h.After.QueueWaitSeconds)
		if h.Sent != nil {
			queue = fmtWait(h.Sent.QueueWaitSeconds) + " *"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Rank, h.Name, capacity, rtt,
			fmtBits(h.Before.BitsPerSec), fmtRate(h.Before.PacketsPerSec), fmtPct(h.Before.Utilization),
			fmtBits(h.After.BitsPerSec), fmtRate(h.After.PacketsPerSec), fmtPct(h.After.Utilization),
			h.After.Verdict, queue, budget)
	}
	tw.Flush()
	for _, h := range p.Hops {
		if h.Sent != nil {
			fmt.Fprintf(&b, "* %s: the queue of what the node sends, %s and %s p/s (%s); the rest of the demand waits in the spool.\n",
				h.Name, fmtBits(h.Sent.BitsPerSec), fmtRate(h.Sent.PacketsPerSec), fmtPct(h.Sent.Utilization))
		}
	}
	fmt.Fprintln(&b)
	b.WriteString("Flows. batch: events and compressed bytes per batch; latency: batch formation + queueing + service + rtt/2 on each hop.\n")
	tw = tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "flow\tclass\tevents/s\tpayload mean/p99\t×retry×fan-out\tratio\tbatch events\twire\tbefore\tafter\tlatency\tbudget")
	for _, f := range p.Flows {
		budget := "-"
		if f.WithinBudget != nil {
			budget = fmtSeconds(f.LatencyBudgetSeconds) + " " + okWord(*f.WithinBudget)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s / %s\t%s\t%s (%s)\t%s\t%s\t%s %s p/s\t%s %s p/s\t%s\t%s\n",
			f.Name, f.Class, fmtRate(f.EventsPerSec), fmtBytes(f.MeanBytes), fmtBytes(f.P99Bytes),
			strconv.FormatFloat(f.Amplification, 'g', 4, 64), strconv.FormatFloat(f.CompressionRatio, 'f', 2, 64), f.RatioSource,
			strconv.FormatFloat(f.EventsPerBatch, 'g', 5, 64), fmtBytes(f.BatchWireBytes),
			fmtBits(f.Before.BitsPerSec), fmtRate(f.Before.PacketsPerSec),
			fmtBits(f.After.BitsPerSec), fmtRate(f.After.PacketsPerSec), fmtWait(f.LatencySeconds), budget)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nQueueing model: %s.\n", p.QueueModel)
	p.writeSpool(&b)
	for _, warn := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	switch {
	case p.withheld:
		fmt.Fprintf(&b, "\nOver capacity at peak: %s.\nNo recommended config: no class configuration carries this load. Lower the peak, add capacity, or pass --allow-over-capacity to print and write it anyway.\n", p.overCapacityText())
	default:
		fmt.Fprintf(&b, "\nRecommended config (sluice run --config FILE; --write-config writes it):\n\n%s", p.Config)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeSpool prints what the spool does at peak.
func (p *plan) writeSpool(b *bytes.Buffer) {
	sp := p.Spool
	if sp.GrowthBytesPerSec <= 0 {
		fmt.Fprintf(b, "\nSpool at peak: %s sends all of its %s demand (target %s): the spool does not grow.\n",
			p.Link, fmtBits(sp.DemandBytesPerSec*8), fmtBits(float64(p.TargetBytesPerSec)*8))
		return
	}
	fmt.Fprintf(b, "\nSpool at peak: the node sends %s of the %s demand on %s (target %s), at level %d; the spool grows by %s/s",
		fmtBits(sp.SentBytesPerSec*8), fmtBits(sp.DemandBytesPerSec*8), p.Link, fmtBits(float64(p.TargetBytesPerSec)*8), sp.Level, fmtBytes(sp.GrowthBytesPerSec))
	switch {
	case sp.FullSeconds != nil:
		fmt.Fprintf(b, " and reaches spool.max_bytes %s in %s from empty.\n", fmtBytes(float64(sp.MaxBytes)), fmtDuration(*sp.FullSeconds))
	default:
		b.WriteString(" (no spool.max_bytes: until the disk is full).\n")
	}
	b.WriteString("demand, sent: on the wire (compressed, + 256 B a batch); spool growth: event bytes kept per second; full in: from empty to the class's max_bytes.\n")
	tw := tabwriter.NewWriter(b, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "class\taction\tdemand\tsent\tspool growth\tmax_bytes\tfull in\tthen\n")
	for _, c := range p.Classes {
		if c.DemandBytesPerSec <= 0 {
			continue
		}
		fmt.Fprintln(tw, strings.Join(spoolRow(c), "\t"))
	}
	tw.Flush()
	if sp.DropFields {
		fmt.Fprintf(b, "drop_fields at level %d is not modelled (the plan does not know your events' fields): growth is at most, and time to full at least, what is shown.\n", sp.Level)
	}
}

// spoolRow is a class's row of the "Spool at peak" table, as printed.
func spoolRow(c classPlan) []string {
	growth, capacity, full, then := "0", "-", "-", "-"
	if c.SpoolGrowthPerSec > 0 {
		growth = fmtBytes(c.SpoolGrowthPerSec) + "/s"
	}
	if c.SpoolMaxBytes > 0 {
		capacity = fmtBytes(float64(c.SpoolMaxBytes))
	}
	if c.SpoolFullSeconds != nil {
		full, then = fmtDuration(*c.SpoolFullSeconds), overflowWords(c.Overflow)
	}
	return []string{c.Name, c.Action, fmtBits(c.DemandBytesPerSec * 8), fmtBits(c.SentBytesPerSec * 8), growth, capacity, full, then}
}

// overflowWords says what a class's overflow policy does at its cap.
func overflowWords(o string) string {
	switch o {
	case priority.OverflowDropOldest:
		return "drop_oldest: oldest events deleted, counted"
	case priority.OverflowDropNewest:
		return "drop_newest: new events refused, counted"
	}
	return "block: producers get 429"
}

// overCapacityText names the hops over capacity and their utilization.
func (p *plan) overCapacityText() string {
	var parts []string
	for _, name := range p.OverCapacity {
		for _, h := range p.Hops {
			if h.Name == name {
				parts = append(parts, fmt.Sprintf("hop %s at %s of its capacity after batching", h.Name, fmtPct(h.After.Utilization)))
			}
		}
	}
	return strings.Join(parts, ", ")
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "OVER"
}

// fmtBits formats bit/s with an SI prefix: "410 Mbit/s".
func fmtBits(bps float64) string {
	for _, u := range []struct {
		div  float64
		name string
	}{{1e9, "Gbit/s"}, {1e6, "Mbit/s"}, {1e3, "kbit/s"}} {
		if bps >= u.div {
			return strconv.FormatFloat(bps/u.div, 'g', 4, 64) + " " + u.name
		}
	}
	return strconv.FormatFloat(bps, 'g', 4, 64) + " bit/s"
}

// fmtBytes formats a size: "1000 B", "512 KiB".
func fmtBytes(n float64) string {
	switch {
	case n >= 1<<40:
		return strconv.FormatFloat(n/(1<<40), 'g', 4, 64) + " TiB"
	case n >= 1<<30:
		return strconv.FormatFloat(n/(1<<30), 'g', 4, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(n/(1<<20), 'g', 4, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(n/(1<<10), 'g', 4, 64) + " KiB"
	}
	return strconv.FormatFloat(n, 'g', 4, 64) + " B"
}

func fmtRate(r float64) string {
	if r >= 100 {
		return strconv.FormatFloat(math.Round(r), 'f', -1, 64)
	}
	return strconv.FormatFloat(r, 'g', 4, 64)
}

func fmtPct(u float64) string { return strconv.FormatFloat(u*100, 'f', 1, 64) + "%" }

func fmtSeconds(s float64) string {
	return time.Duration(math.Round(s * 1e9)).Round(time.Microsecond).String()
}

// fmtDuration formats a long time in seconds: "3m20s", "27h46m40s".
func fmtDuration(s float64) string {
	if s >= float64(math.MaxInt64)/1e9 {
		return "over 290 years"
	}
	d := time.Duration(math.Round(s * 1e9))
	if d < time.Minute {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func fmtWait(s *float64) string {
	if s == nil {
		return "unbounded"
	}
	return fmtSeconds(*s)
}
