package aggregator

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/wire"
)

// TestMsgOverhead: the overhead the lanes charge covers a real batch
// message's headers and protocol line, within a few bytes of what the
// NATS client puts on the wire for it.
func TestMsgOverhead(t *testing.T) {
	o := Options{Node: "edge-eu-west-1a", Subject: "sluice", Classes: priority.Defaults(0)}
	spoolID := "0123456789abcdef0123456789abcdef"
	got := msgOverhead(o, spoolID)
	b := wire.Batch{Node: o.Node, Spool: spoolID, Class: "replication", Count: 1000, First: 1e12, Last: 1e12 + 999,
		Oldest: time.Date(2026, 11, 26, 4, 0, 0, 123456789, time.UTC), Level: 1}
	m := &nats.Msg{Subject: "sluice.replication", Reply: "_INBOX.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuv", Header: b.Header()}
	// nats.Msg.Size counts subject, reply, header and data bytes; the
	// HPUB line adds its verb, spaces, two sizes and two CRLFs.
	want := m.Size() + len("HPUB    \r\n\r\n") + 2*6
	t.Logf("msgOverhead %d, message %d bytes besides its body", got, want)
	if got < want || got > want+40 {
		t.Errorf("msgOverhead = %d, want about %d", got, want)
	}
}
