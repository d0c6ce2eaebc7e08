package jsonx

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchEvents returns named sets of real events: up to 2000 lines each of
// the Segment and Snowplow wire captures under $SLUICE_DATA (default
// /work/shared/data), or one synthetic ~700-byte Segment-like event when
// neither file is present.
func benchEvents(b *testing.B) (names []string, sets map[string][][]byte) {
	dir := os.Getenv("SLUICE_DATA")
	if dir == "" {
		dir = "/work/shared/data"
	}
	sets = make(map[string][][]byte)
	for _, name := range []string{"segment", "snowplow"} {
		file := filepath.Join(dir, "sdk_wire_from_apache", name+".events.ndjson")
		if _, err := os.Stat(file); err != nil {
			continue
		}
		names = append(names, name)
		sets[name] = readLines(b, file, 2000)
	}
	if len(names) == 0 {
		names = []string{"synthetic"}
		sets["synthetic"] = [][]byte{[]byte(syntheticEvent)}
	}
	return names, sets
}

// syntheticEvent is shaped like a Segment page call (about 700 bytes).
var syntheticEvent = strings.Join(strings.Fields(`{"timestamp":"2015-05-17T10:05:03Z","integrations":{},"type":"page",
"properties":{"url":"http://example.com/presentations/logstash-monitorama-2013/images/kibana-search.png",
"path":"/presentations/logstash-monitorama-2013/images/kibana-search.png","search":"",
"referrer":"http://example.com/presentations/logstash-monitorama-2013/","http_status":200,"bytes":203023,"method":"GET"},
"name":"/presentations/logstash-monitorama-2013/images/kibana-search.png",
"context":{"ip":"192.0.2.1","userAgent":"Mozilla/5.0_(Macintosh;_Intel_Mac_OS_X_10_9_1)_AppleWebKit/537.36_(KHTML,_like_Gecko)_Chrome/32.0.1700.77_Safari/537.36",
"library":{"name":"@segment/analytics-node","version":"3.1.0"}},"anonymousId":"28c25e516b72eb350c1f2eebacb3ef03",
"messageId":"node-next-1795641141924-c99f6bc5-f1d2-4513-b705-f84da6134b39","_metadata":{"nodeVersion":"v20.20.2","jsRuntime":"node"}}`), "")

// benchValidator runs validate over every event of each set per op.
func benchValidator(b *testing.B, validate func([]byte) bool) {
	names, sets := benchEvents(b)
	for _, name := range names {
		events := sets[name]
		var size int64
		for _, ev := range events {
			size += int64(len(ev))
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(size)
			for b.Loop() {
				for _, ev := range events {
					if !validate(ev) {
						b.Fatal("invalid event")
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
		})
	}
}

func BenchmarkObject(b *testing.B) {
	benchValidator(b, func(ev []byte) bool { return Object(ev) == nil })
}

func BenchmarkEncodingJSONValid(b *testing.B) {
	benchValidator(b, json.Valid)
}

func BenchmarkHasNewline(b *testing.B) {
	benchValidator(b, func(ev []byte) bool { return !HasNewline(ev) })
}
