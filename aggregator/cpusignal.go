package aggregator

import (
	"errors"
	"net"
	"os"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/sluicehq/sluice/shaper"
)

// schedLatencies is the runtime metric of the time goroutines waited to
// run once runnable.
const schedLatencies = "/sched/latencies:seconds"

// cpuSampler measures, once a tick, how busy the node's machine is: the
// runtime's scheduling latencies, and a one-byte round trip through the
// loopback to an echo goroutine (the queueing an ack meets on this
// machine with no link in the way). It feeds shaper.CPUSignal, whose
// Delay the estimator takes out of RTT inflation. It belongs to the
// driver's tick goroutine (driver.run): sampleAt is called from there
// only, and close waits for the echo goroutine.
type cpuSampler struct {
	sig     *shaper.CPUSignal
	samples []metrics.Sample
	timeout time.Duration // the most one loopback probe may wait: a tick

	ln       net.Listener // nil: no loopback probe
	cli, srv net.Conn
	seq      byte
	wg       sync.WaitGroup
}

// newCPUSampler returns a sampler whose loopback probe, if echo, waits
// at most timeout. Without a loopback interface (or with no scheduling
// metric in this runtime) it measures what it can.
func newCPUSampler(timeout time.Duration, echo bool) *cpuSampler {
	sig, _ := shaper.NewCPUSignal(shaper.CPUOptions{}) // defaults are valid
	s := &cpuSampler{sig: sig, timeout: timeout}
	for _, d := range metrics.All() {
		if d.Name == schedLatencies && d.Kind == metrics.KindFloat64Histogram {
			s.samples = []metrics.Sample{{Name: schedLatencies}}
		}
	}
	if !echo {
		return s
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s
	}
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return s
	}
	srv, err := ln.Accept()
	if err != nil {
		cli.Close()
		ln.Close()
		return s
	}
	if tc, ok := cli.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	s.ln, s.cli, s.srv = ln, cli, srv
	s.wg.Go(func() {
		// The echo: each byte back as it comes, until close.
		var b [1]byte
		for {
			if _, err := srv.Read(b[:]); err != nil {
				return
			}
			if _, err := srv.Write(b[:]); err != nil {
				return
			}
		}
	})
	return s
}

// sampleAt takes the tick's samples at now and returns the contention
// over the signal's window.
func (s *cpuSampler) sampleAt(now time.Time) shaper.CPUStatus {
	var h shaper.SchedHistogram
	if len(s.samples) > 0 {
		metrics.Read(s.samples)
		if v := s.samples[0].Value; v.Kind() == metrics.KindFloat64Histogram {
			fh := v.Float64Histogram()
			h = shaper.SchedHistogram{Counts: fh.Counts, Buckets: fh.Buckets}
		}
	}
	s.sig.ObserveAt(now, h, s.loopback())
	return s.sig.StatusAt(now)
}

// loopback times one byte's round trip to the echo; 0 without one. A
// probe that waits the whole timeout counts as the timeout; the echo's
// late answer is skipped by the next probe (each probe's byte differs).
func (s *cpuSampler) loopback() time.Duration {
	if s.cli == nil {
		return 0
	}
	s.seq++
	start := time.Now()
	s.cli.SetDeadline(start.Add(s.timeout))
	if _, err := s.cli.Write([]byte{s.seq}); err != nil {
		return s.lost(err)
	}
	var b [1]byte
	for {
		if _, err := s.cli.Read(b[:]); err != nil {
			return s.lost(err)
		}
		if b[0] == s.seq {
			return time.Since(start)
		}
	}
}

// lost handles a failed probe: a timeout is the probe's figure; any other
// error ends the loopback probe for good.
func (s *cpuSampler) lost(err error) time.Duration {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return s.timeout
	}
	s.close()
	return 0
}

// close stops the echo and waits for it. Idempotent.
func (s *cpuSampler) close() {
	if s.ln == nil {
		return
	}
	s.cli.Close()
	s.srv.Close()
	s.ln.Close()
	s.wg.Wait()
	s.ln, s.cli, s.srv = nil, nil, nil
}
