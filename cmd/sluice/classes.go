package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/priority"
)

// classConfig is one entry of the config file's "classes": a traffic
// class. An entry named like a default class (critical, ingest,
// replication, backfill) starts from that default and changes only the
// keys it gives; any other name starts from the zero class (no rate, no
// ceiling, priority 7, no field rules, plan none at every level). The
// list replaces the defaults: a default class not listed is not served.
type classConfig struct {
	Name     string `yaml:"name"`
	Priority *int   `yaml:"priority"`
	Critical *bool  `yaml:"critical"`
	// Rate and Ceil are bytes per second on the wire: "2Mbit", "250KB/s",
	// "1MiB/s", a plain number of bytes/s, or "10%" of link_mbit (0
	// without a configured link).
	Rate *string `yaml:"rate"`
	Ceil *string `yaml:"ceil"`
	// RateMsgs and CeilMsgs bound batches per second; 0 = no bound.
	RateMsgs *int64 `yaml:"rate_msgs"`
	CeilMsgs *int64 `yaml:"ceil_msgs"`
	Weight   *int   `yaml:"weight"`
	// MaxAge: events older than this expire when their batch is cut, as
	// Expire says; 0 = never (the default of every class).
	MaxAge *time.Duration `yaml:"max_age"`
	// Expire: demote (the default: sent after the class's newer events,
	// labelled Sluice-Stale) or drop (not sent, counted).
	Expire *string      `yaml:"expire"`
	Batch  *batchConfig `yaml:"batch"`
	// Compression: auto (the default of every class: the level chosen
	// from the link and the cores, between CompressionMin and
	// CompressionMax), or a fixed level: fastest, default, better or best.
	Compression *string `yaml:"compression"`
	// CompressionMin and CompressionMax bound auto: fastest, default,
	// better or best (defaults fastest and best).
	CompressionMin *string `yaml:"compression_min"`
	CompressionMax *string `yaml:"compression_max"`
	// Dictionary: auto (the default: train a zstd dictionary on the
	// class's events, use it where it shrinks batches by 5%), on (use
	// it whenever it shrinks them) or off.
	Dictionary *string `yaml:"dictionary"`
	// Overflow: block, drop_oldest or drop_newest.
	Overflow *string `yaml:"overflow"`
	// MaxBytes caps the class's spool: "10GiB", or bytes; 0 = only the
	// total cap.
	MaxBytes *string        `yaml:"max_bytes"`
	Fields   *[]fieldConfig `yaml:"fields"`
	// Plan is the action at levels 0, 1, 2, 3: none, drop_fields:N (drop
	// fields of priority below N), throttle, defer.
	Plan *[]string `yaml:"plan"`

	line int // of the entry in the file, for errors (set by parseConfig)
}

type batchConfig struct {
	MaxEvents *int           `yaml:"max_events"`
	MaxBytes  *string        `yaml:"max_bytes"`
	Linger    *time.Duration `yaml:"linger"`
}

type fieldConfig struct {
	Path     string `yaml:"path"`
	Priority int    `yaml:"priority"`
}

// buildClasses turns the file's classes into the node's, over the defaults
// for a link of linkBps bytes/s. No entries: the defaults. Every problem is
// reported, each naming its entry and line, in the config's words: a value
// out of range, a name that looks like a misspelt default class, two
// entries of one name, rates that do not fit the link.
func buildClasses(cfg []classConfig, linkBps int64) ([]priority.Class, error) {
	return buildClassList(cfg, linkBps, true)
}

// dictModes returns the dictionary mode of each class entry that sets
// one (buildClasses has checked them).
func dictModes(cfg []classConfig) map[string]aggregator.DictMode {
	m := make(map[string]aggregator.DictMode)
	for _, cc := range cfg {
		if cc.Dictionary != nil {
			m[cc.Name], _ = aggregator.ParseDictMode(*cc.Dictionary)
		}
	}
	return m
}

// buildClassList is buildClasses. replaces says whether the list replaces
// the defaults (the config file's) or adds to them (a plan inventory's),
// for what a misspelt default class's name would do.
func buildClassList(cfg []classConfig, linkBps int64, replaces bool) ([]priority.Class, error) {
	defaults := priority.Defaults(linkBps)
	if len(cfg) == 0 {
		return defaults, nil
	}
	var errs []error
	entryErr := func(i int, err error) {
		errs = append(errs, fmt.Errorf("line %d: classes[%d] (%s): %w", cfg[i].line, i, cfg[i].Name, err))
	}
	out := make([]priority.Class, 0, len(cfg))
	for i, cc := range cfg {
		c, err := cc.class(defaults, linkBps)
		if err != nil {
			for _, e := range splitErrors(err) {
				entryErr(i, e)
			}
			continue
		}
		out = append(out, c)
	}
	listed := map[string]int{}
	for i, cc := range cfg {
		if j, dup := listed[cc.Name]; dup && cc.Name != "" {
			entryErr(i, fmt.Errorf("the same name as classes[%d] (line %d): a name may be listed once", j, cfg[j].line))
			continue
		}
		listed[cc.Name] = i
	}
	for i, cc := range cfg {
		if err := misspeltDefault(cc.Name, listed, replaces); err != nil {
			entryErr(i, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := checkClassRates(out, cfg, linkBps); err != nil {
		return nil, err
	}
	var lr priority.Rate
	if linkBps > 0 {
		lr.BytesPerSec = linkBps
	}
	if err := priority.Validate(out, lr); err != nil {
		// What checkClassRates and class() do not catch, in the words of
		// priority, without its package prefix.
		var plain []error
		for _, e := range splitErrors(err) {
			msg := strings.TrimPrefix(e.Error(), priority.ErrInvalidClass.Error()+": ")
			plain = append(plain, errors.New(strings.TrimPrefix(msg, priority.ErrInvalidPath.Error()+": ")))
		}
		return nil, fmt.Errorf("classes: %w", errors.Join(plain...))
	}
	return out, nil
}

// misspeltDefault reports a name that is not a default class's but is one
// or two letters from a default class the list leaves out: "critcal"
// without "critical". Such an entry starts from the zero class (no
// guarantee, priority 7) instead of changing the default it was meant to
// change, and in a list that replaces the defaults that default is not
// served at all, so it is refused rather than guessed at.
func misspeltDefault(name string, listed map[string]int, replaces bool) error {
	var missing []string
	for _, d := range priority.Defaults(0) {
		if d.Name == name {
			return nil
		}
		if _, ok := listed[d.Name]; !ok {
			missing = append(missing, d.Name)
		}
	}
	m := didYouMean(name, missing)
	switch {
	case m == "":
		return nil
	case replaces:
		return fmt.Errorf("did you mean %s? %q is not a default class: it would start a new class with no guarantee at priority 7, and %s, not listed, would not be served", m, name, m)
	}
	return fmt.Errorf("did you mean %s? %q is not a default class: it would add a new class with no guarantee at priority 7 and leave %s as it is", m, name, m)
}

// checkClassRates checks the classes' rates and ceilings against each
// other and the link, as priority.Validate does, in the config's words and
// at each entry's line. linkBps ≤ 0: no link, only ceil ≥ rate.
func checkClassRates(classes []priority.Class, cfg []classConfig, linkBps int64) error {
	var errs []error
	at := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("line %d: classes[%d] (%s): %s", cfg[i].line, i, cfg[i].Name, fmt.Sprintf(format, args...)))
	}
	link := fmt.Sprintf("the link (link_mbit %s, %dB/s)", strconv.FormatFloat(float64(linkBps)*8/1e6, 'f', -1, 64), linkBps)
	var sum, others int64
	for i, c := range classes {
		r, l := c.Rate, c.Ceil
		if l.BytesPerSec > 0 && l.BytesPerSec < r.BytesPerSec {
			at(i, "ceil %s is below rate %s: the most a class may send cannot be less than its guarantee", fmtBps(l.BytesPerSec), fmtBps(r.BytesPerSec))
		}
		if l.MsgsPerSec > 0 && l.MsgsPerSec < r.MsgsPerSec {
			at(i, "ceil_msgs %d is below rate_msgs %d batches/s", l.MsgsPerSec, r.MsgsPerSec)
		}
		if linkBps > 0 && l.BytesPerSec > linkBps {
			at(i, "ceil %s is above %s", fmtBps(l.BytesPerSec), link)
		}
		if linkBps > 0 && l.BytesPerSec == 0 && r.BytesPerSec > linkBps {
			at(i, "rate %s is above %s", fmtBps(r.BytesPerSec), link)
		}
		sum += r.BytesPerSec
		if !c.Critical {
			others += r.BytesPerSec
		}
	}
	for i, c := range classes {
		if !c.Critical || linkBps <= 0 || others == 0 {
			continue
		}
		switch ceil := c.Ceil.BytesPerSec; {
		case ceil == 0:
			at(i, "a critical class needs a ceil (at most %s), so that strict priority cannot starve the other classes' guarantees (%s)", fmtBps(max(0, linkBps-others)), fmtBps(others))
		case ceil+others > linkBps:
			at(i, "ceil %s plus the other classes' rates %s is above %s: a critical ceil may be at most %s", fmtBps(ceil), fmtBps(others), link, fmtBps(max(0, linkBps-others)))
		}
	}
	if linkBps > 0 && sum > linkBps {
		errs = append(errs, fmt.Errorf("classes: the rates add up to %s, above %s: lower them or raise link_mbit", fmtBps(sum), link))
	}
	return errors.Join(errs...)
}

// fmtBps formats bytes/s as the config spells them, with bit/s for people:
// "125000B/s (1 Mbit/s)".
func fmtBps(n int64) string {
	return strconv.FormatInt(n, 10) + "B/s (" + fmtBits(float64(n)*8) + ")"
}

// class builds the entry over the default of its name, if any. Every
// problem of the entry is returned (errors.Join), each naming its key.
func (cc classConfig) class(defaults []priority.Class, linkBps int64) (priority.Class, error) {
	c := priority.Class{Name: cc.Name, Priority: priority.MaxPriority}
	for _, d := range defaults {
		if d.Name == cc.Name {
			c = d
		}
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cc.Name == "" {
		bad("name is empty")
	}
	if v := cc.Priority; v != nil {
		if *v < 0 || *v > priority.MaxPriority {
			bad("priority: %d: want 0 (served first) to %d", *v, priority.MaxPriority)
		}
		c.Priority = *v
	}
	if v := cc.Weight; v != nil {
		if *v < 0 {
			bad("weight: %d: want ≥ 1 (0 counts as 1)", *v)
		}
		c.Weight = *v
	}
	if cc.Critical != nil {
		c.Critical = *cc.Critical
	}
	var err error
	if cc.Rate != nil {
		if c.Rate.BytesPerSec, err = parseRate(*cc.Rate, linkBps); err != nil {
			bad("rate: %w", err)
		}
	}
	if cc.Ceil != nil {
		if c.Ceil.BytesPerSec, err = parseRate(*cc.Ceil, linkBps); err != nil {
			bad("ceil: %w", err)
		}
	}
	for _, m := range []struct {
		key string
		v   *int64
		dst *int64
	}{{"rate_msgs", cc.RateMsgs, &c.Rate.MsgsPerSec}, {"ceil_msgs", cc.CeilMsgs, &c.Ceil.MsgsPerSec}} {
		if m.v == nil {
			continue
		}
		if *m.v < 0 {
			bad("%s: %d: want batches/s ≥ 0 (0 = no bound)", m.key, *m.v)
		}
		*m.dst = *m.v
	}
	if cc.MaxAge != nil {
		if *cc.MaxAge < 0 {
			bad("max_age: %v: want a duration ≥ 0 (0s = never)", *cc.MaxAge)
		}
		c.MaxAge = *cc.MaxAge
	}
	if cc.Expire != nil {
		switch *cc.Expire {
		case priority.ExpireDemote, priority.ExpireDrop:
			c.Expire = *cc.Expire
		default:
			bad("expire: %q: %swant demote (send after newer events, labelled stale) or drop (count, do not send)",
				*cc.Expire, hintFor(*cc.Expire, priority.ExpireDemote, priority.ExpireDrop))
		}
	}
	if b := cc.Batch; b != nil {
		if v := b.MaxEvents; v != nil {
			if *v < 0 {
				bad("batch.max_events: %d: want ≥ 1 (0 = the default, %d)", *v, priority.DefaultBatchMaxEvents)
			}
			c.Batch.MaxEvents = *v
		}
		if b.MaxBytes != nil {
			switch n, err := parseSize(*b.MaxBytes); {
			case err != nil:
				bad("batch.max_bytes: %w", err)
			case n > math.MaxInt32:
				bad("batch.max_bytes: %d bytes is too large", n)
			default:
				c.Batch.MaxBytes = int(n)
			}
		}
		if v := b.Linger; v != nil {
			if *v < 0 {
				bad("batch.linger: %v: want a duration ≥ 0 (0s = send at once)", *v)
			}
			c.Batch.Linger = *v
		}
	}
	if cc.Compression != nil {
		if c.Compression, err = oneOf("compression", *cc.Compression, priority.CompressionAuto, priority.CompressionFastest,
			priority.CompressionDefault, priority.CompressionBetter, priority.CompressionBest); err != nil {
			errs = append(errs, err)
		}
	}
	for _, b := range []struct {
		key string
		v   *string
		dst *string
	}{{"compression_min", cc.CompressionMin, &c.CompressionMin}, {"compression_max", cc.CompressionMax, &c.CompressionMax}} {
		if b.v == nil {
			continue
		}
		if *b.dst, err = oneOf(b.key, *b.v, priority.CompressionFastest,
			priority.CompressionDefault, priority.CompressionBetter, priority.CompressionBest); err != nil {
			errs = append(errs, err)
		}
	}
	if cc.Dictionary != nil {
		if _, err = oneOf("dictionary", *cc.Dictionary, string(aggregator.DictAuto),
			string(aggregator.DictOn), string(aggregator.DictOff)); err != nil {
			errs = append(errs, err)
		}
	}
	if cc.Overflow != nil {
		if c.Overflow, err = oneOf("overflow", *cc.Overflow, priority.OverflowBlock,
			priority.OverflowDropOldest, priority.OverflowDropNewest); err != nil {
			errs = append(errs, err)
		}
	}
	if cc.MaxBytes != nil {
		if c.MaxBytes, err = parseSize(*cc.MaxBytes); err != nil {
			bad("max_bytes: %w", err)
		}
	}
	if cc.Fields != nil {
		c.Fields = make([]priority.FieldRule, len(*cc.Fields))
		for i, f := range *cc.Fields {
			if err := priority.ValidatePath(f.Path); err != nil {
				msg := strings.TrimPrefix(err.Error(), priority.ErrInvalidPath.Error()+": ")
				if f.Path == "" {
					msg = "empty: want a dot-separated path such as context.page or context.*"
				}
				bad("fields[%d].path: %s", i, msg)
			}
			c.Fields[i] = priority.FieldRule{Path: f.Path, Priority: f.Priority}
		}
	}
	if cc.Plan != nil {
		if c.Plan, err = parsePlan(*cc.Plan); err != nil {
			bad("plan: %w", err)
		}
	}
	return c, errors.Join(errs...)
}

// hintFor is "did you mean X? " when v looks like a misspelt one of want,
// else "".
func hintFor(v string, want ...string) string {
	if m := didYouMean(v, want); m != "" {
		return "did you mean " + m + "? "
	}
	return ""
}

// parsePlan parses the four actions of a plan.
func parsePlan(s []string) ([priority.Levels]priority.Action, error) {
	var p [priority.Levels]priority.Action
	if len(s) != priority.Levels {
		return p, fmt.Errorf("%d actions; want one per level 0..3", len(s))
	}
	for i, a := range s {
		name, arg, hasArg := strings.Cut(strings.TrimSpace(a), ":")
		switch {
		case name == "none" && !hasArg:
			p[i] = priority.Action{Kind: priority.ActionNone}
		case name == "throttle" && !hasArg:
			p[i] = priority.Action{Kind: priority.ActionThrottle}
		case name == "defer" && !hasArg:
			p[i] = priority.Action{Kind: priority.ActionDefer}
		case name == "drop_fields" && hasArg:
			n, err := strconv.Atoi(arg)
			if err != nil {
				return p, fmt.Errorf("level %d: %q: want drop_fields:N with N an integer field priority", i, a)
			}
			p[i] = priority.Action{Kind: priority.ActionDropFields, MinFieldPriority: n}
		default:
			return p, fmt.Errorf("level %d: %q: %swant none, drop_fields:N, throttle or defer", i, a, hintFor(name, "none", "drop_fields", "throttle", "defer"))
		}
	}
	return p, nil
}

// planString formats a plan as the config file spells it.
func planString(p [priority.Levels]priority.Action) []string {
	out := make([]string, len(p))
	for i, a := range p {
		out[i] = a.Kind.String()
		if a.Kind == priority.ActionDropFields {
			out[i] += ":" + strconv.Itoa(a.MinFieldPriority)
		}
	}
	return out
}

// rateUnits are parseRate's units and their bytes/s. Each may end in
// "/s".
var rateUnits = map[string]float64{
	"B":   1,
	"bit": 1.0 / 8, "kbit": 1e3 / 8, "Kbit": 1e3 / 8, "Mbit": 1e6 / 8, "Gbit": 1e9 / 8,
	"KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
}

// rateUnitList is rateUnits for people, in the order they are listed.
var rateUnitList = []string{"bit", "kbit", "Mbit", "Gbit", "B", "KB", "MB", "GB", "KiB", "MiB", "GiB"}

// parseRate parses a rate in bytes per second: "2Mbit" (or "2Mbit/s",
// "500kbit", "1Gbit"), "250KB/s", "1MiB/s", "1500B/s", or "10%" of
// linkBps. A number needs its unit: "35" is refused (35 bytes/s, or a
// forgotten "%"?), except 0, which is 0 in every unit.
func parseRate(s string, linkBps int64) (int64, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		p = strings.TrimSpace(p)
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return 0, fmt.Errorf("%q: want a percentage of the link in [0, 100]", s)
		}
		if n, err := strconv.Atoi(p); err == nil {
			return linkBps / 100 * int64(n), nil // as priority.Defaults computes it
		}
		return int64(f / 100 * float64(linkBps)), nil
	}
	num, unit := splitUnit(strings.TrimSuffix(s, "/s"))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("%q: want a rate such as 2Mbit, 250KB/s or 10%% (of link_mbit)", s)
	}
	if unit == "" {
		if f == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("%q: a rate needs a unit: %s%% of link_mbit, or %sB/s, %sKB/s, %sMbit… (units: %%, %s; each may end in /s)",
			s, num, num, num, num, strings.Join(rateUnitList, ", "))
	}
	mult := rateUnits[unit]
	if mult == 0 {
		hint := ""
		if m := unitHint(unit); m != "" {
			hint = "did you mean " + m + "? "
		}
		return 0, fmt.Errorf("%q: unknown unit %q: %swant %%, %s (each may end in /s)", s, unit, hint, strings.Join(rateUnitList, ", "))
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return int64(v), nil
}

// unitHint suggests a rate unit for one parseRate does not know: "Mbit"
// for "Mbps" (bits per second), "MB" for "MBps", or a unit a letter or two
// away.
func unitHint(unit string) string {
	if p, ok := strings.CutSuffix(unit, "bps"); ok {
		if _, known := rateUnits[p+"bit"]; known || p == "" {
			return p + "bit"
		}
	}
	if p, ok := strings.CutSuffix(unit, "Bps"); ok {
		if _, known := rateUnits[p+"B"]; known {
			return p + "B/s"
		}
	}
	return didYouMean(unit, rateUnitList)
}

// oneOf checks that v, the value of key, is one of want ("" is also
// accepted: the default).
func oneOf(key, v string, want ...string) (string, error) {
	if v == "" || slices.Contains(want, v) {
		return v, nil
	}
	return "", fmt.Errorf("%s: %q: %swant %s or %s", key, v, hintFor(v, want...), strings.Join(want[:len(want)-1], ", "), want[len(want)-1])
}

// didYouMean returns the candidate s is most likely a misspelling of, or
// "": the nearest by editDistance, ignoring case, if it is within a third
// of the candidate's length (1 or 2 edits) and shorter than either word.
// The first candidate wins a tie.
func didYouMean(s string, candidates []string) string {
	best, bestD := "", math.MaxInt
	ls := strings.ToLower(s)
	for _, c := range candidates {
		if c == s {
			return ""
		}
		n := utf8.RuneCountInString(c)
		d := editDistance(ls, strings.ToLower(c))
		if d > min(max((n-1)/3, 1), 2) || d >= n || d >= utf8.RuneCountInString(s) && d > 0 {
			continue
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b,
// in runes: insertions, deletions, substitutions and swaps of two
// adjacent runes cost 1 each ("critcal" → "critical" 1, "ingset" →
// "ingest" 1).
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j]; three rows.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// parseSize parses a size in bytes: "64KiB", "10GB", "1048576".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num, unit := splitUnit(s)
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q: want a size such as 64KiB, 10GB or a number of bytes", s)
	}
	mult := map[string]float64{
		"": 1, "B": 1, "KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, unit)
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return int64(v), nil
}

// splitUnit splits "2.5Mbit" into "2.5" and "Mbit".
func splitUnit(s string) (num, unit string) {
	i := len(s)
	for i > 0 {
		c := s[i-1]
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			i--
			continue
		}
		break
	}
	return strings.TrimSpace(s[:i]), s[i:]
}
