package plan

import (
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
)

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
func (p *Plan) spoolAtPeak(final []priority.Class, demandMsgs map[string]float64, target, spoolMax int64) (sentMsgs float64) {
	d := make([]float64, len(final))
	msgs := make([]float64, len(final))
	for i, c := range final {
		d[i], msgs[i] = p.Classes[i].DemandBytesPerSec, demandMsgs[c.Name]
	}
	actionsAt := func(level int) []priority.Action {
		acts := make([]priority.Action, len(final))
		for i := range final {
			acts[i] = shaper.EffectiveAction(&final[i], level, 0)
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
	sp := SpoolPlan{Level: level, MaxBytes: spoolMax}
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
