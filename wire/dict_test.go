package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// testDictID is the id of the dictionary trainedDict returns.
const testDictID = 40000

// sampleEvents returns the 200 real Segment events of testdata (see its
// README): the first 150 train dictionaries, the other 50 fill batches.
func sampleEvents(t testing.TB) [][]byte {
	t.Helper()
	data, err := os.ReadFile("testdata/segment.sample.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	evs := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(evs) != 200 {
		t.Fatalf("testdata/segment.sample.ndjson has %d events, want 200", len(evs))
	}
	return evs
}

var trained struct {
	once sync.Once
	dict []byte
	err  error
}

// trainedDict returns a dictionary with id testDictID trained by
// klauspost/compress/dict on the first 150 sample events, as the edge
// trains one on a class's recent events. It is trained once per test
// binary.
func trainedDict(t testing.TB) []byte {
	t.Helper()
	evs := sampleEvents(t)
	trained.once.Do(func() {
		trained.dict, trained.err = dict.BuildZstdDict(evs[:150], dict.Options{
			MaxDictSize: 16 << 10, HashBytes: 6, ZstdDictID: testDictID, ZstdLevel: zstd.SpeedFastest})
	})
	if trained.err != nil {
		t.Fatalf("train dictionary: %v", trained.err)
	}
	return trained.dict
}

// withID returns a copy of dictionary raw that says it is id: the same
// tables and content under another name.
func withID(raw []byte, id uint32) []byte {
	c := bytes.Clone(raw)
	binary.LittleEndian.PutUint32(c[4:8], id)
	return c
}

// dictBatch returns the header and body of a version 2 batch of events
// (the 50 held-out sample events if none are given) compressed with
// dictionary raw, as the edge encodes one.
func dictBatch(t testing.TB, raw []byte, events ...[]byte) (nats.Header, []byte, [][]byte) {
	t.Helper()
	if events == nil {
		events = sampleEvents(t)[150:]
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderDict(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var ndjson []byte
	for _, e := range events {
		ndjson = append(append(ndjson, e...), '\n')
	}
	id := binary.LittleEndian.Uint32(raw[4:8])
	b := Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 1, Last: uint64(max(len(events), 1)), Count: len(events), Dict: id}
	return b.Header(), enc.EncodeAll(ndjson, nil), events
}

// mapDicts is a Dictionaries over a map, counting its lookups.
type mapDicts struct {
	mu    sync.Mutex
	m     map[uint32][]byte
	calls map[uint32]int
}

func newMapDicts(dicts ...[]byte) *mapDicts {
	s := &mapDicts{m: map[uint32][]byte{}, calls: map[uint32]int{}}
	for _, d := range dicts {
		s.m[binary.LittleEndian.Uint32(d[4:8])] = d
	}
	return s
}

var errNoSuchDict = errors.New("no such dictionary")

func (s *mapDicts) Dictionary(ctx context.Context, id uint32) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[id]++
	if raw, ok := s.m[id]; ok {
		return raw, nil
	}
	return nil, errNoSuchDict
}

func (s *mapDicts) put(id uint32, raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[id] = raw
}

func (s *mapDicts) lookups(id uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

func newDictDecoder(t testing.TB, src Dictionaries) *Decoder {
	t.Helper()
	d, err := NewDecoder(0, WithDictionaries(src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// checkEvents fails t unless b holds exactly want.
func checkEvents(t *testing.T, b Batch, want [][]byte) {
	t.Helper()
	if b.Count != len(want) || !slices.EqualFunc(b.Events, want, bytes.Equal) {
		t.Fatalf("Count %d, %d events; want the %d events encoded (first differing index %d)",
			b.Count, len(b.Events), len(want), firstDiff(b.Events, want))
	}
}

func firstDiff(a, b [][]byte) int {
	for i := range min(len(a), len(b)) {
		if !bytes.Equal(a[i], b[i]) {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestDecodeDict decodes a version 2 batch of real events with the
// dictionary it was compressed with, gets the dictionary once, and still
// decodes version 1 batches on the same Decoder.
func TestDecodeDict(t *testing.T) {
	raw := trainedDict(t)
	src := newMapDicts(raw)
	d := newDictDecoder(t, src)
	h, body, want := dictBatch(t, raw)
	if h.Get(HdrVersion) != VersionDict || h.Get(HdrDict) != "40000" {
		t.Fatalf("header %v: want version 2 naming dictionary 40000", h)
	}
	var zh zstd.Header
	if err := zh.Decode(body); err != nil || zh.DictionaryID != testDictID {
		t.Fatalf("frame names dictionary %d (%v), want %d", zh.DictionaryID, err, testDictID)
	}
	for range 3 {
		b, err := d.DecodeContext(t.Context(), h, body)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if b.Dict != testDictID {
			t.Errorf("Dict = %d, want %d", b.Dict, testDictID)
		}
		checkEvents(t, b, want)

		v1 := Batch{Class: "c", First: 1, Last: 2, Count: 2}
		b, err = d.Decode(v1.Header(), encodeBody(t, `{"a":1}`, `{"b":2}`))
		if err != nil || len(b.Events) != 2 || b.Dict != 0 {
			t.Fatalf("version 1 batch after a version 2 one: %d events, Dict %d, err %v", len(b.Events), b.Dict, err)
		}
	}
	if n := src.lookups(testDictID); n != 1 {
		t.Errorf("dictionary looked up %d times, want once: the Decoder keeps it", n)
	}

	// An empty batch: zstd writes the frame of an empty input without its
	// dictionary, and that decodes without a lookup.
	eh, ebody, _ := dictBatch(t, withID(raw, 50000), [][]byte{}...)
	if b, err := d.Decode(eh, ebody); err != nil || b.Count != 0 || len(b.Events) != 0 {
		t.Errorf("empty version 2 batch: %+v, %v", b, err)
	}
	if n := src.lookups(50000); n != 0 {
		t.Errorf("empty batch looked its dictionary up %d times", n)
	}
}

// TestDecodeDictUnavailable: a dictionary the source does not have is
// ErrDict wrapping the source's error, and the same batch decodes once the
// source has it. A Decoder without a source says so.
func TestDecodeDictUnavailable(t *testing.T) {
	raw := trainedDict(t)
	h, body, want := dictBatch(t, raw)

	plain := newDecoder(t, 0)
	_, err := plain.Decode(h, body)
	checkErr(t, err, ErrDict, "wire: dictionary unavailable: dictionary 40000: this Decoder has no dictionary source (wire.WithDictionaries)")

	src := newMapDicts()
	d := newDictDecoder(t, src)
	for range 2 {
		b, err := d.Decode(h, body)
		checkErr(t, err, ErrDict, "wire: dictionary unavailable: dictionary 40000: no such dictionary")
		if !errors.Is(err, errNoSuchDict) || b.Events != nil {
			t.Errorf("err %v does not wrap the source's error, or events %d on error", err, len(b.Events))
		}
	}
	src.put(testDictID, raw)
	b, err := d.Decode(h, body)
	if err != nil {
		t.Fatalf("Decode once the dictionary exists: %v", err)
	}
	checkEvents(t, b, want)
	if n := src.lookups(testDictID); n != 3 {
		t.Errorf("%d lookups, want 3: a miss is not remembered", n)
	}
}

// TestDecodeDictErrors: frames that name another dictionary than their
// header, and sources that answer with something else than the dictionary
// asked for, are precise errors.
func TestDecodeDictErrors(t *testing.T) {
	raw := trainedDict(t)
	h, body, _ := dictBatch(t, raw)
	other := withID(raw, testDictID+1)
	_, otherBody, _ := dictBatch(t, other)
	plainBody := encodeBody(t, `{"a":1}`)
	truncTables := append([]byte(dictMagic), 0x40, 0x9c, 0, 0) // id 40000, tables cut off
	truncTables = append(truncTables, bytes.Repeat([]byte{0xff}, 30)...)
	v1 := validHeader(50)
	hdr := func(id string) nats.Header {
		c := nats.Header(http.Header(h).Clone())
		c.Set(HdrDict, id)
		return c
	}
	tests := []struct {
		name   string
		h      nats.Header
		body   []byte
		served []byte // what the source answers for id 40000
		is     error
		msg    string
	}{
		{"frame names another dictionary", h, otherBody, raw, ErrBody,
			"wire: bad body: zstd frame 0 names dictionary 40001, Sluice-Dict says 40000"},
		{"header names another dictionary", hdr("40001"), body, raw, ErrBody,
			"wire: bad body: zstd frame 0 names dictionary 40000, Sluice-Dict says 40001"},
		{"version 1 batch of a dictionary frame", v1, body, raw, ErrBody,
			"wire: bad body: zstd: unknown dictionary"},
		{"second frame names another dictionary", h, append(bytes.Clone(body), otherBody...), raw, ErrBody,
			"wire: bad body: zstd frame 1 names dictionary 40001, Sluice-Dict says 40000"},
		{"frame without a dictionary, wrong count", h, plainBody, nil, ErrBody,
			"wire: bad body: 1 events in body, Sluice-Count says 50"},
		{"truncated frame", h, body[:len(body)-7], raw, ErrBody,
			"wire: bad body: zstd frame 0: truncated …"},
		{"frame then garbage", h, append(bytes.Clone(body), "garbage"...), raw, ErrBody,
			"wire: bad body: zstd frame 1: invalid input: magic number mismatch"},
		{"not zstd", h, []byte(`{"a":1}`), raw, ErrBody,
			"wire: bad body: zstd frame 0: invalid input: magic number mismatch"},
		{"source serves another dictionary", h, body, other, ErrBadDict,
			"wire: bad dictionary 40000: the dictionary says it is 40001"},
		{"source serves no dictionary", h, body, []byte(`{"not":"a dictionary"}`), ErrBadDict,
			"wire: bad dictionary 40000: not in zstd's dictionary format (no magic number)"},
		{"source serves a few bytes", h, body, []byte{0x37, 0xa4}, ErrBadDict,
			"wire: bad dictionary 40000: not in zstd's dictionary format (no magic number)"},
		{"source serves too much", h, body, append(bytes.Clone(raw), make([]byte, MaxDictSize)...), ErrBadDict,
			fmt.Sprintf("wire: bad dictionary 40000: %d bytes, limit %d", len(raw)+MaxDictSize, MaxDictSize)},
		{"source serves cut tables", h, body, truncTables, ErrBadDict,
			"wire: bad dictionary 40000: …"},
		{"source serves a dictionary that decodes wrong", h, body, withID(other[:len(other)-1], testDictID), ErrBody,
			"wire: bad body: …"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMapDicts()
			if tt.served != nil {
				src.put(testDictID, tt.served)
			}
			d := newDictDecoder(t, src)
			b, err := d.Decode(tt.h, tt.body)
			checkErr(t, err, tt.is, tt.msg)
			if b.Events != nil {
				t.Errorf("%d events on error", len(b.Events))
			}
			if strings.Contains(tt.name, "names another") && src.lookups(testDictID)+src.lookups(testDictID+1) != 0 {
				t.Errorf("a mismatched frame made the Decoder look a dictionary up")
			}
			// A bad dictionary is not kept: the source is asked again.
			if errors.Is(err, ErrBadDict) {
				d.Decode(tt.h, tt.body)
				if n := src.lookups(testDictID); n != 2 {
					t.Errorf("%d lookups after two decodes with a bad dictionary, want 2", n)
				}
			}
		})
	}
}

// TestDecoderDictBound: a Decoder keeps the 16 dictionaries it used last
// and gets an evicted one again when a batch names it.
func TestDecoderDictBound(t *testing.T) {
	raw := trainedDict(t)
	src := newMapDicts()
	d := newDictDecoder(t, src)
	type batch struct {
		h    nats.Header
		body []byte
	}
	var batches []batch
	for i := range decoderDicts + 1 {
		dd := withID(raw, testDictID+uint32(i))
		src.put(testDictID+uint32(i), dd)
		h, body, _ := dictBatch(t, dd, sampleEvents(t)[150+i:152+i]...)
		batches = append(batches, batch{h, body})
	}
	decode := func(i int) {
		t.Helper()
		if _, err := d.Decode(batches[i].h, batches[i].body); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	for i := range decoderDicts {
		decode(i)
	}
	decode(0) // the most recently used now; 1 is the least
	decode(decoderDicts)
	if len(d.dictIDs) != decoderDicts {
		t.Fatalf("Decoder holds %d dictionaries, bound %d", len(d.dictIDs), decoderDicts)
	}
	decode(0)
	decode(1)
	for i, want := range map[int]int{0: 1, 1: 2, 2: 1, decoderDicts: 1} {
		if n := src.lookups(testDictID + uint32(i)); n != want {
			t.Errorf("dictionary %d looked up %d times, want %d", i, n, want)
		}
	}
}

// BenchmarkDecodeDict compares decoding held-out sample events (real
// Segment page views, about 730 bytes each) compressed without and with the
// dictionary trained on the other 150, at the edge's default level: a
// batch of 5 events, where a dictionary pays most, and one of 50.
// Each run measures both in turn, so repeat the run to interleave them:
// for i in 1 2 3 4; do go test -run XXX -bench DecodeDict ./wire; done
func BenchmarkDecodeDict(b *testing.B) {
	raw := trainedDict(b)
	for _, n := range []int{5, 50} {
		evs := sampleEvents(b)[150 : 150+n]
		var ndjson []byte
		for _, e := range evs {
			ndjson = append(append(ndjson, e...), '\n')
		}
		plainBatch := Batch{Class: "ingest", First: 1, Last: uint64(n), Count: n}
		dictHeader, dictBody, _ := dictBatch(b, raw, evs...)
		for _, bc := range []struct {
			name string
			h    nats.Header
			body []byte
		}{
			{"plain", plainBatch.Header(), compress(b, ndjson)},
			{"dict", dictHeader, dictBody},
		} {
			b.Run(fmt.Sprintf("events=%d/%s", n, bc.name), func(b *testing.B) {
				d := newDictDecoder(b, newMapDicts(raw))
				b.ReportAllocs()
				b.SetBytes(int64(len(ndjson)))
				for b.Loop() {
					if _, err := d.Decode(bc.h, bc.body); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(bc.body)), "wire-bytes")
			})
		}
	}
}
