package plan

import (
	"math"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/priority"
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
// newline) batched as the node batches class c at a link target of target
// bytes/s and rate events/s: events per batch from the model
// (shaper.BatchRawBytes, BatchEvents), NDJSON, one zstd frame per batch at
// the class's level (wire.EncoderLevel). The batch bound depends on the
// ratio, so it iterates until the batch size settles (at most 4 rounds).
// A sample without events has ratio 1.
func SampleRatio(sample [][]byte, c *priority.Class, target int64, rate float64) (float64, error) {
	var lines [][]byte
	for _, e := range sample {
		if len(e) > 0 {
			lines = append(lines, e)
		}
	}
	if len(lines) == 0 {
		return 1, nil
	}
	mean, _ := SampleSizes(lines)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(wire.EncoderLevel(c.Compression)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	defer enc.Close()
	maxEvents, maxBytes, linger := c.Batch.Limits()
	frac, lastN := 1.0, -1
	var raw, dst []byte
	for range 4 {
		bound := shaper.BatchRawBytes(target, shaper.DefaultBatchAirtime, frac, shaper.MinBatchRawBytes, maxBytes)
		n := max(1, int(shaper.BatchEvents(rate, mean, bound, maxEvents, linger)))
		if n == lastN {
			break
		}
		lastN = n
		var rawN, wireN int
		for i := 0; i < len(lines); i += n {
			raw = raw[:0]
			for _, l := range lines[i:min(i+n, len(lines))] {
				raw = append(append(raw, l...), '\n')
			}
			dst = enc.EncodeAll(raw, dst[:0])
			rawN += len(raw)
			wireN += len(dst)
		}
		frac = float64(wireN) / float64(rawN)
	}
	return 1 / frac, nil
}
