package spool

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchAppend appends b.N calls of 1000 × 1 KB events (fsync always) from
// writers goroutines sharing one class.
func benchAppend(b *testing.B, writers int) { benchAppendN(b, writers, 1000, 1024) }

// benchAppendN appends b.N calls of per events of size bytes.
func benchAppendN(b *testing.B, writers, per, size int) {
	s := openT(b, b.TempDir(), Options{})
	evs := events("bench", per, size)
	b.SetBytes(int64(per * size))
	b.ReportAllocs()
	w0 := diskWrites()
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
	b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "events/s")
	st := s.Stats().Classes["bench"]
	b.ReportMetric(float64(b.N)/float64(st.Commits), "calls/commit")
	b.ReportMetric(float64(st.Bytes)/float64(b.N*per*size), "file-B/event-B") // the space caps count
	if w := diskWrites() - w0; w0 >= 0 && w > 0 {
		b.ReportMetric(float64(w)/float64(b.N*per*size), "disk-B/event-B")
	}
}

// diskWrites is the bytes this process caused to be written to storage
// (write_bytes of /proc/self/io), or -1 where there is no such file.
func diskWrites() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

func BenchmarkAppend(b *testing.B)          { benchAppend(b, 1) }
func BenchmarkAppendParallel8(b *testing.B) { benchAppend(b, 8) }

// BenchmarkAppendHTTPLike8 is the shape of the foundation benchmark's
// ingest: 8 producers, 100 events of 650 bytes a call.
func BenchmarkAppendHTTPLike8(b *testing.B) { benchAppendN(b, 8, 100, 650) }

// BenchmarkAppendSustainedLike16 is the shape of the sustained HTTP
// benchmark's ingest: 16 producers, 200 events of 740 bytes a call. Its
// disk-B/event-B is the spool's write amplification: bbolt rewrites the
// last leaf, with the large records it still holds, at every commit.
func BenchmarkAppendSustainedLike16(b *testing.B) { benchAppendN(b, 16, 200, 740) }

// BenchmarkAppendTiny8 is the smallest appends: 8 producers of one 100-byte
// event a call, so that commits hold small records only.
func BenchmarkAppendTiny8(b *testing.B) { benchAppendN(b, 8, 1, 100) }

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

// BenchmarkAppendWithClaims8 is BenchmarkAppendHTTPLike8 with a batcher
// beside the producers: one goroutine claims each ~1000 appended events as
// they become available, as the aggregator does before publishing a batch.
func BenchmarkAppendWithClaims8(b *testing.B) {
	const writers, per, size, batch = 8, 100, 650, 1000
	s := openT(b, b.TempDir(), Options{})
	evs := events("bench", per, size)
	b.SetBytes(int64(per * size))
	b.ReportAllocs()
	b.ResetTimer()
	calls := make(chan struct{}, b.N)
	for range b.N {
		calls <- struct{}{}
	}
	close(calls)
	var wg sync.WaitGroup
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
	done := make(chan struct{})
	claims := 0
	var cwg sync.WaitGroup
	cwg.Go(func() {
		next := uint64(1)
		for {
			last := s.Last("bench")
			if last >= next+batch-1 {
				if err := s.Claim("bench", Range{next, next + batch - 1}); err != nil {
					b.Error(err)
					return
				}
				claims++
				next += batch
				continue
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	})
	wg.Wait()
	b.StopTimer()
	close(done)
	cwg.Wait()
	b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(claims)/b.Elapsed().Seconds(), "claims/s")
	st := s.Stats().Classes["bench"]
	b.ReportMetric(float64(b.N)/float64(st.Commits), "calls/commit")
}
