package main

// The hostile-traffic suite of issue 12: `sluice run` in its own process,
// write keys configured, a legitimate producer posting beside each class
// of attack. Verdicts: the node's peak RSS stays within
// limits.max_inflight_bytes + 96 MiB, every attack gets exactly the
// answers it should, and the producer gets 200, or 429/503 with
// Retry-After, never a 500 or a reset, with every event acknowledged to
// it in the stream once.
//
// SLUICE_HOSTILE_SCALE=N multiplies the attackers (the gated, longer run;
// see README); SLUICE_HOSTILE_BUDGET sets limits.max_inflight_bytes.

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/natstest"
)

const (
	hostileKey  = "wk_hostile_test_key"
	rssHeadroom = 96 << 20
)

func TestHostileTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node process and attacks it for ~20 s")
	}
	scale := 1
	if s := os.Getenv("SLUICE_HOSTILE_SCALE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("SLUICE_HOSTILE_SCALE=%q: want a positive integer", s)
		}
		scale = n
	}
	// limits.max_inflight_bytes; SLUICE_HOSTILE_BUDGET=96MiB is what a
	// 384 MiB pod derives.
	hostileInflight := int64(64 << 20)
	if s := os.Getenv("SLUICE_HOSTILE_BUDGET"); s != "" {
		n, err := parseSize(s)
		if err != nil || n < 64<<20 {
			t.Fatalf("SLUICE_HOSTILE_BUDGET=%q: want a size of at least 64MiB (%v)", s, err)
		}
		hostileInflight = n
	}
	srv := natstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
ingest:
  keys:
    - key: %s
      source: web
limits:
  max_inflight_bytes: %d
`, hostileKey, hostileInflight)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The binary a user runs, not this test binary: under -race its memory
	// is several times a release build's.
	p := startExe(t, buildSluice(t), "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	pid := p.cmd.Process.Pid
	base := procStatus(t, pid, "VmRSS")

	prod := startProducer(p.addr)
	defer prod.stop()
	waitUntil(t, "the producer's first 200", func() bool { return prod.acked() > 0 })

	var table []hostileRow
	run := func(name string, fn func() map[int]int, want ...int) {
		t.Helper()
		before := procStatus(t, pid, "VmHWM")
		got := fn()
		row := hostileRow{name: name, answers: got, peak: procStatus(t, pid, "VmHWM"), before: before}
		table = append(table, row)
		for status := range got {
			if !slices.Contains(want, status) {
				t.Errorf("%s: answered %d (%v); want only %v", name, status, got, want)
			}
		}
	}
	bomb := amplifiedBatch(10_000, 7<<10)
	keyed := http.Header{"X-Sluice-Key": {hostileKey}}
	run("amplification, no key (10,000 messages × 7 KiB context, ~800 B gzip)", func() map[int]int {
		return flood(p.addr, "/v1/batch", nil, bomb, 64*scale, 5)
	}, 401, 429)
	run("amplification, valid key", func() map[int]int {
		return flood(p.addr, "/v1/batch", keyed, bomb, 64*scale, 5)
	}, 413, 429)
	run("gzip bomb, 16 MiB of zeros (~16 KiB), valid key", func() map[int]int {
		return flood(p.addr, "/v1/events", keyed, gzipZeros(16<<20), 32*scale, 5)
	}, 413, 429)
	run("gzip bomb, no key", func() map[int]int {
		return flood(p.addr, "/v1/events", nil, gzipZeros(16<<20), 32*scale, 5)
	}, 401, 413, 429)
	run("slow bodies: 4 MiB announced, 1 byte sent, held 3 s", func() map[int]int {
		return holdConns(t, p.addr, 300*scale, 3*time.Second, "POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Sluice-Key: "+hostileKey+"\r\nContent-Length: 4194304\r\n\r\n{")
	}, 0, 429, 503, -1) // still reading; the budget spent; past max_connections; the 5 s read-header timeout
	run("idle connections, nothing sent, held 3 s", func() map[int]int {
		return holdConns(t, p.addr, 1000*scale, 3*time.Second, "")
	}, 0, 503, -1) // open; past max_connections; closed after the 5 s read-header timeout without a word

	prod.stop()
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("node RSS %d MiB at start, peak %d MiB (bound %d MiB = max_inflight_bytes + 96 MiB)", base>>20, peak>>20, (hostileInflight+rssHeadroom)>>20)
	for _, r := range table {
		t.Logf("%-70s answers %v, peak RSS %d MiB (was %d)", r.name, r.answers, r.peak>>20, r.before>>20)
	}
	if peak > hostileInflight+rssHeadroom {
		t.Errorf("peak RSS %d MiB > max_inflight_bytes + 96 MiB = %d MiB", peak>>20, (hostileInflight+rssHeadroom)>>20)
	}
	prod.check(t)
	// The node's own counters agree with what the clients saw.
	var n413, n429 int
	for _, r := range table {
		n413 += r.answers[413]
		n429 += r.answers[429]
	}
	n429 += prod.answers()["429"]
	m := scrape(t, p.addr)
	if got := m["sluice_ingest_too_large_requests_total"]; got != float64(n413) {
		t.Errorf("sluice_ingest_too_large_requests_total %v, clients saw %d answers 413", got, n413)
	}
	if got := m["sluice_ingest_busy_requests_total"]; got != float64(n429) {
		t.Errorf("sluice_ingest_busy_requests_total %v, clients saw %d answers 429", got, n429)
	}
	if m["sluice_http_connections_max"] == 0 || m["sluice_ingest_inflight_bytes"] != 0 {
		t.Errorf("connection and budget gauges after the attacks: max %v, in flight %v bytes", m["sluice_http_connections_max"], m["sluice_ingest_inflight_bytes"])
	}
	want := prod.ackedIDs()
	var got map[int]int
	waitUntil(t, "every acknowledged event in the stream", func() bool {
		got, _ = streamIDs(t, srv.ClientURL(), "SLUICE")
		return len(got) >= len(want)
	})
	checkExactlyOnce(t, got, want)
	t.Logf("producer: %d events acknowledged, answers %v", len(want), prod.answers())
}

// buildSluice builds this package as a plain binary (no -race, whatever
// the test binary is) into a temporary directory and returns its path.
func buildSluice(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", exe, ".")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// scrape reads the node's /metrics into a map of unlabelled series.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "#") || strings.Contains(f[0], "{") {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			out[f[0]] = v
		}
	}
	return out
}

type hostileRow struct {
	name         string
	answers      map[int]int
	peak, before int64
}

// procStatus returns a field of /proc/pid/status (VmRSS, VmHWM) in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 2 minutes for %s", what)
		}
	}
}

// amplifiedBatch is a gzipped Segment batch of n tiny messages sharing a
// batch-level context of ctxBytes, which the HTTP API copies into each.
func amplifiedBatch(n, ctxBytes int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"context":{"pad":%q},"batch":[`, strings.Repeat("c", ctxBytes))
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"track"}`)
	}
	b.WriteString(`]}`)
	return gzipString(b.String())
}

func gzipString(s string) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	io.WriteString(zw, s)
	zw.Close()
	return buf.Bytes()
}

func gzipZeros(n int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(make([]byte, n))
	zw.Close()
	return buf.Bytes()
}

// flood posts body (gzip) to path from workers goroutines, each per times,
// and counts the statuses (-1: a transport error).
func flood(addr, path string, header http.Header, body []byte, workers, per int) map[int]int {
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	client := &http.Client{Timeout: time.Minute}
	for range workers {
		wg.Go(func() {
			for range per {
				req, _ := http.NewRequest("POST", "http://"+addr+path, bytes.NewReader(body))
				req.Header.Set("Content-Encoding", "gzip")
				for k, v := range header {
					req.Header[k] = v
				}
				status := -1
				if res, err := client.Do(req); err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					status = res.StatusCode
				}
				mu.Lock()
				got[status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	client.CloseIdleConnections()
	return got
}

// holdConns opens n connections, writes prefix on each, holds them for d
// and closes them. A connection the node answers or closes first counts
// under its status (-1 for a close without an answer); one still open at
// the end counts under 0.
func holdConns(t *testing.T, addr string, n int, d time.Duration, prefix string) map[int]int {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
		if prefix != "" {
			io.WriteString(c, prefix)
		}
	}
	time.Sleep(d)
	got := map[int]int{}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		var buf [64]byte
		k, err := c.Read(buf[:])
		switch {
		case k > 0:
			code := 0
			if f := strings.Fields(string(buf[:k])); len(f) > 1 {
				code, _ = strconv.Atoi(f[1])
			}
			got[code]++
		case err != nil && !os.IsTimeout(err):
			got[-1]++
		default:
			got[0]++
		}
	}
	return got
}

// producer posts 100-event NDJSON batches with a valid key until stopped,
// and remembers what was acknowledged and every answer.
type producer struct {
	addr   string
	stopc  chan struct{}
	done   chan struct{}
	once   sync.Once
	n      atomic.Int64
	mu     sync.Mutex
	ids    map[int]bool
	status map[string]int
}

func startProducer(addr string) *producer {
	p := &producer{addr: addr, stopc: make(chan struct{}), done: make(chan struct{}), ids: map[int]bool{}, status: map[string]int{}}
	go p.run()
	return p
}

func (p *producer) run() {
	defer close(p.done)
	client := &http.Client{Timeout: time.Minute}
	for next := 0; ; next += 100 {
		select {
		case <-p.stopc:
			return
		default:
		}
		req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+p.addr+"/v1/events", bytes.NewReader(events(next, 100)))
		req.Header.Set("X-Sluice-Key", hostileKey)
		res, err := client.Do(req)
		key := ""
		switch {
		case err != nil:
			key = "error: " + err.Error()
		default:
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			key = strconv.Itoa(res.StatusCode)
			if res.StatusCode != 200 && res.Header.Get("Retry-After") == "" {
				key += " without Retry-After"
			}
		}
		p.mu.Lock()
		p.status[key]++
		if err == nil && res.StatusCode == 200 {
			for i := range 100 {
				p.ids[next+i] = true
			}
			p.n.Add(100)
		}
		p.mu.Unlock()
		if err != nil || res.StatusCode != 200 {
			time.Sleep(100 * time.Millisecond) // as an SDK backs off
		} else {
			// A steady producer, not a flood of its own: ~5,000 events/s,
			// so that reading them back stays cheap under -race.
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (p *producer) stop() {
	p.once.Do(func() { close(p.stopc) })
	<-p.done
}

func (p *producer) acked() int64 { return p.n.Load() }

func (p *producer) ackedIDs() map[int]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids
}

func (p *producer) answers() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// check fails the test unless every answer was 200, or 429/503 with
// Retry-After.
func (p *producer) check(t *testing.T) {
	t.Helper()
	for k, n := range p.answers() {
		if k != "200" && k != "429" && k != "503" {
			t.Errorf("the legitimate producer got %q %d times", k, n)
		}
	}
}
