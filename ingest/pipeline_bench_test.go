package ingest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/priority"
)

// BenchmarkPipeline is BenchmarkHandler with routing rules, as a node
// configured with classes runs: one request of 100 events at a time
// through decode, route, stamp, group and Sink, with a rule on a
// top-level field, one on a nested field and one on the source.
//
//	go test -run '^$' -bench Pipeline -benchmem ./ingest
func BenchmarkPipeline(b *testing.B) {
	router, err := priority.NewRouter(nil, []priority.Rule{
		{Field: "event", Equals: []string{"Order Completed"}, Class: "critical"},
		{Field: "properties.batchJob", Class: "backfill"},
		{Field: "type", Equals: []string{"identify"}, Source: "segment", Class: "profile"},
	}, "ingest")
	if err != nil {
		b.Fatal(err)
	}
	var nd, seg strings.Builder
	seg.WriteString(`{"batch":[`)
	for i := range 100 {
		name := "Page Viewed"
		if i%10 == 0 {
			name = "Order Completed"
		}
		ev := fmt.Sprintf(`{"type":"track","event":%q,"messageId":"m-%06d","anonymousId":"5d41402abc4b2a76b9719d911017c592","properties":{"path":"/pricing","url":"https://example.com/pricing","n":%d},"timestamp":"2026-12-07T10:05:03.000Z"}`, name, i, i)
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
			h, err := ingest.NewHandler(discardSink{}, ingest.Options{Node: "bench", DedupWindow: -1, Router: router})
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
