package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

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
	// Compression: fastest (the default of a class not named like a
	// default class), default, better or best.
	Compression *string `yaml:"compression"`
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
// for a link of linkBps bytes/s. No entries: the defaults.
func buildClasses(cfg []classConfig, linkBps int64) ([]priority.Class, error) {
	defaults := priority.Defaults(linkBps)
	if len(cfg) == 0 {
		return defaults, nil
	}
	var errs []error
	out := make([]priority.Class, 0, len(cfg))
	for i, cc := range cfg {
		c, err := cc.class(defaults, linkBps)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: classes[%d] (%s): %w", cc.line, i, cc.Name, err))
			continue
		}
		out = append(out, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var lr priority.Rate
	if linkBps > 0 {
		lr.BytesPerSec = linkBps
	}
	if err := priority.Validate(out, lr); err != nil {
		return nil, fmt.Errorf("classes: %w", err)
	}
	return out, nil
}

func (cc classConfig) class(defaults []priority.Class, linkBps int64) (priority.Class, error) {
	c := priority.Class{Name: cc.Name, Priority: priority.MaxPriority}
	for _, d := range defaults {
		if d.Name == cc.Name {
			c = d
		}
	}
	if cc.Name == "" {
		return c, errors.New("name is empty")
	}
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.Priority, cc.Priority)
	set(&c.Weight, cc.Weight)
	if cc.Critical != nil {
		c.Critical = *cc.Critical
	}
	var err error
	if cc.Rate != nil {
		if c.Rate.BytesPerSec, err = parseRate(*cc.Rate, linkBps); err != nil {
			return c, fmt.Errorf("rate: %w", err)
		}
	}
	if cc.Ceil != nil {
		if c.Ceil.BytesPerSec, err = parseRate(*cc.Ceil, linkBps); err != nil {
			return c, fmt.Errorf("ceil: %w", err)
		}
	}
	if cc.RateMsgs != nil {
		c.Rate.MsgsPerSec = *cc.RateMsgs
	}
	if cc.CeilMsgs != nil {
		c.Ceil.MsgsPerSec = *cc.CeilMsgs
	}
	if cc.MaxAge != nil {
		if *cc.MaxAge < 0 {
			return c, fmt.Errorf("max_age: %v: want a duration ≥ 0 (0s = never)", *cc.MaxAge)
		}
		c.MaxAge = *cc.MaxAge
	}
	if cc.Expire != nil {
		switch *cc.Expire {
		case priority.ExpireDemote, priority.ExpireDrop:
			c.Expire = *cc.Expire
		default:
			return c, fmt.Errorf("expire: %q: want demote (send after newer events, labelled stale) or drop (count, do not send)", *cc.Expire)
		}
	}
	if b := cc.Batch; b != nil {
		set(&c.Batch.MaxEvents, b.MaxEvents)
		if b.MaxBytes != nil {
			n, err := parseSize(*b.MaxBytes)
			if err != nil {
				return c, fmt.Errorf("batch.max_bytes: %w", err)
			}
			if n > math.MaxInt32 {
				return c, fmt.Errorf("batch.max_bytes: %d bytes is too large", n)
			}
			c.Batch.MaxBytes = int(n)
		}
		if b.Linger != nil {
			c.Batch.Linger = *b.Linger
		}
	}
	if cc.Compression != nil {
		c.Compression = *cc.Compression
	}
	if cc.Overflow != nil {
		c.Overflow = *cc.Overflow
	}
	if cc.MaxBytes != nil {
		if c.MaxBytes, err = parseSize(*cc.MaxBytes); err != nil {
			return c, fmt.Errorf("max_bytes: %w", err)
		}
	}
	if cc.Fields != nil {
		c.Fields = make([]priority.FieldRule, len(*cc.Fields))
		for i, f := range *cc.Fields {
			c.Fields[i] = priority.FieldRule{Path: f.Path, Priority: f.Priority}
		}
	}
	if cc.Plan != nil {
		if c.Plan, err = parsePlan(*cc.Plan); err != nil {
			return c, fmt.Errorf("plan: %w", err)
		}
	}
	return c, nil
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
			return p, fmt.Errorf("level %d: %q: want none, drop_fields:N, throttle or defer", i, a)
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

// parseRate parses a rate in bytes per second: "2Mbit" (or "2Mbit/s",
// "500kbit", "1Gbit"), "250KB/s", "1MiB/s", "1500" (bytes/s), or "10%" of
// linkBps.
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
	if err != nil || f < 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q: want a rate such as 2Mbit, 250KB/s, 10%% or bytes/s", s)
	}
	mult := map[string]float64{
		"": 1, "B": 1,
		"bit": 1.0 / 8, "kbit": 1e3 / 8, "Kbit": 1e3 / 8, "Mbit": 1e6 / 8, "Gbit": 1e9 / 8,
		"KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("%q: unknown unit %q (want bit, kbit, Mbit, Gbit, B, KB, MB, GB, KiB, MiB, GiB, or %%)", s, unit)
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return int64(v), nil
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
