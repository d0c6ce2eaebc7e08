package plan

import (
	"math"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

// SampleEvents returns how many of sample's events are not empty.
func SampleEvents(sample [][]byte) int {
	n := 0
	for _, e := range sample {
		if len(e) > 0 {
			n++
		}
	}
	return n
}

// sampleLines returns sample's non-empty events.
func sampleLines(sample [][]byte) [][]byte {
	var lines [][]byte
	for _, e := range sample {
		if len(e) > 0 {
			lines = append(lines, e)
		}
	}
	return lines
}

// SampleSizes returns the mean and the p99 (nearest rank) of the sizes of
// sample's non-empty events; 0, 0 when there are none.
func SampleSizes(sample [][]byte) (mean, p99 float64) {
	sizes := make([]int, 0, len(sample))
	var sum int
	for _, e := range sample {
		if len(e) > 0 {
			sizes = append(sizes, len(e))
			sum += len(e)
		}
	}
	if len(sizes) == 0 {
		return 0, 0
	}
	slices.Sort(sizes)
	rank := int(math.Ceil(0.99*float64(len(sizes)))) - 1
	return float64(sum) / float64(len(sizes)), float64(sizes[max(rank, 0)])
}

// SampleRatio measures raw/compressed on sample's events (each without its
// newline) in NDJSON batches of events events (at least 1), one zstd frame
// per batch at level (wire.EncoderLevel), as the node compresses a batch.
// A sample without events has ratio 1.
func SampleRatio(sample [][]byte, level shaper.CompressLevel, events int) (float64, error) {
	lines := sampleLines(sample)
	if len(lines) == 0 {
		return 1, nil
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(wire.EncoderLevel(level.String())), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	n := max(events, 1)
	var rawN, wireN int
	var raw, dst []byte
	for i := 0; i < len(lines); i += n {
		raw = raw[:0]
		for _, l := range lines[i:min(i+n, len(lines))] {
			raw = append(append(raw, l...), '\n')
		}
		dst = enc.EncodeAll(raw, dst[:0])
		rawN += len(raw)
		wireN += len(dst)
	}
	return float64(rawN) / float64(wireN), nil
}
