package aggregator

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	"github.com/sluicehq/sluice/shaper"
)

// BenchmarkEncoderMemory reports the heap a worker's encoder holds once it
// has compressed a batch, at each level the compression policy may choose
// and for batches of the default classes' MaxBytes (its window is
// encoderWindow of that): what each compression worker of a class costs
// at that level. Batches are the Segment events of testdata, cycled. The
// heap is read after a GC, around eight encoders made and used at once.
//
//	go test -run '^$' -bench EncoderMemory -benchtime 1x ./aggregator
func BenchmarkEncoderMemory(b *testing.B) {
	evs := segmentEvents(b)
	log := slog.New(slog.DiscardHandler)
	for _, maxBytes := range []int{64 << 10, 512 << 10, 768 << 10} {
		var text []byte
		for i := 0; len(text)+len(evs[i%len(evs)])+1 <= maxBytes; i++ {
			text = append(text, evs[i%len(evs)]...)
			text = append(text, '\n')
		}
		for l := range shaper.CompressLevel(shaper.CompressLevels) {
			b.Run(fmt.Sprintf("batch=%dKiB/level=%s", maxBytes>>10, l), func(b *testing.B) {
				const n = 8
				var heap float64
				for b.Loop() {
					var before, after runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&before)
					encs := make([]*encoders, n)
					for i := range encs {
						e, err := newEncoders(l, func() int { return encoderWindow(maxBytes) }, "c", log)
						if err != nil {
							b.Fatal(err)
						}
						z, _, _ := e.get(l, nil)
						z.EncodeAll(text, nil)
						encs[i] = e
					}
					runtime.GC()
					runtime.ReadMemStats(&after)
					heap = float64(after.HeapAlloc-before.HeapAlloc) / n
					for _, e := range encs {
						e.close()
					}
				}
				b.ReportMetric(heap/(1<<20), "MiB/encoder")
			})
		}
	}
}
