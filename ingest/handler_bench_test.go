package ingest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/validated"
)

// discardSink takes every event at once: what is measured is the
// handler, not a spool.
type discardSink struct{}

func (discardSink) Ingest(context.Context, string, ...[]byte) error             { return nil }
func (discardSink) IngestValid(context.Context, string, validated.Events) error { return nil }

// BenchmarkHandler serves one request of 100 events (about 250 bytes
// each) at a time, through the whole handler (decode, dedup, route,
// stamp, group, Sink), without the network: the HTTP hot path.
//
//	go test -run '^$' -bench Handler -benchmem ./ingest
func BenchmarkHandler(b *testing.B) {
	var nd, seg strings.Builder
	seg.WriteString(`{"batch":[`)
	for i := range 100 {
		ev := fmt.Sprintf(`{"type":"track","event":"Page Viewed","messageId":"m-%06d","anonymousId":"5d41402abc4b2a76b9719d911017c592","properties":{"path":"/pricing","url":"https://example.com/pricing","n":%d},"timestamp":"2026-12-07T10:05:03.000Z"}`, i, i)
		nd.WriteString(ev + "\n")
		if i > 0 {
			seg.WriteByte(',')
		}
		seg.WriteString(ev)
	}
	seg.WriteString(`],"writeKey":"k"}`)
	for _, tc := range []struct{ name, path, body string }{
		{"events", "/v1/events", nd.String()},
		{"segment", "/v1/batch", seg.String()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			// Dedup off: every iteration sends the same ids.
			h, err := ingest.NewHandler(discardSink{}, ingest.Options{Node: "bench", DedupWindow: -1})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body))
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
			b.ReportMetric(100*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
