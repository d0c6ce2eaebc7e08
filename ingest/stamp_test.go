package ingest

import (
	"bytes"
	"testing"
	"time"
)

func TestHasName(t *testing.T) {
	for _, tc := range []struct {
		ev   string
		want bool
	}{
		{`{"receivedAt":1}`, true},
		{`"receivedAt"`, true},
		{`{"A":"receivedAt"}`, true}, // a value spelled like the name: the slow path decides
		{`{"receivedAtX":1}`, false},
		{`{"AreceivedAt":1,"At":2}`, false},
		{`At"`, false},
		{``, false},
	} {
		if got := hasName([]byte(tc.ev), `"receivedAt"`, 9); got != tc.want {
			t.Errorf("hasName(%s) = %v, want %v", tc.ev, got, tc.want)
		}
	}
}

func BenchmarkStamp(b *testing.B) {
	ev := []byte(`{"anonymousId":"5d41402abc4b2a76b9719d911017c592","context":{"library":{"name":"analytics-node","version":"3.1.0"},"ip":"203.0.113.7","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"},"event":"Page Viewed","messageId":"node-next-1700000000000-7f0c","properties":{"path":"/pricing","url":"https://example.com/pricing"},"timestamp":"2015-05-17T10:05:03.000Z","type":"page"}`)
	c := pipeConfig{node: "edge-1"}
	prefix := c.stampPrefix(nil, time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC))
	dst := make([]byte, 0, 2*len(ev))
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		dst = appendStamped(dst[:0], prefix, ev)
	}
	if !bytes.HasPrefix(dst, []byte(`{"receivedAt":`)) {
		b.Fatal(string(dst))
	}
}
