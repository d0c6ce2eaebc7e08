package aggregator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/wire"
)

// DictMode says whether a class's batches are compressed with a zstd
// dictionary trained on the class's own events.
type DictMode string

const (
	// DictAuto (the default, also "") trains a dictionary and uses it only
	// where it pays: when it shrinks held-out batches of the class's
	// size by at least DictOptions.MinGain.
	DictAuto DictMode = "auto"
	// DictOn trains a dictionary and uses it whenever it shrinks held-out
	// batches at all.
	DictOn DictMode = "on"
	// DictOff never trains nor uses a dictionary: every batch is format
	// version 1.
	DictOff DictMode = "off"
)

// ParseDictMode returns the mode named s ("" is DictAuto).
func ParseDictMode(s string) (DictMode, error) {
	switch m := DictMode(s); m {
	case "":
		return DictAuto, nil
	case DictAuto, DictOn, DictOff:
		return m, nil
	}
	return "", fmt.Errorf("dictionary %q: want auto, on or off", s)
}

// DictOptions configure the per-class dictionaries. The zero value is a
// working default: every class in DictAuto.
type DictOptions struct {
	// Classes maps a class name to its mode; a class not named is DictAuto.
	Classes map[string]DictMode
	// MaxSize is the largest dictionary trained, in bytes. Default 32 KiB;
	// 1 KiB to 1 MiB. Measured on the Segment events (the first 5,000
	// trained, the other 5,000 in 16 KiB batches, level fastest, 8-byte
	// matches, trained one event each): 16 KiB 1.34×, 32 KiB 1.39×,
	// 110 KiB 1.40× smaller than without a dictionary. From 2 MiB of
	// samples one event each the builder filled 27 KiB at any MaxSize from
	// 32 to 512 KiB; in chunks (as train gives them), 32 KiB at 32 KiB and
	// 64 KiB at 64 or 128 KiB, for 1.45× and 1.46× at 16 KiB.
	MaxSize int
	// SampleBytes bounds the recent events a class keeps to train on, in
	// bytes (no two alike). Default 64 × MaxSize (2 MiB); at least
	// 4 × MaxSize: memory each class holds. A class trains once it holds
	// a quarter of it.
	SampleBytes int
	// MinGain is DictAuto's threshold: a dictionary is used only if
	// held-out batches compress to at most 1/MinGain of their size without
	// it. Default 1.05; at least 1. Measured on the Segment events at level
	// fastest (BenchmarkDictRatio): 2.00× on 4 KiB batches, 1.45× on
	// 16 KiB, 1.18× on 64 KiB, 1.09× on 176 KiB (16 KB compressed); 1.05
	// keeps the gain of batches sized for a slow link and leaves it out
	// where it is within noise.
	MinGain float64
	// Interval is how often a class checks its dictionary against its
	// recent events, retraining when the ratio has drifted below what it
	// was at adoption (and retrying a training that did not pay, or a
	// publish that failed). The first training starts as soon as enough
	// events were sampled. Default 1m.
	Interval time.Duration
}

// Defaults of DictOptions.
const (
	defaultDictMaxSize  = 32 << 10
	defaultDictMinGain  = 1.05
	defaultDictInterval = time.Minute
	// dictHashBytes is the builder's match length: 8 gave the best ratio
	// on the Segment events (1.39× against 1.29× with 4, 16 KiB batches).
	dictHashBytes = 8
	// dictDrift: a dictionary has drifted when its ratio on recent events
	// falls below this fraction of its ratio at adoption.
	dictDrift = 0.95
	// dictMinSamples is the least number of samples a training takes
	// (a fifth of them held out): the builder has panicked on a few
	// dozen.
	dictMinSamples = 128
	// dictHeldOut: one sample in dictHeldOut is held out of training to
	// measure the dictionary.
	dictHeldOut = 5
	// dictChunkBytes: the builder is given the training samples joined in
	// NDJSON chunks of about this size, as the batches are, not one event
	// each: it keeps what recurs across inputs, and a whole event's
	// boilerplate recurs within a batch too. Measured on the Segment
	// events (the newest 2 MiB of one half trained, the other half in
	// batches, 32 KiB dictionaries, level fastest, both halves each way):
	// 1.45×/1.44× on 16 KiB batches against 1.38×/1.35× trained on single
	// events, 1.18×/1.19× against 1.15× on 64 KiB, 1.09× against
	// 1.07×/1.06× on 176 KiB; at better 1.49× against 1.40× on 16 KiB.
	// Chunks of 8 to 64 KiB measured within 1% of each other.
	dictChunkBytes = 16 << 10
	// dictMinChunks: fewer samples are cut in smaller chunks, so that the
	// builder has at least this many inputs to compare.
	dictMinChunks = 32
)

func (o *DictOptions) setDefaults() error {
	for name, m := range o.Classes {
		if _, err := ParseDictMode(string(m)); err != nil {
			return fmt.Errorf("class %s: %w", name, err)
		}
	}
	if o.MaxSize == 0 {
		o.MaxSize = defaultDictMaxSize
	}
	if o.MaxSize < 1<<10 || o.MaxSize > 1<<20 {
		return fmt.Errorf("Dictionary.MaxSize %d outside 1 KiB..1 MiB", o.MaxSize)
	}
	if o.SampleBytes == 0 {
		o.SampleBytes = 64 * o.MaxSize
	}
	if o.SampleBytes < 4*o.MaxSize {
		return fmt.Errorf("Dictionary.SampleBytes %d below 4 × MaxSize", o.SampleBytes)
	}
	if o.MinGain == 0 {
		o.MinGain = defaultDictMinGain
	}
	if o.MinGain < 1 {
		return fmt.Errorf("Dictionary.MinGain %v below 1", o.MinGain)
	}
	if o.Interval <= 0 {
		o.Interval = defaultDictInterval
	}
	return nil
}

// mode is class's mode.
func (o *DictOptions) mode(class string) DictMode {
	m, _ := ParseDictMode(string(o.Classes[class]))
	return m
}

// A sampler keeps a class's recent events, bounded in bytes, no two alike,
// for training. The compression workers add to it (add); the trainer takes
// snapshots. Samples are copies, never changed once added.
type sampler struct {
	mu    sync.Mutex
	max   int // bytes
	q     [][]byte
	bytes int
	seen  map[uint64]struct{}
	seed  maphash.Seed
	ready chan struct{} // closed once it holds a quarter of max and dictMinSamples
}

func newSampler(maxBytes int) *sampler {
	return &sampler{max: maxBytes, seen: make(map[uint64]struct{}), seed: maphash.MakeSeed(), ready: make(chan struct{})}
}

// sampleStride: add takes one event in sampleStride of a batch.
const sampleStride = 8

// add samples the NDJSON text of a batch: one line in sampleStride, from
// a random start. The oldest samples make room for new ones.
func (s *sampler) add(text []byte) {
	skip := rand.IntN(sampleStride)
	var picked [][]byte
	for len(text) > 0 {
		i := bytes.IndexByte(text, '\n')
		if i < 0 {
			i = len(text)
		}
		if line := text[:i]; len(line) > 0 && len(line) <= s.max/16 {
			if skip == 0 {
				picked = append(picked, line)
				skip = sampleStride
			}
			skip--
		}
		if i == len(text) {
			break
		}
		text = text[i+1:]
	}
	if len(picked) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range picked {
		h := maphash.Bytes(s.seed, line)
		if _, dup := s.seen[h]; dup {
			continue
		}
		for s.bytes+len(line) > s.max && len(s.q) > 0 {
			old := s.q[0]
			s.q[0] = nil
			s.q = s.q[1:]
			s.bytes -= len(old)
			delete(s.seen, maphash.Bytes(s.seed, old))
		}
		s.q = append(s.q, bytes.Clone(line))
		s.bytes += len(line)
		s.seen[h] = struct{}{}
	}
	if s.bytes >= s.max/4 && len(s.q) >= dictMinSamples && !isClosed(s.ready) {
		close(s.ready)
	}
}

// snapshot returns the samples held now, oldest first.
func (s *sampler) snapshot() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.q...)
}

// A dictionary is a trained zstd dictionary and what it measured.
type dictionary struct {
	id    uint32
	raw   []byte            // zstd's dictionary format, its embedded id == id
	level zstd.EncoderLevel // trained and measured at
	// held-out NDJSON bytes and their compressed sizes without and with
	// the dictionary, in batches of the class's size, at level.
	heldRaw, plainBytes, dictBytes int
}

// ratio is the held-out compression ratio with the dictionary.
func (d *dictionary) ratio() float64 { return ratioOf(d.heldRaw, d.dictBytes) }

// plainRatio is the held-out ratio without it.
func (d *dictionary) plainRatio() float64 { return ratioOf(d.heldRaw, d.plainBytes) }

// gain is how many times smaller held-out batches are with the dictionary.
func (d *dictionary) gain() float64 { return ratioOf(d.plainBytes, d.dictBytes) }

func ratioOf(a, b int) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// trainSpec says how to train a class's dictionary.
type trainSpec struct {
	level      zstd.EncoderLevel // the class's now
	maxSize    int               // MaxSize
	batchBytes int               // raw size of the held-out batches: the class's typical batch
	id         uint32            // the dictionary's id
}

// errDictSamples: too few samples to train.
var errDictSamples = errors.New("too few samples")

// train builds a dictionary from samples, holding one in dictHeldOut out
// of the training (the rest given to the builder in chunks), and measures
// it on those: they are cut in batches of about s.batchBytes and each
// compressed with a fresh encoder at the class's level, without and with
// the dictionary, and the latter decoded by a fresh decoder that holds
// only the dictionary, and compared. A dictionary that does not
// round-trip is an error. It is a pure function
// of its arguments but for the builder's internal maps.
func train(samples [][]byte, s trainSpec) (*dictionary, error) {
	if len(samples) < dictMinSamples {
		return nil, fmt.Errorf("%w: %d", errDictSamples, len(samples))
	}
	var fit, held [][]byte
	for i, smp := range samples {
		if i%dictHeldOut == dictHeldOut-1 {
			held = append(held, smp)
		} else {
			fit = append(fit, smp)
		}
	}
	raw, err := buildDict(chunks(fit), dict.Options{MaxDictSize: s.maxSize, HashBytes: dictHashBytes, ZstdDictID: s.id, ZstdLevel: s.level})
	if err != nil {
		return nil, err
	}
	d := &dictionary{id: s.id, raw: raw, level: s.level}
	if err := d.measure(held, s.batchBytes, s.level); err != nil {
		return nil, err
	}
	return d, nil
}

// chunks joins samples, in order, in NDJSON chunks of about
// dictChunkBytes (fewer bytes: about 1/dictMinChunks of them), whole
// events each, at least one. The copy lives as long as a training: at
// most DictOptions.SampleBytes more, one training at a time in the node.
func chunks(samples [][]byte) [][]byte {
	total := 0
	for _, smp := range samples {
		total += len(smp) + 1
	}
	size := min(dictChunkBytes, total/dictMinChunks)
	var out [][]byte
	for i := 0; i < len(samples); {
		var text []byte
		for ; i < len(samples) && (len(text) == 0 || len(text)+len(samples[i])+1 <= size); i++ {
			text = append(append(text, samples[i]...), '\n')
		}
		out = append(out, text)
	}
	return out
}

// buildDict is dict.BuildZstdDict with its panics (seen on small sample
// sets) turned into errors.
func buildDict(samples [][]byte, o dict.Options) (raw []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			raw, err = nil, fmt.Errorf("build dictionary: panic: %v", r)
		}
	}()
	raw, err = dict.BuildZstdDict(samples, o)
	if err != nil {
		return nil, fmt.Errorf("build dictionary: %w", err)
	}
	return raw, nil
}

// measure sets d's held-out sizes: held is cut in batches of about
// batchBytes of NDJSON, each compressed without and with d by fresh
// encoders at level, the latter decoded by a fresh decoder and compared.
func (d *dictionary) measure(held [][]byte, batchBytes int, level zstd.EncoderLevel) error {
	info, err := zstd.InspectDictionary(d.raw)
	if err != nil {
		return fmt.Errorf("dictionary: %w", err)
	}
	if info.ID() != d.id {
		return fmt.Errorf("dictionary: embedded id %d, want %d", info.ID(), d.id)
	}
	plain, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	defer plain.Close()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithEncoderDict(d.raw))
	if err != nil {
		return fmt.Errorf("dictionary: encoder: %w", err)
	}
	defer enc.Close()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderDicts(d.raw))
	if err != nil {
		return fmt.Errorf("dictionary: decoder: %w", err)
	}
	defer dec.Close()
	d.heldRaw, d.plainBytes, d.dictBytes = 0, 0, 0
	var text, out, back []byte
	for i := 0; i < len(held); {
		text = text[:0]
		for ; i < len(held) && (len(text) == 0 || len(text)+len(held[i])+1 <= batchBytes); i++ {
			text = append(text, held[i]...)
			text = append(text, '\n')
		}
		d.heldRaw += len(text)
		out = plain.EncodeAll(text, out[:0])
		d.plainBytes += len(out)
		out = enc.EncodeAll(text, out[:0])
		d.dictBytes += len(out)
		if back, err = dec.DecodeAll(out, back[:0]); err != nil {
			return fmt.Errorf("dictionary: round trip: %w", err)
		}
		if !bytes.Equal(back, text) {
			return errors.New("dictionary: round trip changed the events")
		}
	}
	return nil
}

// adopt reports whether a class in mode uses d: on, if d makes its
// held-out batches smaller at all; auto, if by minGain at least.
func adopt(mode DictMode, d *dictionary, minGain float64) bool {
	switch mode {
	case DictOn:
		return d.gain() > 1
	case DictAuto, "":
		return d.gain() >= minGain
	}
	return false
}

// drifted reports whether dictionary cur, measured again on recent
// events (now), has lost its edge: its ratio fell below dictDrift of its
// ratio at adoption.
func drifted(cur, now *dictionary) bool {
	return now.ratio() < dictDrift*cur.ratio()
}

// randomDictID returns an id in [wire.MinDictID, wire.MaxDictID].
func randomDictID() uint32 {
	return wire.MinDictID + rand.Uint32N(wire.MaxDictID-wire.MinDictID+1)
}

// withDictID returns a copy of zstd dictionary raw with its id set to id:
// the 4 bytes after the magic number (RFC 8878, 5. Dictionary Format).
func withDictID(raw []byte, id uint32) []byte {
	out := bytes.Clone(raw)
	binary.LittleEndian.PutUint32(out[4:8], id)
	return out
}
