package wire

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode from validSeeds")

// decodeSeed is one FuzzDecode input: the value of each header ("" leaves
// it out) and the body.
type decodeSeed struct {
	name                             string // file name in testdata/fuzz/FuzzDecode
	version, encoding, node, spool   string
	class, count, rng, oldest, level string
	dropped                          string
	body                             []byte
}

func (s decodeSeed) header() nats.Header {
	return fuzzHeader(s.version, s.encoding, s.node, s.spool, s.class, s.count, s.rng, s.oldest, s.level, s.dropped)
}

func fuzzHeader(version, encoding, node, spool, class, count, rng, oldest, level, dropped string) nats.Header {
	h := nats.Header{}
	for _, kv := range [...][2]string{
		{HdrVersion, version}, {HdrEncoding, encoding}, {HdrNode, node}, {HdrSpool, spool},
		{HdrClass, class}, {HdrCount, count}, {HdrRange, rng}, {HdrOldest, oldest},
		{HdrLevel, level}, {HdrDropped, dropped},
	} {
		if kv[1] != "" {
			h.Set(kv[0], kv[1])
		}
	}
	return h
}

// validSeeds are well-formed envelopes, the committed seed corpus.
func validSeeds(t testing.TB) []decodeSeed {
	return []decodeSeed{
		{name: "valid-minimal", version: "1", encoding: "zstd", node: "edge-1", spool: "sp1",
			class: "ingest", count: "1", rng: "1-1",
			body: encodeBody(t, `{"type":"track","event":"Signed Up","messageId":"m1"}`)},
		{name: "valid-degraded", version: "1", encoding: "zstd", node: "edge-1", spool: "sp1",
			class: "ingest", count: "3", rng: "10-19", oldest: "2026-03-01T12:04:05.123456789Z",
			level: "2", dropped: "context.userAgent,properties.html",
			body: encodeBody(t,
				`{"type":"page","name":"Home","messageId":"m10"}`,
				`{"type":"track","event":"Clicked","messageId":"m14"}`,
				`{"type":"identify","userId":"u1","messageId":"m19"}`)},
		{name: "valid-empty", version: "1", encoding: "zstd", node: "edge-2", spool: "sp9",
			class: "backfill", count: "0", rng: "7-7", body: compress(t, nil)},
		{name: "valid-blank-lines", version: "1", encoding: "zstd", node: "edge-1", spool: "sp1",
			class: "critical", count: "2", rng: "41-42", oldest: "2026-03-01T13:04:05+01:00", level: "0",
			body: compress(t, []byte("\n{\"alert\":\"fraud\",\"score\":0.97}\n\n{\"alert\":\"ünïcödé ✓\"}"))},
		{name: "valid-many", version: "1", encoding: "zstd", node: "edge-3", spool: "01J9ZQ4",
			class: "replication", count: "200", rng: "1000-1299", level: "3", dropped: "payload",
			body: encodeBody(t, manyEvents(200)...)},
	}
}

// FuzzDecode feeds arbitrary headers and bodies to Decode. It must never
// panic, every error must be one of the package's sentinels, and a batch
// that decodes must encode (Header plus a new zstd frame of its events) to
// a batch that decodes to the same metadata and events.
func FuzzDecode(f *testing.F) {
	for _, s := range validSeeds(f) {
		f.Add(s.version, s.encoding, s.node, s.spool, s.class, s.count, s.rng, s.oldest, s.level, s.dropped, s.body)
	}
	one := encodeBody(f, `{"a":1}`)
	corrupt := bytes.Clone(one)
	corrupt[len(corrupt)-1] ^= 0x55
	for _, s := range []decodeSeed{
		{},
		{version: "2", encoding: "zstd", class: "c", count: "1", rng: "1-1", body: one},
		{version: "1", encoding: "gzip", class: "c", count: "1", rng: "1-1", body: one},
		{version: "1", encoding: "zstd", class: "c", count: "2", rng: "1-2", body: one},
		{version: "1", encoding: "zstd", class: "c", count: "1", rng: "1-1", body: []byte(`{"a":1}`)},
		{version: "1", encoding: "zstd", class: "c", count: "1", rng: "1-1", body: corrupt},
		{version: "1", encoding: "zstd", class: "c", count: "1", rng: "0-18446744073709551615", body: one},
		{version: "1", encoding: "zstd", class: "c", count: "1", rng: "1-1", oldest: "9999-12-31T23:59:59-01:00", body: one},
		{version: "1", encoding: "zstd", class: "c", count: "1", rng: "1-1", level: "4", body: one},
		{version: "1", encoding: "zstd", class: "c", count: "1", rng: "1-1", dropped: ",", body: one},
	} {
		f.Add(s.version, s.encoding, s.node, s.spool, s.class, s.count, s.rng, s.oldest, s.level, s.dropped, s.body)
	}

	const maxSize = 1 << 20
	d := newDecoder(f, maxSize)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { enc.Close() })

	f.Fuzz(func(t *testing.T, version, encoding, node, spool, class, count, rng, oldest, level, dropped string, body []byte) {
		h := fuzzHeader(version, encoding, node, spool, class, count, rng, oldest, level, dropped)
		b, err := d.Decode(h, body)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("Decode error is no sentinel: %v", err)
			}
			if b.Events != nil {
				t.Fatalf("Decode returned events with error %v", err)
			}
			return
		}
		if len(b.Events) != b.Count {
			t.Fatalf("%d events, Count %d", len(b.Events), b.Count)
		}
		if b.Last < b.First || b.Last-b.First < uint64(max(b.Count, 1)-1) {
			t.Fatalf("range %d-%d for %d events", b.First, b.Last, b.Count)
		}
		if b.Level < 0 || b.Level > 3 {
			t.Fatalf("Level %d", b.Level)
		}
		var size int
		events := make([][]byte, len(b.Events))
		for i, e := range b.Events {
			if len(e) == 0 || bytes.IndexByte(e, '\n') >= 0 {
				t.Fatalf("event %d = %q", i, e)
			}
			size += len(e) + 1
			events[i] = bytes.Clone(e)
		}
		if size > maxSize+1 { // the last line may lack its newline
			t.Fatalf("%d bytes of events, limit %d", size, maxSize)
		}

		// Re-encode as the edge would, and decode again.
		var ndjson []byte
		for _, e := range events {
			ndjson = append(append(ndjson, e...), '\n')
		}
		b2, err := d.Decode(b.Header(), enc.EncodeAll(ndjson, nil))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v\nbatch %+v\nheader %v", err, b, b.Header())
		}
		if !sameMeta(b2, b) {
			t.Fatalf("metadata changed in round trip:\n got %+v\nwant %+v", b2, b)
		}
		if !slices.EqualFunc(b2.Events, events, bytes.Equal) {
			t.Fatalf("events changed in round trip:\n got %q\nwant %q", b2.Events, events)
		}
	})
}

// isSentinel reports whether err is one of the package's errors.
func isSentinel(err error) bool {
	for _, s := range []error{ErrVersion, ErrHeader, ErrBody, ErrDict, ErrBadDict} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzDecodeDict feeds version 2 batches with arbitrary Sluice-Dict
// values, bodies and dictionaries to a Decoder whose source holds the
// trained dictionary under its id and serves the fuzzer's bytes for any
// other id. It must never panic, every error must be a sentinel, and what
// decodes stays within the size bound and matches its count; a batch that
// decodes with the trained dictionary encodes with it again to the same
// events. Its inputs are large (a dictionary, a body of real events), so
// bound the minimizing of each new input: go test -run XXX -fuzz
// FuzzDecodeDict -fuzzminimizetime 100x ./wire
func FuzzDecodeDict(f *testing.F) {
	raw := trainedDict(f)
	h, body, _ := dictBatch(f, raw)
	_, otherBody, _ := dictBatch(f, withID(raw, testDictID+1))
	small, smallBody, _ := dictBatch(f, raw, sampleEvents(f)[150:152]...)
	f.Add(h.Get(HdrDict), h.Get(HdrCount), body, []byte(nil))
	f.Add(small.Get(HdrDict), "2", smallBody, []byte(nil))
	f.Add("40001", "50", otherBody, withID(raw, testDictID+1))
	f.Add("40001", "50", otherBody, withID(raw, testDictID))
	f.Add("40001", "50", otherBody, raw[:len(raw)/2])
	f.Add("40000", "50", otherBody, []byte(nil))
	f.Add("32768", "1", encodeBody(f, `{"a":1}`), []byte(dictMagic+"\x00\x80\x00\x00"))
	f.Add("2147483647", "0", []byte{}, []byte(nil))
	f.Add("0", "1", body, raw)

	const maxSize = 1 << 20
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderDict(raw))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { enc.Close() })

	f.Fuzz(func(t *testing.T, dictID, count string, body, served []byte) {
		// A fresh Decoder: one that kept the dictionary of an earlier input
		// would make inputs depend on each other.
		d, err := NewDecoder(maxSize, WithDictionaries(&fuzzDicts{trained: raw, served: served}))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		h := fuzzHeader(VersionDict, Encoding, "edge-1", "sp1", "ingest", count, "1-1000000", "", "", "")
		h.Set(HdrDict, dictID)
		b, err := d.Decode(h, body)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("Decode error is no sentinel: %v", err)
			}
			if b.Events != nil {
				t.Fatalf("Decode returned events with error %v", err)
			}
			return
		}
		if len(b.Events) != b.Count || b.Dict < MinDictID {
			t.Fatalf("%d events, Count %d, Dict %d", len(b.Events), b.Count, b.Dict)
		}
		var ndjson []byte
		for _, e := range b.Events {
			ndjson = append(append(ndjson, e...), '\n')
		}
		if len(ndjson) > maxSize+1 { // the last line may lack its newline
			t.Fatalf("%d bytes of events, limit %d", len(ndjson), maxSize)
		}
		if b.Dict != testDictID {
			return
		}
		events := make([][]byte, len(b.Events))
		for i, e := range b.Events {
			events[i] = bytes.Clone(e)
		}
		b2, err := d.Decode(b.Header(), enc.EncodeAll(ndjson, nil))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if !slices.EqualFunc(b2.Events, events, bytes.Equal) {
			t.Fatalf("events changed in round trip")
		}
	})
}

// fuzzDicts serves the trained dictionary under its id and served under
// any other.
type fuzzDicts struct {
	trained, served []byte
}

func (s *fuzzDicts) Dictionary(_ context.Context, id uint32) ([]byte, error) {
	if id == testDictID {
		return s.trained, nil
	}
	if s.served == nil {
		return nil, errNoSuchDict
	}
	return s.served, nil
}

// FuzzSplitLines checks SplitLines against bytes.Split without empty lines.
func FuzzSplitLines(f *testing.F) {
	for _, s := range []string{
		"", "\n", "\n\n", "a", "a\n", "a\nb", "a\nb\n", "\na\n\nb\n\n", "a\r\nb\r\n",
		`{"s":"a\nb"}` + "\n", "\x00\n\xff",
	} {
		f.Add([]byte(s), 0)
		f.Add([]byte(s), 2)
	}
	f.Fuzz(func(t *testing.T, in []byte, prefix int) {
		prefix = min(max(prefix, 0), 8)
		var dst [][]byte
		for i := range prefix {
			dst = append(dst, []byte{'p', byte(i)})
		}
		orig := bytes.Clone(in)
		got := SplitLines(dst, in)

		if !bytes.Equal(in, orig) {
			t.Fatal("SplitLines modified its input")
		}
		if len(got) < prefix {
			t.Fatalf("dst shrank from %d to %d", prefix, len(got))
		}
		for i := range prefix {
			if !bytes.Equal(got[i], []byte{'p', byte(i)}) {
				t.Fatalf("dst[%d] changed to %q", i, got[i])
			}
		}
		var want [][]byte
		for _, l := range bytes.Split(in, []byte{'\n'}) {
			if len(l) > 0 {
				want = append(want, l)
			}
		}
		lines := got[prefix:]
		if !slices.EqualFunc(lines, want, bytes.Equal) {
			t.Fatalf("SplitLines(%q) = %q, want %q", in, lines, want)
		}
		for i, l := range lines {
			if cap(l) != len(l) {
				t.Fatalf("line %d: cap %d > len %d", i, cap(l), len(l))
			}
		}
	})
}

// TestFuzzDecodeCorpus checks that the committed FuzzDecode seeds are valid
// envelopes, so the fuzzer starts from batches that decode. Run with
// -update-corpus to rewrite them from validSeeds.
func TestFuzzDecodeCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range validSeeds(t) {
			var b strings.Builder
			b.WriteString("go test fuzz v1\n")
			for _, v := range []string{s.version, s.encoding, s.node, s.spool, s.class, s.count, s.rng, s.oldest, s.level, s.dropped} {
				b.WriteString("string(" + strconv.Quote(v) + ")\n")
			}
			b.WriteString("[]byte(" + strconv.Quote(string(s.body)) + ")\n")
			if err := os.WriteFile(filepath.Join(dir, s.name), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < len(validSeeds(t)) {
		t.Fatalf("%d files in %s, want at least %d (run with -update-corpus)", len(files), dir, len(validSeeds(t)))
	}
	d := newDecoder(t, 0)
	for _, file := range files {
		if !strings.HasPrefix(filepath.Base(file), "valid-") {
			continue // a crasher the fuzzer found, kept as a regression input
		}
		t.Run(filepath.Base(file), func(t *testing.T) {
			s := readSeed(t, file)
			b, err := d.Decode(s.header(), s.body)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if strconv.Itoa(b.Count) != s.count || len(b.Events) != b.Count {
				t.Errorf("Count %d, %d events, header says %s", b.Count, len(b.Events), s.count)
			}
		})
	}
}

// readSeed parses a `go test fuzz v1` file written for FuzzDecode.
func readSeed(t *testing.T, file string) decodeSeed {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 12 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: want a go test fuzz v1 header and 11 values, got %d lines", file, len(lines))
	}
	var vals []string
	for i, l := range lines[1:] {
		typ := "string("
		if i == 10 {
			typ = "[]byte("
		}
		lit, ok := strings.CutPrefix(l, typ)
		lit, ok2 := strings.CutSuffix(lit, ")")
		v, err := strconv.Unquote(lit)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s line %d: want %s\"...\"): %q", file, i+2, typ, l)
		}
		vals = append(vals, v)
	}
	return decodeSeed{
		version: vals[0], encoding: vals[1], node: vals[2], spool: vals[3], class: vals[4],
		count: vals[5], rng: vals[6], oldest: vals[7], level: vals[8], dropped: vals[9],
		body: []byte(vals[10]),
	}
}
