package wire_test

import (
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/wire"
)

// todayMsgOverhead is aggregator's msgOverhead (aggregator/shape.go) as it
// was before it called MsgOverhead, with its time.Now() an argument: the
// node's charge that MsgOverhead must reproduce.
func todayMsgOverhead(node, subject, spoolID string, classes []string, now time.Time) int {
	b := wire.Batch{Node: node, Spool: spoolID, Count: 1000, First: 1e12, Last: 1e12 + 999, Oldest: now, Level: 1}
	for _, c := range classes {
		b.Class = max(b.Class, strings.Repeat("x", len(c)))
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range b.Header() {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	const reply, sizes = 52, 2 * 8
	return n + len("HPUB ") + len(subject) + 1 + len(b.Class) + 1 + reply + 1 + sizes + len("\r\n\r\n")
}

func longest(classes []string) int {
	n := 0
	for _, c := range classes {
		n = max(n, len(c))
	}
	return n
}

// TestMsgOverheadIsTheNodes: MsgOverhead equals the node's msgOverhead for
// the node names, subjects, spool ids and class sets a node runs with,
// whenever the clock's nanoseconds end in a non-zero digit (nine times in
// ten). Otherwise RFC3339Nano dropped trailing zeros (and the dot with
// them at a whole second) and the node charged up to 10 bytes less: MsgOverhead is that figure's fixed maximum.
func TestMsgOverheadIsTheNodes(t *testing.T) {
	defaults := []string{priority.ClassCritical, priority.ClassIngest, priority.ClassReplication, priority.ClassBackfill}
	spoolID := "0123456789abcdef0123456789abcdef" // spool ids are 128 bits in hex
	full := []time.Time{
		time.Date(2026, 11, 26, 4, 0, 0, 123456789, time.UTC),
		time.Date(2027, 1, 2, 3, 4, 5, 1, time.UTC),
		time.Date(2026, 6, 30, 23, 59, 59, 999999999, time.FixedZone("CET", 3600)),
	}
	short := []time.Time{
		time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 26, 4, 0, 0, 120000000, time.UTC),
		time.Date(2026, 11, 26, 4, 0, 0, 123456780, time.UTC),
	}
	for _, tc := range []struct {
		node, subject, spool string
		classes              []string
		want                 int // the node's charge at a clock with 9 digits of nanoseconds
	}{
		{"sluice", "sluice", spoolID, defaults, 461},
		{"edge-eu-west-1a", "sluice", spoolID, defaults, 470},
		{"edge-eu-west-1a", "events.prod", spoolID, defaults, 475},
		{strings.Repeat("h", 64), "sluice", spoolID, defaults, 519},
		{"n", "s", spoolID, []string{"a"}, 421},
		{"n", "s", spoolID, []string{"a", strings.Repeat("c", 64)}, 610},
		{"edge-1", "sluice", "sp1", defaults, 403},
		{"", "sluice", spoolID, nil, 422},
	} {
		got := wire.MsgOverhead(tc.subject, tc.node, tc.spool, longest(tc.classes))
		if got != tc.want {
			t.Errorf("MsgOverhead(%q, %q, %q, %v) = %d, want %d", tc.subject, tc.node, tc.spool, tc.classes, got, tc.want)
		}
		for _, now := range full {
			if today := todayMsgOverhead(tc.node, tc.subject, tc.spool, tc.classes, now); today != got {
				t.Errorf("node %q subject %q classes %v at %v: the node charged %d, MsgOverhead %d", tc.node, tc.subject, tc.classes, now, today, got)
			}
		}
		for _, now := range short {
			if today := todayMsgOverhead(tc.node, tc.subject, tc.spool, tc.classes, now); today > got || today < got-10 {
				t.Errorf("node %q at %v: the node charged %d, MsgOverhead %d: want at most 10 bytes more", tc.node, now, today, got)
			}
		}
	}
}

// TestMsgOverheadCoversTheMessage: the overhead covers a real batch
// message's headers and HPUB line, within a few bytes of what the NATS
// client puts on the wire for it.
func TestMsgOverheadCoversTheMessage(t *testing.T) {
	for _, class := range []string{"x", "replication", strings.Repeat("c", 64)} {
		b := wire.Batch{Node: "edge-eu-west-1a", Spool: "0123456789abcdef0123456789abcdef", Class: class, Count: 1000, First: 1e12, Last: 1e12 + 999,
			Oldest: time.Date(2026, 11, 26, 4, 0, 0, 123456789, time.UTC), Level: 3}
		m := &nats.Msg{Subject: "sluice." + class, Reply: "_INBOX.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuv", Header: b.Header()}
		// nats.Msg.Size counts subject, reply, header and data bytes; the
		// HPUB line adds its verb, spaces, two sizes and two CRLFs.
		want := m.Size() + len("HPUB    \r\n\r\n") + 2*6
		got := wire.MsgOverhead("sluice", b.Node, b.Spool, len(class))
		if got < want || got > want+40 {
			t.Errorf("class %q: MsgOverhead = %d, want about %d", class, got, want)
		}
	}
}

// todayZstdLevel is aggregator's zstdLevel (aggregator/options.go) as it
// was before it called EncoderLevel.
func todayZstdLevel(name string) zstd.EncoderLevel {
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

func TestEncoderLevel(t *testing.T) {
	for _, tc := range []struct {
		name string
		want zstd.EncoderLevel
	}{
		{"", zstd.SpeedFastest},
		{priority.CompressionFastest, zstd.SpeedFastest},
		{priority.CompressionDefault, zstd.SpeedDefault},
		{priority.CompressionBetter, zstd.SpeedBetterCompression},
		{priority.CompressionBest, zstd.SpeedBestCompression},
		{"max", zstd.SpeedFastest},
		{"Best", zstd.SpeedFastest},
	} {
		if got := wire.EncoderLevel(tc.name); got != tc.want || got != todayZstdLevel(tc.name) {
			t.Errorf("EncoderLevel(%q) = %v, want %v (the node's %v)", tc.name, got, tc.want, todayZstdLevel(tc.name))
		}
	}
}
