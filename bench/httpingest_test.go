package bench

import (
	"bytes"
	"context"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// httpEvents is the number of events one HTTP ingest run measures, per
// mode; override with SLUICE_BENCH_EVENTS.
func httpEvents() int {
	if v, err := strconv.Atoi(os.Getenv("SLUICE_BENCH_EVENTS")); err == nil && v > 0 {
		return v
	}
	return 2_000_000
}

// httpClients is the number of concurrent HTTP clients; override with
// SLUICE_BENCH_CLIENTS.
func httpClients() int {
	if v, err := strconv.Atoi(os.Getenv("SLUICE_BENCH_CLIENTS")); err == nil && v > 0 {
		return v
	}
	return 32
}

// segmentEvents returns the 10,000 events the Segment SDK put on the wire
// in sdk_wire_from_apache, or without the data directory n synthetic
// Segment-shaped events; the second result says which.
func segmentEvents(n int) ([][]byte, string, error) {
	dir := blast.DataDir()
	if dir == "" {
		return blast.Synthetic(n, 1), "synthetic Segment-shaped events", nil
	}
	evs, err := blast.ReadNDJSON(filepath.Join(dir, "sdk_wire_from_apache", "segment.events.ndjson"))
	if err != nil {
		return nil, "", err
	}
	return evs, "sdk_wire_from_apache/segment.events.ndjson (real Segment SDK events)", nil
}

// BenchmarkHTTPIngest measures HTTP ingest on loopback with durable acks:
// a node with fsync always behind the ingest handler on 127.0.0.1, a NATS
// server in a child process, and SLUICE_BENCH_CLIENTS (32) keep-alive
// clients in this process posting 100-event bodies, SLUICE_BENCH_EVENTS
// (2,000,000) events per mode after a 100,000-event warm-up. Each mode
// then reads the whole stream back and checks every event. Use
// -benchtime 1x.
func BenchmarkHTTPIngest(b *testing.B) {
	events, source, err := segmentEvents(10_000)
	if err != nil {
		b.Fatal(err)
	}
	var raw int
	for _, ev := range events {
		raw += len(ev)
	}
	total, clients := httpEvents(), httpClients()
	workload := fmt.Sprintf("workload: %d events after a warm-up, cycling through %d from %s, mean %d bytes; %d clients, 100 events a request",
		total, len(events), source, raw/len(events), clients)
	for _, mode := range HTTPModes {
		b.Run(mode, func(b *testing.B) {
			b.Log(workload)
			var res HTTPResult
			// The node logs state changes only (stream created, level
			// changed), never events; they are shown with the result, as
			// output during the run would break the benchmark's line.
			var log lockedBuffer
			node := httpBenchNode()
			node.Logger = slog.New(slog.NewTextHandler(&log, nil))
			for b.Loop() {
				res = runHTTPOnce(b, events, HTTPConfig{
					Mode: mode, Clients: clients, PerRequest: 100,
					Events: total, Warmup: min(100_000, total/10),
					Node: node,
				})
			}
			for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
				if strings.Contains(line, "level changed") {
					b.Log("node: ", line)
				}
			}
			report(b, res)
		})
	}
}

func runHTTPOnce(tb testing.TB, events [][]byte, cfg HTTPConfig) HTTPResult {
	tb.Helper()
	// Start from a quiet disk: the last run's writeback would slow this
	// run's fsyncs.
	syscall.Sync()
	dir := tb.TempDir()
	srv, err := blast.StartServer(dir + "/nats")
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := RunHTTPIngest(ctx, srv, dir+"/spool", events, cfg)
	if err != nil {
		tb.Fatalf("%s: %v", cfg.Mode, err)
	}
	return res
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func report(b *testing.B, res HTTPResult) {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	line := fmt.Sprintf("%s: %.0f events/s, request p50 %.1f ms p99 %.1f ms max %.1f ms, %d requests of %d B (%d B decoded), cpu %.2f cores + nats %.2f, shipped %v after the last answer; verified %d events in %d batches, max level %d, %d batches (%d events) with fields dropped",
		res.Mode, res.EventsPerSec(), ms(res.LatencyQuantile(0.5)), ms(res.LatencyQuantile(0.99)), ms(res.LatencyQuantile(1)),
		res.Requests, res.BodyBytes/int64(res.Requests), res.RawBytes/int64(res.Requests),
		res.CPUCores(), res.NATSCPUCores(), res.Drain.Round(time.Millisecond), res.Stored, res.Batches, res.MaxLevel, res.Degraded, res.DegradedEvents)
	b.Log(line)
	b.ReportMetric(res.EventsPerSec(), "events/s")
	b.ReportMetric(ms(res.LatencyQuantile(0.5)), "req-p50-ms")
	b.ReportMetric(ms(res.LatencyQuantile(0.99)), "req-p99-ms")
	b.ReportMetric(res.CPUCores(), "cpu-cores")
	b.ReportMetric(res.NATSCPUCores(), "nats-cpu-cores")
	b.ReportMetric(float64(res.Degraded), "degraded-batches")
	b.ReportMetric(0, "ns/op")
}

// TestHTTPIngestSmoke runs each mode of the HTTP benchmark on a few
// thousand events, so the harness and its verification stay honest in CI.
func TestHTTPIngestSmoke(t *testing.T) {
	events := blast.Synthetic(1_000, 2)
	for _, mode := range HTTPModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			res := runHTTPOnce(t, events, HTTPConfig{Mode: mode, Clients: 4, PerRequest: 100, Events: 3_000, Warmup: 1_000, Node: httpBenchNode()})
			if res.Events != 3_000 || res.Stored != 4_000 || len(res.Latency) != 30 {
				t.Fatalf("measured %d events, stored %d, %d latencies", res.Events, res.Stored, len(res.Latency))
			}
		})
	}
}

// TestHTTPPayload checks the pre-built bodies: writeKey members go, and in
// Segment batches (and NDJSON bodies with ids) every messageId gets its id
// digits where the client writes them.
func TestHTTPPayload(t *testing.T) {
	events := [][]byte{
		[]byte(`{"type":"track","messageId":"m1","writeKey":"k","event":"a"}`),
		[]byte(`{"type":"track","event":"b"}`),
	}
	pl, err := buildPayload(ModeSegmentBatch, events, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	b := pl.bodies[0]
	buf := append([]byte(nil), b.data...)
	for i, at := range b.idAt {
		putHex(buf[at:], uint64(0x10+i))
	}
	want := `{"batch":[{"type":"track","messageId":"0000000000000010-m1","event":"a"},{"type":"track","event":"b","messageId":"0000000000000011"}],"writeKey":"wk_sluice_bench","sentAt":"2026-11-25T00:00:00.000Z"}`
	if string(buf) != want {
		t.Errorf("segment body\n got %s\nwant %s", buf, want)
	}
	pl, err = buildPayload(ModeNDJSON, events, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(pl.bodies[0].data), `{"type":"track","messageId":"m1","event":"a"}`+"\n"+`{"type":"track","event":"b"}`+"\n"; got != want {
		t.Errorf("ndjson body\n got %s\nwant %s", got, want)
	}
	pl, err = buildPayload(ModeNDJSON, events, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	b = pl.bodies[0]
	buf = append([]byte(nil), b.data...)
	for i, at := range b.idAt {
		putHex(buf[at:], uint64(0x20+i))
	}
	want = `{"type":"track","messageId":"0000000000000020-m1","event":"a"}` + "\n" + `{"type":"track","event":"b","messageId":"0000000000000021"}` + "\n"
	if string(buf) != want {
		t.Errorf("ndjson body with ids\n got %s\nwant %s", buf, want)
	}
	if _, err := buildPayload(ModeSegmentBatch, events, 2, false); err == nil {
		t.Error("segment batches without ids accepted")
	}
}

// TestHTTPVerifier checks that the verification catches what it must: a
// changed byte, a repeat, a missing event, an event never sent.
func TestHTTPVerifier(t *testing.T) {
	events := blast.Synthetic(4, 3)
	now := time.Date(2026, 11, 26, 1, 2, 3, 456e6, time.UTC)
	stamp := func(ev []byte) []byte {
		return append([]byte(`{"receivedAt":"2026-11-26T01:02:03.456Z","sluiceNode":"bench",`), ev[1:]...)
	}
	newV := func(mode string, reqs int) (*verifier, *payload) {
		pl, err := buildPayload(mode, events, 2, mode == ModeSegmentBatch)
		if err != nil {
			t.Fatal(err)
		}
		return newVerifier(pl, reqs, now.Add(-time.Second), now.Add(time.Second)), pl
	}

	v, pl := newV(ModeNDJSON, 3) // requests 0, 1, 2 carry bodies 0, 1, 0
	for _, r := range []int{0, 1, 2} {
		for _, se := range pl.bodies[r%2].events {
			if err := v.event(stamp(se.b), false); err != nil {
				t.Fatalf("ndjson request %d: %v", r, err)
			}
		}
	}
	if err := v.check(); err != nil {
		t.Fatal(err)
	}
	v.counts[0]--
	v.counts[1]++
	if v.check() == nil {
		t.Error("ndjson: wrong counts passed")
	}
	bad := stamp(pl.bodies[0].events[0].b)
	bad[len(bad)-3] ^= 1
	if v.event(bad, false) == nil {
		t.Error("ndjson: changed byte passed")
	}
	if v.event(bad, true) != nil {
		t.Error("ndjson: degraded event with its messageId refused")
	}
	if v.event(pl.bodies[0].events[0].b, false) == nil {
		t.Error("ndjson: unstamped event passed")
	}
	late := stamp(pl.bodies[0].events[0].b)
	copy(late[len(`{"receivedAt":"`):], "2027")
	if v.event(late, false) == nil {
		t.Error("ndjson: stamp outside the run passed")
	}

	v, pl = newV(ModeSegmentBatch, 2)
	sent := func(r, i int) []byte {
		se := pl.bodies[r%2].events[i]
		b := append([]byte(nil), se.b...)
		putHex(b[se.id:], uint64(r*2+i))
		return stamp(b)
	}
	if err := v.event(sent(0, 0), false); err != nil {
		t.Fatal(err)
	}
	if v.event(sent(0, 0), false) == nil {
		t.Error("segment: repeat passed")
	}
	if err := v.event(sent(0, 1), false); err != nil {
		t.Fatal(err)
	}
	if v.check() == nil {
		t.Error("segment: missing events passed")
	}
	ev := sent(1, 0)
	ev[len(ev)-3] ^= 1
	if v.event(ev, false) == nil {
		t.Error("segment: changed byte passed")
	}
	if v.event(sent(2, 0), false) == nil {
		t.Error("segment: id never sent passed")
	}
}
