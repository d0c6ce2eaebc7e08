package aggregator

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

// segmentEvents reads the real Segment events of testdata (see its
// README), or of the file SLUICE_SEGMENT_EVENTS names.
func segmentEvents(t testing.TB) [][]byte {
	t.Helper()
	path := "testdata/segment.events.ndjson"
	if p := os.Getenv("SLUICE_SEGMENT_EVENTS"); p != "" {
		path = p
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		evs = append(evs, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestTrain trains on real events and on events a dictionary cannot
// help (random hex, no two alike), and checks what each mode adopts.
func TestTrain(t *testing.T) {
	real := segmentEvents(t)
	// Events whose only common part is their 12-byte frame: a dictionary
	// has little to offer.
	rng := rand.New(rand.NewPCG(1, 2))
	var noise [][]byte
	for range 400 {
		b := []byte(`{"k":"`)
		for range 600 {
			b = append(b, "0123456789abcdef"[rng.IntN(16)])
		}
		noise = append(noise, append(b, `"}`...))
	}
	tests := []struct {
		name       string
		samples    [][]byte
		err        error
		auto, on   bool
		wantGainGT float64
	}{
		{name: "segment", samples: real, auto: true, on: true, wantGainGT: 1.1},
		{name: "too few", samples: real[:100], err: errDictSamples},
		{name: "noise", samples: noise, auto: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := train(tc.samples, trainSpec{level: zstd.SpeedFastest, maxSize: 8 << 10, batchBytes: 16 << 10, id: 40000})
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("held out %d B: %d B without, %d B with (ratio %.2f → %.2f, gain %.2f)",
				d.heldRaw, d.plainBytes, d.dictBytes, d.plainRatio(), d.ratio(), d.gain())
			if d.heldRaw == 0 || d.plainBytes == 0 || d.dictBytes == 0 {
				t.Fatalf("nothing measured: %+v", d)
			}
			info, err := zstd.InspectDictionary(d.raw)
			if err != nil || info.ID() != 40000 {
				t.Fatalf("dictionary id %v, %v", info, err)
			}
			if got := adopt(DictAuto, d, 1.1); got != tc.auto {
				t.Errorf("auto adopts %v, want %v (gain %.3f)", got, tc.auto, d.gain())
			}
			if tc.on && !adopt(DictOn, d, 1.1) {
				t.Errorf("on does not adopt a gain of %.3f", d.gain())
			}
			if adopt(DictOff, d, 1.1) {
				t.Error("off adopts")
			}
			if tc.wantGainGT > 0 && d.gain() <= tc.wantGainGT {
				t.Errorf("gain %.3f, want > %v", d.gain(), tc.wantGainGT)
			}
		})
	}
}

// TestAdoptDrift is the step table of adopt and drifted.
func TestAdoptDrift(t *testing.T) {
	d := func(raw, plain, dict int) *dictionary {
		return &dictionary{heldRaw: raw, plainBytes: plain, dictBytes: dict}
	}
	adopts := []struct {
		mode     DictMode
		d        *dictionary
		min      float64
		want     bool
		scenario string
	}{
		{DictAuto, d(1000, 110, 100), 1.1, true, "gain exactly the threshold"},
		{DictAuto, d(1000, 109, 100), 1.1, false, "just below"},
		{"", d(1000, 200, 100), 1.1, true, "empty mode is auto"},
		{DictOn, d(1000, 101, 100), 1.1, true, "on: any gain"},
		{DictOn, d(1000, 100, 100), 1.1, false, "on: no gain"},
		{DictOn, d(1000, 90, 100), 1.1, false, "on: a loss"},
		{DictOff, d(1000, 500, 100), 1.1, false, "off never"},
	}
	for _, a := range adopts {
		if got := adopt(a.mode, a.d, a.min); got != a.want {
			t.Errorf("%s: adopt(%s, gain %.3f, %v) = %v", a.scenario, a.mode, a.d.gain(), a.min, got)
		}
	}
	cur := d(1000, 150, 100) // ratio 10 at adoption
	drifts := []struct {
		now  *dictionary
		want bool
	}{
		{d(1000, 150, 100), false}, // same
		{d(1000, 150, 105), false}, // 9.52 ≥ 9.5
		{d(1000, 150, 106), true},  // 9.43 < 9.5
		{d(1000, 150, 50), false},  // better
	}
	for _, s := range drifts {
		if got := drifted(cur, s.now); got != s.want {
			t.Errorf("drifted(ratio %.2f → %.2f) = %v, want %v", cur.ratio(), s.now.ratio(), got, s.want)
		}
	}
}

// TestSampler checks the sampler's bounds: bytes, no duplicates, oldest
// out first, one line in sampleStride, ready once a quarter full.
func TestSampler(t *testing.T) {
	s := newSampler(64 << 10)
	var text []byte
	for i := range 8000 {
		text = fmt.Appendf(text, `{"n":%d,"pad":"%0100d"}`+"\n", i, i)
	}
	s.add(text)
	s.add(text) // the same events again: no new samples
	got := s.snapshot()
	if s.bytes > s.max {
		t.Fatalf("%d bytes held, max %d", s.bytes, s.max)
	}
	seen := map[string]bool{}
	total := 0
	for _, smp := range got {
		if seen[string(smp)] {
			t.Fatalf("duplicate sample %s", smp)
		}
		seen[string(smp)] = true
		total += len(smp)
	}
	if total != s.bytes || len(seen) != len(s.seen) {
		t.Fatalf("accounting: %d bytes in %d samples, sampler says %d bytes, %d hashes", total, len(got), s.bytes, len(s.seen))
	}
	// 8000 lines, one in 8: 1000 picked; the newest 550 fill 64 KiB
	// (119 bytes each from n = 1000 on).
	if len(got) != (64<<10)/119 {
		t.Fatalf("%d samples, want %d", len(got), (64<<10)/119)
	}
	if !isClosed(s.ready) {
		t.Fatal("not ready")
	}
	// The newest stay: the last sample is of the last 8 lines.
	var last struct{ n int }
	if _, err := fmt.Sscanf(string(got[len(got)-1]), `{"n":%d`, &last.n); err != nil || last.n < 8000-sampleStride {
		t.Fatalf("last sample %s", got[len(got)-1])
	}
}

// TestWithDictID renames a trained dictionary and checks that frames
// made with it name the new id and decode with it.
func TestWithDictID(t *testing.T) {
	d, err := train(segmentEvents(t), trainSpec{level: zstd.SpeedFastest, maxSize: 8 << 10, batchBytes: 16 << 10, id: 40000})
	if err != nil {
		t.Fatal(err)
	}
	raw := withDictID(d.raw, wire.MaxDictID)
	info, err := zstd.InspectDictionary(raw)
	if err != nil || info.ID() != wire.MaxDictID {
		t.Fatalf("renamed: %v, %v", info, err)
	}
	if info0, _ := zstd.InspectDictionary(d.raw); info0.ID() != 40000 {
		t.Fatal("withDictID changed its argument")
	}
	nd := &dictionary{id: wire.MaxDictID, raw: raw}
	if err := nd.measure(segmentEvents(t)[:50], 16<<10, zstd.SpeedFastest); err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderDict(raw))
	defer enc.Close()
	var h zstd.Header
	if err := h.Decode(enc.EncodeAll([]byte(`{"a":1}`+"\n"), nil)); err != nil || h.DictionaryID != wire.MaxDictID {
		t.Fatalf("frame names dictionary %d, %v", h.DictionaryID, err)
	}
}

// BenchmarkDictRatio measures what a class's dictionary buys on real
// events (issue 13's figure: ≥ 1.3× the ratio without one for batches of
// ≤ 16 KB compressed). The events' first half are the samples a class
// holds in steady state (its newest DictOptions.SampleBytes, default
// 2 MiB), trained at the default MaxSize; the second half, in order, is
// cut in batches of each raw size and compressed without and with the
// dictionary (each with a fresh encoder, the latter decoded and
// compared). Each op compresses the second half with the dictionary. On
// the whole capture:
//
//	SLUICE_SEGMENT_EVENTS=<path>/segment.events.ndjson go test -run '^$' -bench DictRatio -benchtime 1x ./aggregator
func BenchmarkDictRatio(b *testing.B) {
	evs := segmentEvents(b)
	half := len(evs) / 2
	fit, test := evs[:half], evs[half:]
	var o DictOptions
	if err := o.setDefaults(); err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, e := range fit {
		n += len(e)
	}
	for ; n > o.SampleBytes; fit = fit[1:] { // the newest SampleBytes
		n -= len(fit[0])
	}
	for _, level := range []struct {
		name string
		l    zstd.EncoderLevel
	}{{"fastest", zstd.SpeedFastest}, {"default", zstd.SpeedDefault}} {
		raw, err := buildDict(fit, dict.Options{MaxDictSize: o.MaxSize, HashBytes: dictHashBytes, ZstdDictID: 40000, ZstdLevel: level.l})
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range []int{4 << 10, 16 << 10, 64 << 10, 176 << 10} {
			b.Run(fmt.Sprintf("level=%s/batch=%dKiB", level.name, size>>10), func(b *testing.B) {
				d := &dictionary{id: 40000, raw: raw}
				if err := d.measure(test, size, level.l); err != nil {
					b.Fatal(err)
				}
				enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level.l), zstd.WithEncoderConcurrency(1), zstd.WithEncoderDict(raw))
				if err != nil {
					b.Fatal(err)
				}
				defer enc.Close()
				batches := cutBatches(test, size)
				b.SetBytes(int64(d.heldRaw))
				b.ReportAllocs()
				var out []byte
				for b.Loop() {
					for _, t := range batches {
						out = enc.EncodeAll(t, out[:0])
					}
				}
				b.ReportMetric(float64(d.heldRaw), "raw_B")
				b.ReportMetric(float64(d.plainBytes), "plain_B")
				b.ReportMetric(float64(d.dictBytes), "dict_B")
				b.ReportMetric(float64(d.plainBytes)/float64(len(batches)), "plain_B/batch")
				b.ReportMetric(d.plainRatio(), "plain_ratio")
				b.ReportMetric(d.ratio(), "dict_ratio")
				b.ReportMetric(d.gain(), "gain")
				b.Logf("%d samples (%d events), dictionary %d B; %d batches of ≤ %d KiB raw: %d B → %d B without (%.2f×), %d B with (%.2f×): %.3f× the ratio",
					len(fit), half, len(raw), len(batches), size>>10, d.heldRaw, d.plainBytes, d.plainRatio(), d.dictBytes, d.ratio(), d.gain())
			})
		}
	}
}

// cutBatches cuts events into NDJSON batches as dictionary.measure does.
func cutBatches(evs [][]byte, size int) [][]byte {
	var out [][]byte
	for i := 0; i < len(evs); {
		var text []byte
		for ; i < len(evs) && (len(text) == 0 || len(text)+len(evs[i])+1 <= size); i++ {
			text = append(text, evs[i]...)
			text = append(text, '\n')
		}
		out = append(out, text)
	}
	return out
}

// TestEncodersSwitch steps a worker's encoder through levels and
// dictionaries (none, one, another, none again): each frame names what
// get said and decodes with it, the encoder is kept while neither
// changes and remade, at the level asked, when either does.
func TestEncodersSwitch(t *testing.T) {
	evs := segmentEvents(t)
	spec := trainSpec{level: zstd.SpeedFastest, maxSize: 8 << 10, batchBytes: 16 << 10, id: 40000}
	d1, err := train(evs, spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.id = 50000
	d2, err := train(evs, spec)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderDicts(d1.raw, d2.raw))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	e, err := newEncoders(shaper.CompressFastest, func() int { return encoderWindow(1 << 20) }, "c", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	text := bytes.Join(evs[:20], []byte("\n"))
	prev := e.enc
	for i, step := range []struct {
		level shaper.CompressLevel
		d     *dictionary
		want  uint32
		same  bool // the encoder of the step before
	}{
		{shaper.CompressFastest, nil, 0, true},
		{shaper.CompressFastest, d1, 40000, false},
		{shaper.CompressFastest, d1, 40000, true},
		{shaper.CompressBetter, d1, 40000, false},
		{shaper.CompressBetter, d2, 50000, false},
		{shaper.CompressBetter, d2, 50000, true},
		{shaper.CompressFastest, nil, 0, false},
		{shaper.CompressBest, d2, 50000, false},
	} {
		z, level, id := e.get(step.level, step.d)
		if id != step.want || level != step.level {
			t.Fatalf("step %d: level %s id %d, want %s %d", i, level, id, step.level, step.want)
		}
		if (z == prev) != step.same {
			t.Fatalf("step %d: encoder kept %v, want %v", i, z == prev, step.same)
		}
		prev = z
		frame := z.EncodeAll(text, nil)
		var h zstd.Header
		if err := h.Decode(frame); err != nil || h.DictionaryID != id {
			t.Fatalf("step %d: frame names %d (%v), want %d", i, h.DictionaryID, err, id)
		}
		if back, err := dec.DecodeAll(frame, nil); err != nil || !bytes.Equal(back, text) {
			t.Fatalf("step %d: round trip: %v", i, err)
		}
	}
}
