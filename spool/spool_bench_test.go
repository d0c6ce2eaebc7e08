package spool

import (
	"context"
	"sync"
	"testing"
)

// benchAppend appends b.N calls of 1000 × 1 KB events (fsync always) from
// writers goroutines sharing one class.
func benchAppend(b *testing.B, writers int) {
	s := openT(b, b.TempDir(), Options{})
	evs := events("bench", 1000, 1024)
	b.SetBytes(1000 * 1024)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	calls := make(chan struct{}, b.N)
	for range b.N {
		calls <- struct{}{}
	}
	close(calls)
	for range writers {
		wg.Go(func() {
			for range calls {
				if _, err := s.Append(context.Background(), "bench", evs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "events/s")
	st := s.Stats().Classes["bench"]
	b.ReportMetric(float64(st.Commits), "commits")
}

func BenchmarkAppend(b *testing.B)          { benchAppend(b, 1) }
func BenchmarkAppendParallel8(b *testing.B) { benchAppend(b, 8) }

// BenchmarkRead reads 1 KB events in batches of 1000 from a spool of 100k
// events spread over several segments.
func BenchmarkRead(b *testing.B) {
	s := openT(b, b.TempDir(), Options{Fsync: FsyncNever, SegmentBytes: 16 << 20})
	evs := events("bench", 1000, 1024)
	const total = 100_000
	for range total / 1000 {
		if _, err := s.Append(context.Background(), "bench", evs); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(1000 * 1024)
	b.ReportAllocs()
	b.ResetTimer()
	next := uint64(1)
	for range b.N {
		n := 0
		nx, err := s.Read("bench", next, 1000, 0, func(e Entry) error { n++; return nil })
		if err != nil || n != 1000 {
			b.Fatalf("read %d: %v", n, err)
		}
		next = nx
		if next > total {
			next = 1
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "events/s")
}
