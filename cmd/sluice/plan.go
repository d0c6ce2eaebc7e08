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

	"go.yaml.in/yaml/v3"

	planmodel "github.com/sluicehq/sluice/plan"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// `sluice plan FLOWS.yaml`: the bottleneck model for people. It reads a
// flow inventory (parseInventory: line-numbered errors), parses its
// bandwidths, sizes, samples and classes (evaluate), has package plan
// (planmodel) evaluate the model on it (batch sizing, compression, the
// node's per-batch overhead, utilization, M/D/1 queueing, propagation, the
// spool at peak, the recommended rates), and prints the plan with a class
// configuration that `sluice run --config` accepts, unless a hop is over
// capacity (runPlan). docs/plan.md describes the inventory and the
// formulas.
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
	// Cores is the CPU each class may compress on at the node (GOMAXPROCS),
	// which the compression policy weighs against the link; default 1.
	Cores float64 `yaml:"cores"`
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

// plan is what `sluice plan` prints, and its JSON: the model evaluated on
// the inventory (package plan) with the file it came from and the
// recommended config.
type plan struct {
	File string `json:"file"`
	*planmodel.Plan
	// Config is the recommended `sluice run --config` file; "" when it is
	// withheld (over capacity without --allow-over-capacity).
	Config string `json:"recommended_config"`

	given       map[string]classConfig // the inventory's classes entries, by name
	spoolMaxRaw string                 // the inventory's spool.max_bytes, as given
	withheld    bool                   // Config withheld: over capacity
}

type (
	hopPlan   = planmodel.HopPlan
	flowPlan  = planmodel.FlowPlan
	classPlan = planmodel.ClassPlan
)

// evaluate checks inv, read from file, and evaluates the model on it
// (planmodel.Evaluate). It parses what the model takes as numbers
// (bandwidths, sizes, samples, classes); the model checks the rest. Every
// problem found is returned, in line order, each with its line.
func evaluate(inv inventory, lines map[string]int, file string) (*plan, error) {
	dir := filepath.Dir(file)
	type lineErr struct {
		line int
		err  error
	}
	var errs []lineErr
	said := map[string]bool{} // keys with a parsing error
	report := func(key, msg string) {
		msg = strings.ReplaceAll(msg, "\n", `\n`) // one problem, one line
		// A key the file leaves out is reported at its parent's line.
		for k := key; k != ""; k = k[:max(strings.LastIndexAny(k, ".["), 0)] {
			if l, ok := lines[k]; ok {
				errs = append(errs, lineErr{l, fmt.Errorf("line %d: %s: %s", l, key, msg)})
				return
			}
		}
		errs = append(errs, lineErr{0, fmt.Errorf("%s: %s", key, msg)})
	}
	bad := func(key string, format string, args ...any) {
		said[key] = true
		report(key, fmt.Sprintf(format, args...))
	}
	addErr := func(line int, err error) { errs = append(errs, lineErr{line, err}) }

	in := planmodel.Inventory{Headroom: inv.Headroom, Link: inv.Link, Cores: inv.Cores}
	for i, h := range inv.Hops {
		bw, err := parseBandwidth(h.Bandwidth)
		if err != nil {
			bad(fmt.Sprintf("hops[%d].bandwidth", i), "%v", err)
		}
		in.Hops = append(in.Hops, planmodel.Hop{Name: h.Name, BitsPerSec: bw, PacketsPerSec: h.PacketsPerSec,
			RTT: h.RTT, LatencyBudget: h.LatencyBudget})
	}
	// The classes as the config file builds them for the link: rates given
	// as a share of it are checked against it.
	var linkBps int64
	if link := planmodel.LinkHop(in.Hops, inv.Link); link >= 0 {
		linkBps = in.Hops[link].LinkBytesPerSec()
	}
	classes, given, replaced := planClasses(inv.Classes, linkBps, bad, addErr)
	in.Classes = classes
	if ms := inv.Spool.MaxBytes; ms != "" {
		var err error
		if in.SpoolMaxBytes, err = parseSize(ms); err != nil {
			bad("spool.max_bytes", "%v", err)
		}
	}
	brokenClass := map[string]bool{} // flows of a class whose entry has its own error
	for i, f := range inv.Flows {
		k := fmt.Sprintf("flows[%d]", i)
		fl := planmodel.Flow{Name: f.Name, Class: f.Class, EventsPerSec: f.EventsPerSec, Retry: f.Retry, FanOut: f.FanOut,
			CompressionRatio: f.CompressionRatio, Hops: f.Hops, LatencyBudget: f.LatencyBudget}
		if _, ok := given[f.Class]; ok && !slices.ContainsFunc(classes, func(c priority.Class) bool { return c.Name == f.Class }) {
			brokenClass[k+".class"] = true
		}
		switch {
		case f.CompressionRatio != 0 && f.Sample != "":
			bad(k+".sample", "give compression_ratio or sample, not both")
		case f.Sample != "":
			path := f.Sample
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			if data, err := readSample(path); err != nil {
				bad(k+".sample", "%v", err)
			} else {
				fl.Sample = sampleLines(data)
			}
		}
		for _, sz := range []struct {
			key, s string
			v      *float64
		}{{"mean", f.Payload.Mean, &fl.MeanBytes}, {"p99", f.Payload.P99, &fl.P99Bytes}} {
			if sz.s == "" {
				continue // measured on the sample, or missing: the model says which
			}
			n, err := parseSize(sz.s)
			if err == nil && n <= 0 {
				err = fmt.Errorf("%q: want > 0", sz.s)
			}
			if err != nil {
				bad(k+".payload", "%s: %v", sz.key, err)
				break
			}
			*sz.v = float64(n)
		}
		in.Flows = append(in.Flows, fl)
	}

	mp, err := planmodel.Evaluate(in)
	if err != nil {
		for _, e := range splitErrors(err) {
			ie, ok := errors.AsType[*planmodel.InputError](e)
			if !ok {
				return nil, err
			}
			if coveredKey(said, ie.Path) || brokenClass[ie.Path] {
				continue // reported as parsed, or at the class's entry
			}
			msg := ie.Msg
			if i, ok := flowIndex(ie.Path, ".class"); ok {
				var names []string
				for _, c := range classes {
					names = append(names, c.Name)
				}
				msg = fmt.Sprintf("%q: %swant one of %s", inv.Flows[i].Class, hintFor(inv.Flows[i].Class, names...), strings.Join(names, ", "))
			}
			report(ie.Path, msg)
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b lineErr) int { return cmp.Compare(a.line, b.line) })
		all := make([]error, len(errs))
		for i, e := range errs {
			all[i] = e.err
		}
		return nil, errors.Join(all...)
	}
	p := &plan{File: file, Plan: mp, given: given, spoolMaxRaw: inv.Spool.MaxBytes}
	var warnings []string
	for _, r := range replaced {
		warnings = append(warnings, r+" in the inventory: replaced by the plan's (rate and ceil are what it recommends)")
	}
	p.Warnings = append(warnings, p.Warnings...)
	if p.Config, err = p.recommendedConfig(); err != nil {
		return nil, err
	}
	return p, nil
}

// coveredKey reports whether key, or a key it is part of, is in said.
func coveredKey(said map[string]bool, key string) bool {
	for k := key; k != ""; k = k[:max(strings.LastIndexAny(k, ".["), 0)] {
		if said[k] {
			return true
		}
	}
	return false
}

// flowIndex returns i when key is "flows[i]" + suffix.
func flowIndex(key, suffix string) (int, bool) {
	rest, ok := strings.CutPrefix(key, "flows[")
	if !ok {
		return 0, false
	}
	num, tail, ok := strings.Cut(rest, "]")
	if !ok || tail != suffix {
		return 0, false
	}
	i, err := strconv.Atoi(num)
	return i, err == nil
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

// recommendedConfig renders the recommended classes as a `sluice run
// --config` file: rate and ceil in bytes/s (exact integers: Validate's sums
// hold to the byte), and every other key the inventory gave the class. A
// default class the inventory leaves alone keeps the default's batch, plan
// and fields; an added class is defined by its keys alone, as in the
// inventory.
func (p *plan) recommendedConfig() (string, error) {
	linkMbit := p.LinkBitsPerSec / 1e6
	var b strings.Builder
	fmt.Fprintf(&b, "# sluice run --config: recommended by `sluice plan %s`.\n", filepath.Base(cmp.Or(p.File, "FLOWS.yaml")))
	fmt.Fprintf(&b, "# Link %s (%s), target %s at headroom %v. Rates and ceilings are\n", p.Link, fmtBits(p.LinkBitsPerSec), fmtBits(float64(p.TargetBytesPerSec)*8), p.Headroom)
	fmt.Fprintf(&b, "# bytes/s on the wire (compressed batches + %d B each), from peak demand.\n", p.OverheadBytes)
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
	CompMin     *string        `yaml:"compression_min,omitempty"`
	CompMax     *string        `yaml:"compression_max,omitempty"`
	Dictionary  *string        `yaml:"dictionary,omitempty"`
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
		Weight: cc.Weight, MaxAge: cc.MaxAge, Expire: cc.Expire, Compression: cc.Compression,
		CompMin: cc.CompressionMin, CompMax: cc.CompressionMax, Dictionary: cc.Dictionary, Overflow: cc.Overflow,
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
	cores := "cores"
	if p.Cores == 1 {
		cores = "core"
	}
	fmt.Fprintf(&b, "%s: link %s at %s, headroom %v → target %s; batches ≤ %s of air time at the target (%s under compression auto, on %v %s)\n\n",
		p.File, p.Link, fmtBits(p.LinkBitsPerSec), p.Headroom, fmtBits(float64(p.TargetBytesPerSec)*8), p.BatchAirtime, p.BulkAirtime, p.Cores, cores)
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
	b.WriteString("Flows. zstd: the level the node compresses at (auto: its policy's choice, and what bounds it); ratio: at that level; batch: events and compressed bytes per batch; latency: batch formation + queueing + service + rtt/2 on each hop.\n")
	tw = tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "flow\tclass\tevents/s\tpayload mean/p99\t×retry×fan-out\tzstd\tratio\tbatch events\twire\tbefore\tafter\tlatency\tbudget")
	for _, f := range p.Flows {
		budget := "-"
		if f.WithinBudget != nil {
			budget = fmtSeconds(f.LatencyBudgetSeconds) + " " + okWord(*f.WithinBudget)
		}
		level := f.CompressionLevel
		if f.CompressionAuto {
			level += " (auto, " + f.Bottleneck + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s / %s\t%s\t%s\t%s (%s)\t%s\t%s\t%s %s p/s\t%s %s p/s\t%s\t%s\n",
			f.Name, f.Class, fmtRate(f.EventsPerSec), fmtBytes(f.MeanBytes), fmtBytes(f.P99Bytes),
			strconv.FormatFloat(f.Amplification, 'g', 4, 64), level, strconv.FormatFloat(f.CompressionRatio, 'f', 2, 64), f.RatioSource,
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
	fmt.Fprintf(b, "demand, sent: on the wire (compressed, + %d B a batch); spool growth: event bytes kept per second; full in: from empty to the class's max_bytes.\n", p.OverheadBytes)
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
func fmtBits(bps float64) string { return planmodel.FormatBits(bps) }

// fmtBytes formats a size: "1000 B", "512 KiB".
func fmtBytes(n float64) string { return planmodel.FormatBytes(n) }

func fmtRate(r float64) string { return planmodel.FormatRate(r) }

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
