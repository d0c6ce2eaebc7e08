package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// The captured requests in testdata/sdk hold synthetic but PII-shaped data
// (emails, IPs, user agents): tests report events by index, never by
// content.

// captured is one request of testdata/sdk.
type captured struct {
	sdk     string
	path    string // from <sdk>.request.json
	decoded int    // decoded_body_bytes
	bodies  map[string][]byte
}

// loadCaptured reads testdata/sdk/<sdk>.*: the body as pretty-printed
// ("pretty"), compacted ("compact") and, when there is a .body.gz, as the
// SDK sent it, gunzipped ("wire").
func loadCaptured(tb testing.TB, sdk string) captured {
	tb.Helper()
	dir := filepath.Join("testdata", "sdk")
	pretty, err := os.ReadFile(filepath.Join(dir, sdk+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(dir, sdk+".request.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var req struct {
		Path    string `json:"path"`
		Decoded int    `json:"decoded_body_bytes"`
	}
	if err := json.Unmarshal(meta, &req); err != nil {
		tb.Fatal(err)
	}
	c := captured{sdk: sdk, path: req.Path, decoded: req.Decoded, bodies: map[string][]byte{
		"pretty":  pretty,
		"compact": compactJSON(tb, pretty),
	}}
	if gz, err := os.ReadFile(filepath.Join(dir, sdk+".body.gz")); err == nil {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			tb.Fatal(err)
		}
		wire, err := io.ReadAll(zr)
		if err != nil {
			tb.Fatal(err)
		}
		c.bodies["wire"] = wire
	}
	return c
}

func compactJSON(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		tb.Fatalf("json.Compact: %v", err)
	}
	return buf.Bytes()
}

// decodeFor returns the decoder of the SDK endpoint path.
func decodeFor(tb testing.TB, path string) func(body []byte, maxEvent int) (Decoded, error) {
	switch path {
	case "/v1/batch":
		return func(b []byte, max int) (Decoded, error) { return decodeSegment(b, "batch", lims(max, 0)) }
	case "/com.snowplowanalytics.snowplow/tp2":
		return noEventLimit(decodeSnowplow)
	case "/batch/", "/capture/", "/e/":
		return noEventLimit(decodePostHog)
	}
	tb.Fatalf("no decoder for %s", path)
	return nil
}

// TestDecodeCaptured decodes every captured request, as sent and
// pretty-printed, and checks each event against encoding/json's decoding
// of the original element: same members, each value byte for byte the same
// (compacted), the ID its id member, and no write key.
func TestDecodeCaptured(t *testing.T) {
	for _, tc := range []struct {
		sdk, batch, id, writeKey string
		events                   int
	}{
		{"segment", "batch", "messageId", "seg_test_write_key", 30},
		{"rudderstack", "batch", "messageId", "", 29},
		{"snowplow", "data", "eid", "", 30},
		{"posthog", "batch", "uuid", "phc_test_project_key", 30},
	} {
		c := loadCaptured(t, tc.sdk)
		decode := decodeFor(t, c.path)
		for variant, body := range c.bodies {
			t.Run(tc.sdk+"/"+variant, func(t *testing.T) {
				if variant != "pretty" && len(body) != c.decoded {
					t.Errorf("body of %d bytes, the capture says %d", len(body), c.decoded)
				}
				orig := bytes.Clone(body)
				d, err := decode(body, DefaultMaxEventBytes)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(body, orig) {
					t.Fatal("the decoder modified the body")
				}
				if len(d.Events) != tc.events || len(d.Rejected) != 0 {
					t.Fatalf("%d events, %d rejected %v; want %d, 0", len(d.Events), len(d.Rejected), d.Rejected, tc.events)
				}
				if d.WriteKey != tc.writeKey {
					t.Errorf("WriteKey = %q, want %q", d.WriteKey, tc.writeKey)
				}
				var env map[string]json.RawMessage
				var elems []json.RawMessage
				if err := json.Unmarshal(body, &env); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(env[tc.batch], &elems); err != nil {
					t.Fatal(err)
				}
				for i, ev := range d.Events {
					checkEventBody(t, i, ev.Body, DefaultMaxEventBytes)
					want := compactJSON(t, elems[i])
					if !bytes.Equal(ev.Body, want) {
						t.Errorf("event %d differs from its element", i)
					}
					sameMembers(t, i, ev.Body, elems[i], nil)
					var id string
					json.Unmarshal(objectOf(t, elems[i])[tc.id], &id)
					if id == "" || string(ev.ID) != id {
						t.Errorf("event %d: ID of %d bytes, want its %q of %d bytes", i, len(ev.ID), tc.id, len(id))
					}
					if variant == "compact" || variant == "wire" {
						if !aliases(ev.Body, body) {
							t.Errorf("event %d does not alias the body", i)
						}
					}
				}
			})
		}
	}
}

// checkEventBody fails t unless body is a valid event: one JSON object on
// one line, within max bytes, with no spare capacity.
func checkEventBody(t testing.TB, i int, body []byte, max int) {
	t.Helper()
	if err := jsonx.Object(body); err != nil {
		t.Fatalf("event %d: %v", i, err)
	}
	if jsonx.HasNewline(body) {
		t.Fatalf("event %d spans lines", i)
	}
	if len(body) > max {
		t.Fatalf("event %d of %d bytes, limit %d", i, len(body), max)
	}
	if cap(body) != len(body) {
		t.Fatalf("event %d has spare capacity: an append would overwrite what follows", i)
	}
}

// objectOf decodes the JSON object b into its members, the last of
// duplicates winning.
func objectOf(tb testing.TB, b []byte) map[string]json.RawMessage {
	tb.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("json.Unmarshal: %v", err)
	}
	return m
}

// sameMembers fails t unless the event body has exactly the members of
// the original element, each value the same bytes once compacted, but for
// the changes listed in change: a nil value means the member must be
// absent, another the value it must have.
func sameMembers(t testing.TB, i int, body, element []byte, change map[string][]byte) {
	t.Helper()
	got, want := objectOf(t, body), objectOf(t, element)
	for k, v := range change {
		if v == nil {
			delete(want, k)
		} else {
			want[k] = v
		}
	}
	if len(got) != len(want) {
		t.Errorf("event %d: %d members, want %d", i, len(got), len(want))
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("event %d: member %q missing", i, k)
		} else if !bytes.Equal(compactJSON(t, g), compactJSON(t, v)) {
			t.Errorf("event %d: member %q differs", i, k)
		}
	}
}

// aliases reports whether s lies within body's memory.
func aliases(s, body []byte) bool {
	if len(s) == 0 || len(body) == 0 {
		return false
	}
	for i := range body {
		if &body[i] == &s[0] {
			return i+len(s) <= len(body)
		}
	}
	return false
}

// dataFile returns the path of a file of the shared real-data folder
// ($SLUICE_DATA, default /work/shared/data), or "" when it is absent.
func dataFile(name string) string {
	dir := os.Getenv("SLUICE_DATA")
	if dir == "" {
		dir = "/work/shared/data"
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// readNDJSON returns up to max (0: all) non-empty lines of file.
func readNDJSON(tb testing.TB, file string, max int) [][]byte {
	tb.Helper()
	f, err := os.Open(file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() && (max == 0 || len(lines) < max) {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return lines
}

// batchOf wraps events into a body: prefix, the events joined by ',',
// suffix.
func batchOf(prefix string, events [][]byte, suffix string) []byte {
	return []byte(prefix + string(bytes.Join(events, []byte(","))) + suffix)
}

// benchDecode runs decode over body per op and reports events/s.
func benchDecode(b *testing.B, body []byte, decode func([]byte) (Decoded, error)) {
	d, err := decode(body)
	if err != nil || len(d.Events) == 0 || len(d.Rejected) != 0 {
		b.Fatalf("%d events, %d rejected, %v", len(d.Events), len(d.Rejected), err)
	}
	n := len(d.Events)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decode(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecodeSegment decodes the captured Segment batch (30 events) and
// a batch of the first 100 events of sdk_wire_from_apache/segment (real
// page views as analytics-node sent them; the captured body when the file
// is absent), as /v1/batch bodies.
//
//	go test -run '^$' -bench DecodeSegment -benchtime 2s ./ingest
func BenchmarkDecodeSegment(b *testing.B) {
	seg := func(body []byte) (Decoded, error) { return decodeSegment(body, "batch", lims(DefaultMaxEventBytes, 0)) }
	captured := loadCaptured(b, "segment").bodies["compact"]
	b.Run("captured", func(b *testing.B) { benchDecode(b, captured, seg) })
	apache := captured
	if f := dataFile("sdk_wire_from_apache/segment.events.ndjson"); f != "" {
		apache = batchOf(`{"batch":[`, readNDJSON(b, f, 100), `],"writeKey":"seg_test_write_key","sentAt":"2015-05-17T10:05:03.000Z"}`)
	}
	b.Run("apache100", func(b *testing.B) { benchDecode(b, apache, seg) })
	rudder := loadCaptured(b, "rudderstack").bodies["wire"]
	b.Run("rudderstack", func(b *testing.B) { benchDecode(b, rudder, seg) })
}

// BenchmarkDecodeSnowplow decodes the captured tp2 body and its base64
// variant (every ue_pr and co sent as ue_px and cx).
//
//	go test -run '^$' -bench DecodeSnowplow -benchtime 2s ./ingest
func BenchmarkDecodeSnowplow(b *testing.B) {
	sp := func(body []byte) (Decoded, error) { return decodeSnowplow(body, lims(DefaultMaxEventBytes, 0)) }
	plain := loadCaptured(b, "snowplow").bodies["compact"]
	b.Run("plain", func(b *testing.B) { benchDecode(b, plain, sp) })
	b.Run("base64", func(b *testing.B) { benchDecode(b, snowplowBase64(b, plain), sp) })
}

// BenchmarkDecodePostHog decodes the captured PostHog batch.
//
//	go test -run '^$' -bench DecodePostHog -benchtime 2s ./ingest
func BenchmarkDecodePostHog(b *testing.B) {
	ph := func(body []byte) (Decoded, error) { return decodePostHog(body, lims(DefaultMaxEventBytes, 0)) }
	b.Run("captured", func(b *testing.B) { benchDecode(b, loadCaptured(b, "posthog").bodies["wire"], ph) })
}

// TestDecodeAllocs pins the allocations of the hot path: decoding a
// captured batch allocates the Events slice and the write key, nothing per
// event.
func TestDecodeAllocs(t *testing.T) {
	for _, tc := range []struct {
		sdk    string
		decode func([]byte) (Decoded, error)
		max    float64
	}{
		{"segment", func(b []byte) (Decoded, error) { return decodeSegment(b, "batch", lims(DefaultMaxEventBytes, 0)) }, 2},
		{"rudderstack", func(b []byte) (Decoded, error) { return decodeSegment(b, "batch", lims(DefaultMaxEventBytes, 0)) }, 1},
		{"posthog", func(b []byte) (Decoded, error) { return decodePostHog(b, lims(DefaultMaxEventBytes, 0)) }, 2},
		{"snowplow", func(b []byte) (Decoded, error) { return decodeSnowplow(b, lims(DefaultMaxEventBytes, 0)) }, 3}, // + the buffer that unquotes ue_pr and co
	} {
		body := loadCaptured(t, tc.sdk).bodies["compact"]
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := tc.decode(body); err != nil {
				panic(err)
			}
		})
		if allocs > tc.max {
			t.Errorf("%s: %v allocations per body of 30 events, want at most %v", tc.sdk, allocs, tc.max)
		}
	}
}

// errorString returns err's message, or "" for nil.
func errorString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// rejections formats rejections for comparison.
func rejections(rs []Rejection) string {
	var s []string
	for _, r := range rs {
		s = append(s, strconv.Itoa(r.Line)+": "+r.Error)
	}
	return strings.Join(s, "\n")
}

// decodeCase is one step of a decoder's table test.
type decodeCase struct {
	name     string
	body     string
	max      int      // maxEvent; 0 means DefaultMaxEventBytes
	events   []string // the bodies of the events
	ids      []string // their IDs, "" for nil; nil to skip the check
	rejected string   // rejections(Rejected)
	key      string   // WriteKey
	err      string   // the error, "" for none
}

func runDecodeCases(t *testing.T, cases []decodeCase, decode func(body []byte, maxEvent int) (Decoded, error)) {
	t.Helper()
	for _, tc := range cases {
		max := tc.max
		if max == 0 {
			max = DefaultMaxEventBytes
		}
		body := []byte(tc.body)
		d, err := decode(body, max)
		if errorString(err) != tc.err {
			t.Errorf("%s: error %q, want %q", tc.name, errorString(err), tc.err)
			continue
		}
		if err != nil {
			if d.Events != nil || d.Rejected != nil || d.WriteKey != "" {
				t.Errorf("%s: error %v returned with a result", tc.name, err)
			}
			continue
		}
		if string(body) != tc.body {
			t.Errorf("%s: the decoder modified the body", tc.name)
		}
		var got []string
		for i, ev := range d.Events {
			checkEventBody(t, i, ev.Body, max)
			got = append(got, string(ev.Body))
		}
		if strings.Join(got, "\n") != strings.Join(tc.events, "\n") {
			t.Errorf("%s: events\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(tc.events, "\n"))
		}
		if tc.ids != nil {
			var ids []string
			for _, ev := range d.Events {
				if ev.ID != nil && len(ev.ID) == 0 {
					t.Errorf("%s: empty non-nil ID", tc.name)
				}
				ids = append(ids, string(ev.ID))
			}
			if strings.Join(ids, "|") != strings.Join(tc.ids, "|") || len(ids) != len(tc.ids) {
				t.Errorf("%s: IDs %q, want %q", tc.name, ids, tc.ids)
			}
		}
		if r := rejections(d.Rejected); r != tc.rejected {
			t.Errorf("%s: rejected\n%s\nwant\n%s", tc.name, r, tc.rejected)
		}
		if d.WriteKey != tc.key {
			t.Errorf("%s: WriteKey %q, want %q", tc.name, d.WriteKey, tc.key)
		}
	}
}

func noEventLimit(f func([]byte, decodeLimits) (Decoded, error)) func([]byte, int) (Decoded, error) {
	return func(b []byte, max int) (Decoded, error) { return f(b, lims(max, 0)) }
}

// lims is decodeLimits with only the event limits, as the decoders' tests
// use them.
func lims(maxEvent, maxEvents int) decodeLimits {
	return decodeLimits{maxEvent: maxEvent, maxEvents: maxEvents}
}
