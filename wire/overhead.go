package wire

import (
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// maxOverheadSeq is the first sequence of the range MsgOverhead counts:
// 13 digits on both sides of the dash.
const maxOverheadSeq = 1e12

// overheadOldest is the longest Sluice-Oldest value: RFC 3339 with all
// nine digits of nanoseconds (RFC3339Nano drops trailing zeros).
var overheadOldest = time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC)

// inboxReplyBytes is the length of the reply subject of a JetStream async
// publish: _INBOX.<22>.<22>.
const inboxReplyBytes = 52

// MsgOverhead returns what one batch message costs on the wire besides its
// body, in bytes: its headers as NATS encodes them (Header, for a batch of
// up to 9,999 events, 13-digit spool ranges, a Sluice-Level header and an
// Oldest with nanoseconds) and the HPUB protocol line with its JetStream
// reply inbox. subject is the node's subject prefix (a batch of class C goes
// to subject.C), node its name, spool its spool's id and classLen the length
// of the longest class name the node ships.
//
// It is the per-batch overhead the node's lanes charge and the one `sluice plan` adds to each batch, so that the plan and the node
// agree. Headers a batch carries only sometimes (Sluice-Dropped-Fields,
// Sluice-Stale) are not counted.
func MsgOverhead(subject, node, spool string, classLen int) int {
	b := Batch{Node: node, Spool: spool, Class: strings.Repeat("x", max(classLen, 0)),
		Count: 1000, First: maxOverheadSeq, Last: maxOverheadSeq + 999, Oldest: overheadOldest, Level: 1}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range b.Header() {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	// HPUB <subject>.<class> <reply> <header bytes> <total bytes>\r\n … \r\n,
	// each size at most 8 digits.
	const sizes = 2 * 8
	return n + len("HPUB ") + len(subject) + 1 + len(b.Class) + 1 + inboxReplyBytes + 1 + sizes + len("\r\n\r\n")
}

// EncoderLevel maps a class's compression name (priority's Compression*
// constants: "fastest", "default", "better", "best") to the zstd level the
// node compresses its batches at. "" and any other name are fastest: on
// real SDK events in 1000-event batches it compresses as well as zstd's
// default level (about 13×) and faster. `sluice plan` measures a sample's
// ratio at the same level.
func EncoderLevel(compression string) zstd.EncoderLevel {
	switch compression {
	case "default":
		return zstd.SpeedDefault
	case "better":
		return zstd.SpeedBetterCompression
	case "best":
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedFastest
}
