package wire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// encodeBody returns events as one zstd frame of NDJSON, each line ending
// in a newline, as the edge writes it.
func encodeBody(t testing.TB, events ...string) []byte {
	t.Helper()
	var ndjson []byte
	for _, e := range events {
		ndjson = append(append(ndjson, e...), '\n')
	}
	return compress(t, ndjson)
}

// compress returns raw as one zstd frame made by EncodeAll.
func compress(t testing.TB, raw []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

func newDecoder(t testing.TB, maxSize int) *Decoder {
	t.Helper()
	d, err := NewDecoder(maxSize)
	if err != nil {
		t.Fatalf("NewDecoder(%d): %v", maxSize, err)
	}
	t.Cleanup(d.Close)
	return d
}

// validHeader is the header of a well-formed batch of count events; tests
// edit it to make it wrong.
func validHeader(count int) nats.Header {
	b := Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 1, Last: uint64(max(count, 1)), Count: count}
	return b.Header()
}

// sameMeta reports whether a and b describe the same batch, ignoring their
// events and comparing instants with Equal.
func sameMeta(a, b Batch) bool {
	a.Events, b.Events = nil, nil
	if !a.Oldest.Equal(b.Oldest) {
		return false
	}
	a.Oldest, b.Oldest = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func TestMsgID(t *testing.T) {
	tests := []struct {
		spool, class string
		first, last  uint64
		want         string
	}{
		{"sp1", "ingest", 1, 100, "sp1.ingest.1-100"},
		{"01J9ZQ4", "critical", 7, 7, "01J9ZQ4.critical.7-7"},
		{"s", "backfill", 0, math.MaxUint64, "s.backfill.0-18446744073709551615"},
	}
	for _, tt := range tests {
		got := MsgID(tt.spool, tt.class, tt.first, tt.last)
		if got != tt.want {
			t.Errorf("MsgID(%q, %q, %d, %d) = %q, want %q", tt.spool, tt.class, tt.first, tt.last, got, tt.want)
		}
		// Deterministic: the same batch always gets the same id.
		if again := MsgID(tt.spool, tt.class, tt.first, tt.last); again != got {
			t.Errorf("MsgID not deterministic: %q then %q", got, again)
		}
	}
	// Any change of spool, class or range changes the id.
	base := MsgID("sp1", "ingest", 1, 100)
	for _, other := range []string{
		MsgID("sp2", "ingest", 1, 100),
		MsgID("sp1", "critical", 1, 100),
		MsgID("sp1", "ingest", 2, 100),
		MsgID("sp1", "ingest", 1, 101),
		MsgID("sp1", "ingest", 11, 00),
	} {
		if other == base {
			t.Errorf("MsgID collision: %q", other)
		}
	}
}

func TestHeaderExact(t *testing.T) {
	b := Batch{
		Node: "edge-1", Spool: "sp1", Class: "ingest",
		First: 101, Last: 230, Count: 128,
		Oldest:  time.Date(2026, 3, 1, 13, 4, 5, 123456789, time.FixedZone("CET", 3600)),
		Level:   2,
		Dropped: []string{"context.userAgent", "properties.html"},
	}
	want := nats.Header{
		"Sluice-Version":        {"1"},
		"Sluice-Node":           {"edge-1"},
		"Sluice-Spool":          {"sp1"},
		"Sluice-Class":          {"ingest"},
		"Sluice-Count":          {"128"},
		"Sluice-Range":          {"101-230"},
		"Sluice-Encoding":       {"zstd"},
		"Sluice-Oldest":         {"2026-03-01T12:04:05.123456789Z"},
		"Sluice-Level":          {"2"},
		"Sluice-Dropped-Fields": {"context.userAgent,properties.html"},
		"Nats-Msg-Id":           {"sp1.ingest.101-230"},
	}
	if got := b.Header(); !reflect.DeepEqual(got, want) {
		t.Errorf("Header() =\n%v\nwant\n%v", got, want)
	}

	// Optional headers are absent at their zero values.
	b = Batch{Node: "n", Spool: "s", Class: "c", First: 1, Last: 1, Count: 1}
	h := b.Header()
	for _, k := range []string{HdrOldest, HdrLevel, HdrDropped} {
		if _, ok := h[k]; ok {
			t.Errorf("Header() of an undegraded batch without Oldest has %s: %q", k, h[k])
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		b    Batch
	}{
		{"minimal", Batch{Class: "ingest", First: 1, Last: 1, Count: 1}},
		{"all", Batch{
			Node: "edge-1", Spool: "sp1", Class: "ingest", First: 101, Last: 230, Count: 128,
			Oldest: time.Date(2026, 3, 1, 12, 4, 5, 123456789, time.UTC), Level: 2,
			Dropped: []string{"context.userAgent", "properties.html"},
		}},
		{"oldest not UTC", Batch{Class: "c", First: 5, Last: 9, Count: 5,
			Oldest: time.Date(2026, 3, 1, 13, 4, 5, 1, cet)}},
		{"oldest with monotonic reading", Batch{Class: "c", First: 5, Last: 9, Count: 5,
			Oldest: time.Now()}},
		{"oldest whole second", Batch{Class: "c", First: 5, Last: 9, Count: 5,
			Oldest: time.Date(2026, 3, 1, 13, 4, 5, 0, time.UTC)}},
		{"level 1", Batch{Class: "c", First: 1, Last: 1, Count: 1, Level: 1}},
		{"level 3", Batch{Class: "critical", First: 1, Last: 1, Count: 1, Level: 3}},
		{"one dropped field", Batch{Class: "c", First: 1, Last: 1, Count: 1, Level: 1, Dropped: []string{"properties"}}},
		{"range wider than count", Batch{Class: "c", First: 10, Last: 99, Count: 3}},
		{"empty batch", Batch{Class: "c", First: 10, Last: 10, Count: 0}},
		{"sequence 0", Batch{Class: "c", First: 0, Last: 0, Count: 1}},
		{"max range", Batch{Class: "c", First: 0, Last: math.MaxUint64, Count: 1}},
		{"max sequence", Batch{Class: "c", First: math.MaxUint64, Last: math.MaxUint64, Count: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeader(tt.b.Header())
			if err != nil {
				t.Fatalf("ParseHeader(Header()): %v", err)
			}
			if !sameMeta(got, tt.b) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tt.b)
			}
			if got.Oldest.IsZero() != tt.b.Oldest.IsZero() {
				t.Errorf("Oldest zero: got %v, want %v", got.Oldest.IsZero(), tt.b.Oldest.IsZero())
			}
		})
	}
}

func TestParseHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(nats.Header)
		is   error
		msg  string
	}{
		{"version missing", func(h nats.Header) { h.Del(HdrVersion) },
			ErrVersion, `wire: unsupported format version: Sluice-Version ""`},
		{"version 2 without its dictionary", func(h nats.Header) { h.Set(HdrVersion, "2") },
			ErrHeader, `wire: bad header: Sluice-Dict ""`},
		{"version 2, reserved dictionary id", func(h nats.Header) { h.Set(HdrVersion, "2"); h.Set(HdrDict, "32767") },
			ErrHeader, `wire: bad header: Sluice-Dict "32767"`},
		{"version 2, id past 2^31", func(h nats.Header) { h.Set(HdrVersion, "2"); h.Set(HdrDict, "2147483648") },
			ErrHeader, `wire: bad header: Sluice-Dict "2147483648"`},
		{"version 1 naming a dictionary", func(h nats.Header) { h.Set(HdrDict, "40000") },
			ErrHeader, `wire: bad header: Sluice-Dict in a version 1 batch`},
		{"version 3", func(h nats.Header) { h.Set(HdrVersion, "3") },
			ErrVersion, `wire: unsupported format version: Sluice-Version "3"`},
		{"version key wrong case", func(h nats.Header) { h.Del(HdrVersion); h.Set("sluice-version", "1") },
			ErrVersion, `wire: unsupported format version: Sluice-Version ""`},
		{"version with no values", func(h nats.Header) { h[HdrVersion] = []string{} },
			ErrVersion, `wire: unsupported format version: Sluice-Version ""`},
		{"encoding missing", func(h nats.Header) { h.Del(HdrEncoding) },
			ErrHeader, `wire: bad header: Sluice-Encoding "", want "zstd"`},
		{"encoding gzip", func(h nats.Header) { h.Set(HdrEncoding, "gzip") },
			ErrHeader, `wire: bad header: Sluice-Encoding "gzip", want "zstd"`},
		{"class missing", func(h nats.Header) { h.Del(HdrClass) },
			ErrHeader, `wire: bad header: Sluice-Class missing`},
		{"class empty", func(h nats.Header) { h.Set(HdrClass, "") },
			ErrHeader, `wire: bad header: Sluice-Class missing`},
		{"count missing", func(h nats.Header) { h.Del(HdrCount) },
			ErrHeader, `wire: bad header: Sluice-Count ""`},
		{"count not a number", func(h nats.Header) { h.Set(HdrCount, "ten") },
			ErrHeader, `wire: bad header: Sluice-Count "ten"`},
		{"count negative", func(h nats.Header) { h.Set(HdrCount, "-1") },
			ErrHeader, `wire: bad header: Sluice-Count "-1"`},
		{"count overflows int", func(h nats.Header) { h.Set(HdrCount, "99999999999999999999") },
			ErrHeader, `wire: bad header: Sluice-Count "99999999999999999999"`},
		{"range missing", func(h nats.Header) { h.Del(HdrRange) },
			ErrHeader, `wire: bad header: Sluice-Range "" for 3 events`},
		{"range without dash", func(h nats.Header) { h.Set(HdrRange, "13") },
			ErrHeader, `wire: bad header: Sluice-Range "13" for 3 events`},
		{"range first not a number", func(h nats.Header) { h.Set(HdrRange, "a-3") },
			ErrHeader, `wire: bad header: Sluice-Range "a-3" for 3 events`},
		{"range last not a number", func(h nats.Header) { h.Set(HdrRange, "1-b") },
			ErrHeader, `wire: bad header: Sluice-Range "1-b" for 3 events`},
		{"range first negative", func(h nats.Header) { h.Set(HdrRange, "-1-3") },
			ErrHeader, `wire: bad header: Sluice-Range "-1-3" for 3 events`},
		{"range three parts", func(h nats.Header) { h.Set(HdrRange, "1-2-3") },
			ErrHeader, `wire: bad header: Sluice-Range "1-2-3" for 3 events`},
		{"range overflows uint64", func(h nats.Header) { h.Set(HdrRange, "1-18446744073709551616") },
			ErrHeader, `wire: bad header: Sluice-Range "1-18446744073709551616" for 3 events`},
		{"range backwards", func(h nats.Header) { h.Set(HdrRange, "5-3") },
			ErrHeader, `wire: bad header: Sluice-Range "5-3" for 3 events`},
		{"range narrower than count", func(h nats.Header) { h.Set(HdrRange, "1-2") },
			ErrHeader, `wire: bad header: Sluice-Range "1-2" for 3 events`},
		{"oldest not a time", func(h nats.Header) { h.Set(HdrOldest, "yesterday") },
			ErrHeader, `wire: bad header: Sluice-Oldest "yesterday"`},
		{"oldest without zone", func(h nats.Header) { h.Set(HdrOldest, "2026-03-01T12:04:05") },
			ErrHeader, `wire: bad header: Sluice-Oldest "2026-03-01T12:04:05"`},
		{"oldest unix seconds", func(h nats.Header) { h.Set(HdrOldest, "1772366645") },
			ErrHeader, `wire: bad header: Sluice-Oldest "1772366645"`},
		// In UTC these are years 10000 and -1, which Header cannot write
		// back as RFC 3339.
		{"oldest past year 9999 in UTC", func(h nats.Header) { h.Set(HdrOldest, "9999-12-31T23:59:59-01:00") },
			ErrHeader, `wire: bad header: Sluice-Oldest "9999-12-31T23:59:59-01:00"`},
		{"oldest before year 0 in UTC", func(h nats.Header) { h.Set(HdrOldest, "0000-01-01T00:00:00+01:00") },
			ErrHeader, `wire: bad header: Sluice-Oldest "0000-01-01T00:00:00+01:00"`},
		{"level not a number", func(h nats.Header) { h.Set(HdrLevel, "high") },
			ErrHeader, `wire: bad header: Sluice-Level "high"`},
		{"level negative", func(h nats.Header) { h.Set(HdrLevel, "-1") },
			ErrHeader, `wire: bad header: Sluice-Level "-1"`},
		{"level 4", func(h nats.Header) { h.Set(HdrLevel, "4") },
			ErrHeader, `wire: bad header: Sluice-Level "4"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := validHeader(3)
			tt.edit(h)
			_, err := ParseHeader(h)
			if !errors.Is(err, tt.is) {
				t.Fatalf("ParseHeader: %v, want errors.Is %v", err, tt.is)
			}
			if other := map[error]error{ErrVersion: ErrHeader, ErrHeader: ErrVersion}[tt.is]; errors.Is(err, other) {
				t.Errorf("ParseHeader: %v is also %v", err, other)
			}
			if err.Error() != tt.msg {
				t.Errorf("ParseHeader error\n got %s\nwant %s", err, tt.msg)
			}
			// Decode reports the same error without touching the body.
			d := newDecoder(t, 0)
			if _, derr := d.Decode(h, []byte("not zstd")); derr == nil || derr.Error() != tt.msg {
				t.Errorf("Decode error %v, want %s", derr, tt.msg)
			}
		})
	}
}

func TestParseHeaderLenient(t *testing.T) {
	// Inputs that are accepted on purpose: the optional headers at their
	// explicit zero value, and headers this version does not know.
	tests := []struct {
		name string
		edit func(nats.Header)
		want func(*Batch)
	}{
		{"level 0 explicit", func(h nats.Header) { h.Set(HdrLevel, "0") }, func(*Batch) {}},
		{"empty level", func(h nats.Header) { h.Set(HdrLevel, "") }, func(*Batch) {}},
		{"empty oldest", func(h nats.Header) { h.Set(HdrOldest, "") }, func(*Batch) {}},
		{"empty dropped", func(h nats.Header) { h.Set(HdrDropped, "") }, func(*Batch) {}},
		{"node and spool missing", func(h nats.Header) { h.Del(HdrNode); h.Del(HdrSpool) },
			func(b *Batch) { b.Node, b.Spool = "", "" }},
		{"msg id missing", func(h nats.Header) { h.Del(HdrMsgID) }, func(*Batch) {}},
		{"unknown header", func(h nats.Header) { h.Set("Sluice-Future", "x") }, func(*Batch) {}},
		{"second value ignored", func(h nats.Header) { h.Add(HdrClass, "critical") }, func(*Batch) {}},
		{"oldest with offset", func(h nats.Header) { h.Set(HdrOldest, "2026-03-01T13:04:05.5+01:00") },
			func(b *Batch) { b.Oldest = time.Date(2026, 3, 1, 12, 4, 5, 5e8, time.UTC) }},
		{"dropped with one path", func(h nats.Header) { h.Set(HdrDropped, "properties.html") },
			func(b *Batch) { b.Dropped = []string{"properties.html"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := validHeader(3)
			want, err := ParseHeader(h)
			if err != nil {
				t.Fatal(err)
			}
			tt.edit(h)
			tt.want(&want)
			got, err := ParseHeader(h)
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if !sameMeta(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	events := []string{
		`{"type":"track","event":"Signed Up","messageId":"m1"}`,
		`{"type":"page","name":"Home","messageId":"m2"}`,
		`{"type":"identify","userId":"u1","messageId":"m3"}`,
	}
	tests := []struct {
		name   string
		b      Batch
		events []string
		raw    []byte // NDJSON to compress instead of events, if set
	}{
		{name: "three events", events: events,
			b: Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 1, Last: 3, Count: 3}},
		{name: "degraded", events: events,
			b: Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 40, Last: 49, Count: 3,
				Oldest: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Level: 1, Dropped: []string{"context.page"}}},
		{name: "no final newline", events: events[:2],
			raw: []byte(events[0] + "\n" + events[1]),
			b:   Batch{Class: "ingest", First: 1, Last: 2, Count: 2}},
		{name: "blank lines are not events", events: events[:2],
			raw: []byte("\n" + events[0] + "\n\n\n" + events[1] + "\n\n"),
			b:   Batch{Class: "ingest", First: 1, Last: 2, Count: 2}},
		{name: "CRLF keeps the CR", events: []string{`{"a":1}` + "\r", `{"b":2}` + "\r"},
			raw: []byte("{\"a\":1}\r\n{\"b\":2}\r\n"),
			b:   Batch{Class: "ingest", First: 1, Last: 2, Count: 2}},
		{name: "empty batch", raw: []byte{},
			b: Batch{Class: "ingest", First: 1, Last: 1, Count: 0}},
		{name: "large batch", events: manyEvents(5000),
			b: Batch{Class: "backfill", First: 1, Last: 5000, Count: 5000}},
	}
	d := newDecoder(t, 0) // one Decoder for all: reuse must not leak state
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.raw != nil {
				body = compress(t, tt.raw)
			} else {
				body = encodeBody(t, tt.events...)
			}
			got, err := d.Decode(tt.b.Header(), body)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !sameMeta(got, tt.b) {
				t.Errorf("metadata:\n got %+v\nwant %+v", got, tt.b)
			}
			if len(got.Events) != len(tt.events) {
				t.Fatalf("got %d events, want %d", len(got.Events), len(tt.events))
			}
			for i, e := range got.Events {
				if string(e) != tt.events[i] {
					t.Errorf("event %d = %q, want %q", i, e, tt.events[i])
				}
			}
		})
	}
}

func manyEvents(n int) []string {
	evs := make([]string, n)
	for i := range evs {
		evs[i] = `{"type":"track","event":"Backfilled","n":` + strings.Repeat("7", i%20+1) + `}`
	}
	return evs
}

func TestDecodeReuse(t *testing.T) {
	// Events alias the Decoder's buffer until the next Decode; each
	// event's capacity ends at its length, so appending to one cannot
	// overwrite the next.
	d := newDecoder(t, 0)
	b := Batch{Class: "c", First: 1, Last: 2, Count: 2}
	got, err := d.Decode(b.Header(), encodeBody(t, `{"a":1}`, `{"b":2}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got.Events[0], "XXXXXXXX"...)
	if string(got.Events[1]) != `{"b":2}` {
		t.Errorf("append to event 0 overwrote event 1: %q", got.Events[1])
	}
	kept := bytes.Clone(got.Events[0])

	// A failed Decode after a good one returns no events.
	bad, err := d.Decode(b.Header(), encodeBody(t, `{"a":1}`))
	if !errors.Is(err, ErrBody) || bad.Events != nil {
		t.Errorf("Decode of a short body: events %q, err %v", bad.Events, err)
	}
	got, err = d.Decode(b.Header(), encodeBody(t, `{"c":3}`, `{"d":4}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Events[0]) != `{"c":3}` || string(kept) != `{"a":1}` {
		t.Errorf("after reuse: events %q, kept copy %q", got.Events, kept)
	}
}

func TestDecodeBodyErrors(t *testing.T) {
	good := encodeBody(t, `{"a":1}`, `{"b":2}`, `{"c":3}`)
	hdr := func(count int) nats.Header {
		b := Batch{Class: "ingest", First: 1, Last: 10, Count: count}
		return b.Header()
	}
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-2] ^= 0xff // inside the block or its checksum
	tests := []struct {
		name string
		max  int
		h    nats.Header
		body []byte
		msg  string // error text, or its prefix when it ends in "…"
	}{
		{"count too high", 0, hdr(4), good,
			"wire: bad body: 3 events in body, Sluice-Count says 4"},
		{"count too low", 0, hdr(2), good,
			"wire: bad body: 3 events in body, Sluice-Count says 2"},
		{"count zero, body has events", 0, hdr(0), good,
			"wire: bad body: 3 events in body, Sluice-Count says 0"},
		{"not zstd", 0, hdr(3), []byte(`{"a":1}` + "\n"),
			"wire: bad body: zstd: …"},
		{"gzip body", 0, hdr(3), []byte{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff},
			"wire: bad body: zstd: …"},
		{"truncated frame", 0, hdr(3), good[:len(good)-5],
			"wire: bad body: zstd: …"},
		{"corrupt frame", 0, hdr(3), corrupt,
			"wire: bad body: zstd: …"},
		{"frame then garbage", 0, hdr(3), append(bytes.Clone(good), "garbage"...),
			"wire: bad body: zstd: …"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDecoder(t, tt.max)
			b, err := d.Decode(tt.h, tt.body)
			checkErr(t, err, ErrBody, tt.msg)
			if b.Events != nil {
				t.Errorf("events on error: %q", b.Events)
			}
		})
	}
}

// checkErr fails t unless err is target and its text is msg, or starts with
// msg's prefix when msg ends in "…".
func checkErr(t *testing.T, err, target error, msg string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want errors.Is %v", err, target)
	}
	if prefix, ok := strings.CutSuffix(msg, "…"); ok {
		if !strings.HasPrefix(err.Error(), prefix) {
			t.Errorf("err = %q, want prefix %q", err, prefix)
		}
	} else if err.Error() != msg {
		t.Errorf("err = %q, want %q", err, msg)
	}
}

func TestDecodeMaxSize(t *testing.T) {
	// ndjson returns n events of 99 bytes plus a newline: 100n bytes.
	ndjson := func(n int) ([]byte, []string) {
		var raw []byte
		var evs []string
		for i := range n {
			e := `{"n":` + strings.Repeat("1", 92) + string(rune('0'+i%10)) + `}`
			raw = append(append(raw, e...), '\n')
			evs = append(evs, e)
		}
		return raw, evs
	}
	// streamed returns raw as a zstd frame that, unlike EncodeAll's, does
	// not declare its decompressed size.
	streamed := func(raw []byte) []byte {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstd.MinWindowSize))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(raw); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	tests := []struct {
		name string
		max  int
		n    int  // events of 100 bytes
		wrap bool // streamed frame, no content size
		ok   bool
		msg  string
	}{
		{"at the limit", 1000, 10, false, true, ""},
		{"one byte over", 999, 10, false, false,
			"wire: bad body: 1000 bytes decompressed, limit 999"},
		{"far over, content size declared", 4096, 100, false, false,
			"wire: bad body: zstd: decompressed size exceeds configured limit"},
		{"far over, streamed", 4096, 100, true, false,
			"wire: bad body: zstd: decompressed size exceeds configured limit"},
		{"at the limit, streamed", 2000, 20, true, true, ""},
		// Below zstd's 1 KiB minimum window, Decode enforces the limit.
		{"tiny limit, fits", 100, 1, false, true, ""},
		{"tiny limit, over", 100, 2, false, false,
			"wire: bad body: 200 bytes decompressed, limit 100"},
		{"tiny limit, over, streamed", 500, 6, true, false,
			"wire: bad body: 600 bytes decompressed, limit 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, evs := ndjson(tt.n)
			body := compress(t, raw)
			if tt.wrap {
				body = streamed(raw)
			}
			b := Batch{Class: "c", First: 1, Last: uint64(tt.n), Count: tt.n}
			d := newDecoder(t, tt.max)
			got, err := d.Decode(b.Header(), body)
			if tt.ok {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if len(got.Events) != len(evs) {
					t.Errorf("got %d events, want %d", len(got.Events), len(evs))
				}
				return
			}
			checkErr(t, err, ErrBody, tt.msg)
		})
	}
}

func TestNewDecoder(t *testing.T) {
	for _, m := range []int{-1, 0, 1, 100, 1023, 1024, DefaultMaxSize, 1 << 30} {
		d, err := NewDecoder(m)
		if err != nil {
			t.Errorf("NewDecoder(%d): %v", m, err)
			continue
		}
		want := m
		if m <= 0 {
			want = DefaultMaxSize
		}
		if d.max != want {
			t.Errorf("NewDecoder(%d).max = %d, want %d", m, d.max, want)
		}
		d.Close()
		d.Close() // idempotent
	}
}

func TestSplitLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"nil", "", nil},
		{"trailing newline", "a\nb\n", []string{"a", "b"}},
		{"no trailing newline", "a\nb", []string{"a", "b"}},
		{"one line, no newline", "{}", []string{"{}"}},
		{"one line", "{}\n", []string{"{}"}},
		{"only newline", "\n", nil},
		{"only newlines", "\n\n\n", nil},
		{"leading empty lines", "\n\na", []string{"a"}},
		{"empty lines between", "a\n\n\nb\n", []string{"a", "b"}},
		{"trailing empty lines", "a\n\n\n", []string{"a"}},
		{"CR kept", "a\r\nb\r\n", []string{"a\r", "b\r"}},
		{"lone CR is a line", "\r\n", []string{"\r"}},
		{"spaces are a line", " \n", []string{" "}},
		{"NUL is a line", "\x00", []string{"\x00"}},
		{"newline in JSON string is escaped", `{"s":"a\nb"}` + "\n", []string{`{"s":"a\nb"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitLines(nil, []byte(tt.in))
			var gotS []string
			for _, l := range got {
				gotS = append(gotS, string(l))
			}
			if !reflect.DeepEqual(gotS, tt.want) {
				t.Errorf("SplitLines(%q) = %q, want %q", tt.in, gotS, tt.want)
			}
		})
	}

	t.Run("appends to dst", func(t *testing.T) {
		dst := [][]byte{[]byte("x")}
		got := SplitLines(dst, []byte("a\nb"))
		if len(got) != 3 || string(got[0]) != "x" || string(got[1]) != "a" || string(got[2]) != "b" {
			t.Errorf("SplitLines(dst, ...) = %q", got)
		}
	})
	t.Run("lines alias input with capped capacity", func(t *testing.T) {
		in := []byte("ab\ncd\n")
		got := SplitLines(nil, in)
		if &got[0][0] != &in[0] || &got[1][0] != &in[3] {
			t.Error("lines do not alias the input")
		}
		for i, l := range got {
			if cap(l) != len(l) {
				t.Errorf("line %d: cap %d, len %d", i, cap(l), len(l))
			}
		}
	})
}

// A batch that names a dictionary is written as format version 2 and reads
// back with its dictionary id; one without stays version 1.
func TestHeaderDict(t *testing.T) {
	b := Batch{Class: "ingest", Spool: "s", First: 1, Last: 2, Count: 2, Dict: 40000}
	h := b.Header()
	if got := h.Get(HdrVersion); got != VersionDict {
		t.Fatalf("%s = %q, want %q", HdrVersion, got, VersionDict)
	}
	got, err := ParseHeader(h)
	if err != nil || got.Dict != 40000 {
		t.Fatalf("ParseHeader = %+v, %v; want Dict 40000", got, err)
	}
	b.Dict = 0
	if h := b.Header(); h.Get(HdrVersion) != Version || h[HdrDict] != nil {
		t.Fatalf("no dictionary: header %v, want version %s and no %s", h, Version, HdrDict)
	}
}
