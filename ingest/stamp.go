package ingest

import (
	"bytes"
	"time"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// The members the pipeline stamps on every event it accepts, by either door, first in the
// object. An event that already has a member of either name loses it: the
// node's clock and name are the ones that count, as a collector's
// receivedAt is in Segment's model.
const (
	StampReceivedAt = "receivedAt" // RFC 3339 UTC with milliseconds, e.g. "2026-11-26T01:02:03.456Z"
	StampNode       = "sluiceNode" // Options.Node
)

// stampLayout is receivedAt's format: what Segment's API sets.
const stampLayout = "2006-01-02T15:04:05.000Z07:00"

// stampPrefix appends the stamp members for a request or NATS batch
// received at now: `"receivedAt":"…","sluiceNode":"…"`, or nothing when
// stamping is off.
func (c *pipeConfig) stampPrefix(dst []byte, now time.Time) []byte {
	if c.noStamp {
		return dst
	}
	dst = append(dst, `"`+StampReceivedAt+`":"`...)
	dst = now.UTC().AppendFormat(dst, stampLayout)
	dst = append(dst, `","`+StampNode+`":`...)
	return jsonx.AppendQuote(dst, []byte(c.node))
}

// appendStamped appends to dst the event ev (one valid JSON object) with
// the members of prefix first and without members of the stamped names.
// With an empty prefix it appends ev as it is. The result is at most
// len(ev)+len(prefix)+1 bytes. It searches ev for the names: the pipeline
// calls it only for an event its door did not scan (appendStampedMeta).
func appendStamped(dst, prefix, ev []byte) []byte {
	if len(prefix) == 0 {
		return append(dst, ev...)
	}
	if traceScan != nil {
		traceScan(ev)
	}
	if !hasName(ev, `"`+StampReceivedAt+`"`, 9) && !hasName(ev, `"`+StampNode+`"`, 7) &&
		bytes.IndexByte(ev, '\\') < 0 {
		// The common case: ev has neither member, under any spelling.
		return appendPrefixed(dst, prefix, ev)
	}
	// A member of a stamped name, or an escape that might spell one.
	return appendRebuilt(dst, prefix, ev)
}

// appendStampedMeta is appendStamped for an event whose door's validating
// pass said, in meta, whether it has a member of a stamped name: the
// stamp then reads nothing of ev but to copy it. An event without meta is
// searched as appendStamped does.
func appendStampedMeta(dst, prefix, ev []byte, meta eventMeta) []byte {
	switch {
	case len(prefix) == 0:
		return append(dst, ev...)
	case meta&metaScanned == 0:
		return appendStamped(dst, prefix, ev)
	case meta&metaForged == 0:
		return appendPrefixed(dst, prefix, ev)
	}
	if traceScan != nil {
		traceScan(ev)
	}
	return appendRebuilt(dst, prefix, ev)
}

// appendPrefixed appends ev, which has no member of a stamped name, with
// the members of prefix first; the rest of ev is copied byte for byte.
func appendPrefixed(dst, prefix, ev []byte) []byte {
	dst = append(dst, '{')
	dst = append(dst, prefix...)
	rest := bytes.TrimLeft(ev[1:], " \t\r\n")
	if rest[0] != '}' {
		dst = append(dst, ',')
	}
	return append(dst, rest...)
}

// appendRebuilt appends ev with the members of prefix first and rebuilt
// from its other members, whose names come decoded: members of a stamped
// name, under any spelling, are left out.
func appendRebuilt(dst, prefix, ev []byte) []byte {
	dst = append(dst, '{')
	dst = append(dst, prefix...)
	jsonx.Members(ev, func(m jsonx.Member) error {
		if k := string(m.Key); k == StampReceivedAt || k == StampNode {
			return nil
		}
		dst = append(dst, ',')
		dst = append(dst, ev[m.Start:m.End]...)
		return nil
	})
	return append(dst, '}')
}

// hasName reports whether the quoted name occurs in ev. It looks for
// name[rare], an uncommon byte (the capital of "receivedAt", "sluiceNode"),
// with IndexByte and compares the name around each hit: searching for the
// whole name starts from '"', JSON's most common byte, and cost as much as
// the spool's append (BenchmarkHTTPIngest's profile: 12-18% of the CPU).
func hasName(ev []byte, name string, rare int) bool {
	for i := 0; i < len(ev); {
		j := bytes.IndexByte(ev[i:], name[rare])
		if j < 0 {
			return false
		}
		j += i
		if start := j - rare; start >= 0 && start+len(name) <= len(ev) && string(ev[start:start+len(name)]) == name {
			return true
		}
		i = j + 1
	}
	return false
}
