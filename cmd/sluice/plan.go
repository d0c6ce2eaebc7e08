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
// per-message cost, utilization, M/D/1 queueing) per hop, and recommends a
// class configuration that `sluice run --config` accepts. docs/plan.md
// describes the inventory and the formulas.
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
}

type hopSpec struct {
	Name string `yaml:"name"`
	// Bandwidth in bit/s with a unit: 100Mbit, 1Gbit, 12.5MB/s.
	Bandwidth string `yaml:"bandwidth"`
	// PacketsPerSec is the hop's packet (message) capacity; 0 = unlimited.
	PacketsPerSec float64 `yaml:"packets_per_sec"`
	// LatencyBudget bounds the hop's queueing plus service time; 0 = none.
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

// runPlan is `sluice plan [--json] [--write-config FILE] FLOWS.yaml`.
func runPlan(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the plan as JSON (the recommended config is its recommended_config string)")
	out := fs.String("write-config", "", "also write the recommended config to `file`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sluice plan [flags] FLOWS.yaml\n\nEvaluates the bottleneck model on a flow inventory (docs/plan.md).\n\n")
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
	if *out != "" {
		if err := os.WriteFile(*out, []byte(p.Config), 0o644); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	return p.writeText(stdout)
}

// planFile reads, checks and evaluates an inventory file.
func planFile(path string) (*plan, error) {
	data, err := os.ReadFile(path)
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

// parseInventory decodes strictly: unknown keys, wrong types and a second
// document are errors with their line. lines maps key paths
// ("flows[1].retry") to lines.
func parseInventory(data []byte) (inventory, map[string]int, error) {
	var inv inventory
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&inv); err != nil {
		if errors.Is(err, io.EOF) {
			return inv, nil, errors.New("empty inventory: want hops and flows")
		}
		if te, ok := errors.AsType[*yaml.TypeError](err); ok {
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				if j := strings.Index(m, " in type main."); j >= 0 {
					m = m[:j]
				}
				msgs[i] = strings.ReplaceAll(m, "\n", `\n`) // a value quoted in the message stays on its line
			}
			return inv, nil, errors.New(strings.Join(msgs, "; "))
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
	lines := map[string]int{}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) == 1 {
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
	Hops     []hopPlan   `json:"hops"`
	Flows    []flowPlan  `json:"flows"`
	Classes  []classPlan `json:"classes"`
	Warnings []string    `json:"warnings"`
	// Config is the recommended `sluice run --config` file.
	Config string `json:"recommended_config"`

	given map[string]classConfig // the inventory's classes entries, by name
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
	// LatencyBudgetSeconds is the hop's budget (0 = none) and WithinBudget
	// whether After's queue wait plus service time fits in it.
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
	// M/D/1 wait and this flow's batch service time; null when a hop is
	// over capacity.
	LatencySeconds       *float64 `json:"latency_seconds"`
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
		hp.capacity = shaper.Capacity{BitsPerSec: bw, MsgsPerSec: max(h.PacketsPerSec, 0)}
		hp.CapacityBitsPerSec, hp.CapacityPacketsPerSec = hp.capacity.BitsPerSec, hp.capacity.MsgsPerSec
		hp.LatencyBudgetSeconds = h.LatencyBudget.Seconds()
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
		Warnings:   []string{}, given: given,
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
			bad(k+".class", "%q: want one of %s", f.Class, strings.Join(classNames, ", "))
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
			ok := hp.After.QueueWaitSeconds != nil && *hp.After.QueueWaitSeconds+hp.After.ServiceSeconds <= hp.LatencyBudgetSeconds
			hp.WithinBudget = &ok
		}
	}
	// Per flow: formation + Σ (wait + own service) against the budget.
	for i := range p.Flows {
		fp := &p.Flows[i]
		_, _, linger := classOf[fp.Class].Batch.Limits()
		lat := min(linger.Seconds(), (fp.EventsPerBatch-1)/fp.EventsPerSec)
		cost := shaper.MsgCost(fp.BatchWireBytes, shaper.DefaultOverheadBytes)
		stable := true
		for _, h := range fp.Hops {
			w := wait[h]
			if w == nil {
				stable = false
				break
			}
			lat += *w + shaper.ServiceTime(cost, hops[hopIndex[h]].capacity)
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
	}
	p.Hops = hops

	// The recommended classes: guarantees in priority order (critical
	// first) out of the target, so that Σ rate ≤ target ≤ link; non-critical
	// ceilings at the link; critical ceilings at what the others'
	// guarantees leave (the most priority.Validate allows), which stays
	// above 0: with a critical class, the others' guarantees stop 1 B/s
	// short of the link.
	demand, demandMsgs := map[string]float64{}, map[string]float64{}
	for _, fp := range p.Flows {
		if slices.Contains(fp.Hops, p.Link) {
			demand[fp.Class] += fp.after.BytesPerSec
			demandMsgs[fp.Class] += fp.after.MsgsPerSec
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
		cp := classPlan{Name: c.Name, DemandBytesPerSec: demand[c.Name], RateBytesPerSec: rates[c.Name], CeilBytesPerSec: linkBps}
		if c.Critical {
			cp.CeilBytesPerSec = linkBps - others
		}
		c.Rate.BytesPerSec, c.Ceil.BytesPerSec = cp.RateBytesPerSec, cp.CeilBytesPerSec
		p.Classes = append(p.Classes, cp)
	}
	if err := priority.Validate(final, priority.Rate{BytesPerSec: linkBps}); err != nil {
		return nil, fmt.Errorf("classes: the recommended rates do not validate (a bug in sluice plan): %w", err)
	}
	var err error
	if p.Config, err = p.recommendedConfig(linkMbit); err != nil {
		return nil, err
	}
	return p, nil
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
	built, err := buildClasses(check, linkBps)
	if err != nil {
		classLine := func(msg string) (int, string) {
			for i := len(cfg) - 1; i >= 0; i-- { // the last: a duplicate's second entry
				if cfg[i].Name != "" && strings.Contains(msg, fmt.Sprintf("class %q", cfg[i].Name)) {
					return cfg[i].line, fmt.Sprintf("classes[%d]", i)
				}
			}
			return cfg[0].line, "classes"
		}
		var parts []error
		if strings.HasPrefix(err.Error(), "line ") { // per entry: "line N: classes[i] (name): …"
			parts = splitErrors(err)
		} else { // priority.Validate's, wrapped as "classes: …"
			parts = splitErrors(errors.Unwrap(err))
		}
		for _, e := range parts {
			msg := strings.ReplaceAll(e.Error(), "\n", `\n`) // a name may hold one
			var line int
			if _, serr := fmt.Sscanf(msg, "line %d:", &line); serr == nil {
				addErr(line, errors.New(msg))
				continue
			}
			line, key := classLine(msg)
			addErr(line, fmt.Errorf("line %d: %s: %s", line, key, msg))
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
	fmt.Fprintf(&b, "link_mbit: %s\n", strconv.FormatFloat(linkMbit, 'f', -1, 64))
	fmt.Fprintf(&b, "headroom: %s\n", strconv.FormatFloat(p.Headroom, 'f', -1, 64))
	b.WriteString("classes:\n")
	for _, c := range p.Classes {
		fmt.Fprintf(&b, "  - name: %s\n", configScalar(c.Name))
		fmt.Fprintf(&b, "    rate: %d # %s; peak demand %s\n", c.RateBytesPerSec, fmtBits(float64(c.RateBytesPerSec)*8), fmtBits(c.DemandBytesPerSec*8))
		fmt.Fprintf(&b, "    ceil: %d # %s\n", c.CeilBytesPerSec, fmtBits(float64(c.CeilBytesPerSec)*8))
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
		Weight: cc.Weight, MaxAge: cc.MaxAge, Compression: cc.Compression, Overflow: cc.Overflow,
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
	fmt.Fprintln(tw, "#\thop\tcapacity\tbefore bit/s\tpkt/s\tutil\tafter bit/s\tpkt/s\tutil\tverdict\tqueue M/D/1\tbudget")
	for _, h := range p.Hops {
		capacity := fmtBits(h.CapacityBitsPerSec)
		if h.CapacityPacketsPerSec > 0 {
			capacity += " " + fmtRate(h.CapacityPacketsPerSec) + " p/s"
		}
		budget := "-"
		if h.WithinBudget != nil {
			budget = fmtSeconds(h.LatencyBudgetSeconds) + " " + okWord(*h.WithinBudget)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Rank, h.Name, capacity,
			fmtBits(h.Before.BitsPerSec), fmtRate(h.Before.PacketsPerSec), fmtPct(h.Before.Utilization),
			fmtBits(h.After.BitsPerSec), fmtRate(h.After.PacketsPerSec), fmtPct(h.After.Utilization),
			h.After.Verdict, fmtWait(h.After.QueueWaitSeconds), budget)
	}
	tw.Flush()
	fmt.Fprintln(&b)
	b.WriteString("Flows. batch: events and compressed bytes per batch; latency: batch formation + queueing + service on each hop.\n")
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
	for _, warn := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	fmt.Fprintf(&b, "\nRecommended config (sluice run --config FILE; --write-config writes it):\n\n%s", p.Config)
	_, err := w.Write(b.Bytes())
	return err
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

func fmtWait(s *float64) string {
	if s == nil {
		return "unbounded"
	}
	return fmtSeconds(*s)
}
