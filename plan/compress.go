package plan

import (
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
)

// compression is what the node's compression policy chooses for a flow's
// class at the planned link target: the level, the batch bound, and the
// flow's ratio at that level.
type compression struct {
	level shaper.CompressLevel
	// auto: the level is the policy's (shaper.ChooseCompression); else
	// the class's fixed level.
	auto       bool
	bottleneck shaper.Bottleneck // auto only
	ratio      float64           // raw/wire at level
	bound      int               // raw bytes bound of a batch
}

// compressionInputs is what the plan gives the node's policy for a flow.
type compressionInputs struct {
	class    *priority.Class
	target   int64   // the link's target, bytes/s
	cores    float64 // the node's compression cores
	maxBytes int     // the class's batch bound
}

// choose is the node's decision for a class at the link target with the
// flow's levels as the meter would know them: a fixed level keeps it, in
// batches of shaper.DefaultBatchAirtime at its ratio (aggregator's
// compressPolicy.batchBytes); compression auto asks
// shaper.ChooseCompression, with the link found and full (the plan knows
// the link's rate; the node's probe gain is for a lower bound it does not
// have) and batches of shaper.DefaultBulkAirtime, starting from the class's
// lowest level, as the node does.
func (in compressionInputs) choose(levels [shaper.CompressLevels]shaper.LevelEstimate) compression {
	lo, hi := shaper.CompressBounds(in.class)
	if lo == hi {
		r := max(levels[lo].Ratio, 1)
		return compression{level: lo, ratio: r,
			bound: shaper.BatchRawBytes(in.target, shaper.DefaultBatchAirtime, 1/r, shaper.MinBatchRawBytes, in.maxBytes)}
	}
	c := shaper.ChooseCompression(shaper.CompressInputs{
		LinkBytesPerSec: in.target, LinkFull: true, Cores: in.cores,
		Min: lo, Max: hi, Current: lo, Levels: levels,
		Airtime: shaper.DefaultBulkAirtime, MinBatchBytes: shaper.MinBatchRawBytes, MaxBatchBytes: in.maxBytes,
	})
	return compression{level: c.Level, auto: true, bottleneck: c.Bottleneck, ratio: max(levels[c.Level].Ratio, 1), bound: c.BatchBytes}
}

// givenLevels are a class's levels when a flow's ratio is given: ratio at
// the class's lowest level (its fixed level, or compression_min), the
// others by the policy's priors (shaper.EstimateLevels), each level's
// speed the prior's. A flow that does not compress (ratio 1 and source
// none) compresses at no level.
func givenLevels(c *priority.Class, ratio float64, none bool) [shaper.CompressLevels]shaper.LevelEstimate {
	var known [shaper.CompressLevels]shaper.LevelEstimate
	if none {
		for l := range known {
			known[l] = shaper.LevelEstimate{Ratio: 1, Measured: true}
		}
		return shaper.EstimateLevels(known)
	}
	lo, _ := shaper.CompressBounds(c)
	known[lo] = shaper.LevelEstimate{Ratio: ratio, Measured: true}
	return shaper.EstimateLevels(known)
}

// sampleRounds bounds the rounds of measuring a sample and choosing again.
const sampleRounds = 6

// sampleCompression is the node's decision on a flow whose ratio is
// measured on its sample, as the node's meter learns it: the sample is
// compressed at the class's lowest level in batches of the bound at ratio
// 1, the policy chooses from what was measured (levels not measured
// estimated by the priors), and the sample is compressed again at the
// level and batch size chosen, until neither changes (at most
// sampleRounds). The ratio reported is the one measured at the level
// reported.
func (in compressionInputs) sampleCompression(lines [][]byte, rate, mean float64) (compression, error) {
	maxEvents, _, linger := in.class.Batch.Limits()
	var known [shaper.CompressLevels]shaper.LevelEstimate
	lo, _ := shaper.CompressBounds(in.class)
	ones := known
	ones[lo] = shaper.LevelEstimate{Ratio: 1, Measured: true}
	cur := in.choose(shaper.EstimateLevels(ones))
	cur.level = lo
	lastLevel, lastN := shaper.CompressLevel(shaper.CompressLevels), -1
	for range sampleRounds {
		n := max(1, int(shaper.BatchEvents(rate, mean, cur.bound, maxEvents, linger)))
		if cur.level == lastLevel && n == lastN {
			break
		}
		r, err := SampleRatio(lines, cur.level, n)
		if err != nil {
			return compression{}, err
		}
		known[cur.level] = shaper.LevelEstimate{Ratio: r, Measured: true}
		lastLevel, lastN = cur.level, n
		cur = in.choose(shaper.EstimateLevels(known))
	}
	cur.level, cur.ratio = lastLevel, known[lastLevel].Ratio
	return cur, nil
}
