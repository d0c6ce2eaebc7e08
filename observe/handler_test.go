package observe

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
)

// TestStatusLive runs a sampler on a real node under load and reads the
// status API as the page does: every lane shows a rate, latencies and the
// link's numbers.
func TestStatusLive(t *testing.T) {
	r := newRig(t)
	sampler, err := NewSampler(r.node, SamplerOptions{Name: "edge-1", Interval: 100 * time.Millisecond, Window: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sampler.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	h, err := NewHandler(Sources{Node: r.node, Ingest: r.ingest}, Options{Sampler: sampler})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	in := httptest.NewServer(r.ingest)
	defer in.Close()
	stop := load(t, in.URL, 20, 8*time.Second)
	defer stop()

	var st Status
	read := func() {
		code, hdr, body := get(t, srv.URL+"/api/v1/status")
		if code != 200 || hdr.Get("Content-Type") != "application/json" || hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("GET /api/v1/status: %d %v", code, hdr)
		}
		st = Status{}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 6*time.Second, "a rate and a latency in every lane", func() bool {
		read()
		if len(st.Classes) != len(classes) {
			return false
		}
		for _, c := range st.Classes {
			if c.RateBytesPerSecond <= 0 || c.InEventsPerSecond <= 0 || c.Latency.Count == 0 {
				return false
			}
		}
		return true
	})
	stop()
	for i, c := range st.Classes {
		if c.Name != classes[i] {
			t.Errorf("lane %d is %q, want %q (the node's order)", i, c.Name, classes[i])
		}
		if c.CeilingBytesPerSecond <= 0 || c.CompressionRatio <= 1 || c.EventsPerBatch < 1 {
			t.Errorf("lane %s: ceiling %d, compression %v, events per batch %v", c.Name, c.CeilingBytesPerSecond, c.CompressionRatio, c.EventsPerBatch)
		}
		// Ordered quantiles of a measured latency; how large is not this
		// test's business (no timing assertions in unit tests).
		if l := c.Latency; !(l.P50Seconds > 0 && l.P50Seconds <= l.P95Seconds && l.P95Seconds <= l.P99Seconds) {
			t.Errorf("lane %s: latency %+v", c.Name, l)
		}
	}
	if st.Classes[0].GuaranteedBytesPerSecond != linkCeil/100*10 || st.Classes[3].GuaranteedBytesPerSecond != 0 {
		t.Errorf("guarantees critical %d, backfill %d", st.Classes[0].GuaranteedBytesPerSecond, st.Classes[3].GuaranteedBytesPerSecond)
	}
	if st.Link.TargetBytesPerSecond <= 0 || st.Link.CapacityBytesPerSecond <= 0 || st.Link.SRTTSeconds <= 0 || st.Link.RateBytesPerSecond <= 0 {
		t.Errorf("link %+v", st.Link)
	}
	if st.Node != "edge-1" || !st.Accepting || len(st.History) < 5 || st.WindowSeconds < 0.2 {
		t.Errorf("node %q accepting %v, %d history points, window %vs", st.Node, st.Accepting, len(st.History), st.WindowSeconds)
	}
}

// TestStatusPage checks the page is served whole, self-contained, and only
// where it should be.
func TestStatusPage(t *testing.T) {
	f := newFakeNode()
	sampler, err := NewSampler(f, SamplerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Sources{Node: f}, Options{Sampler: sampler})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	code, hdr, body := get(t, srv.URL+"/")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", code, hdr.Get("Content-Type"))
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("GET /: Content-Security-Policy %q", csp)
	}
	page := string(body)
	for _, want := range []string{`id="lanes"`, `id="strip"`, `id="chart"`, `api/v1/status`, `<style>`, `<script>`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// Self-contained: no external scripts, styles, images, fonts or imports.
	external := regexp.MustCompile(`(?i)(<script[^>]*\ssrc=|<link[^>]*\shref=|<img[^>]*\ssrc=|@import|url\(\s*['"]?(https?:)?//)`)
	if m := external.FindString(page); m != "" {
		t.Errorf("page loads an external asset: %s", m)
	}

	for _, tt := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/nope", 404},
		{"GET", "/index.html", 404},
		{"POST", "/", 405},
		{"HEAD", "/", 200},
		{"HEAD", "/healthz", 200},
		{"GET", "/readyz", 200},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
		}
	}
	setFull := func(full bool) {
		f.mu.Lock()
		f.diskFull = full
		f.mu.Unlock()
	}
	setFull(true)
	if code, hdr, body := get(t, srv.URL+"/readyz"); code != 503 || hdr.Get("Retry-After") == "" ||
		string(body) != "not ready: spool disk full: events are refused until there is room\n" {
		t.Errorf("/readyz while the disk is full: %d %q (Retry-After %q)", code, body, hdr.Get("Retry-After"))
	}
	setFull(false)
	if code, _, body := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz once the disk has room: %d %q", code, body)
	}
	f.mu.Lock()
	f.accepting = false
	f.mu.Unlock()
	if code, _, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.HasPrefix(string(body), "not ready: ") {
		t.Errorf("/readyz while not accepting: %d %q", code, body)
	}

	// Without a sampler, only metrics and health are served.
	bare, err := NewHandler(Sources{Node: f}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/": 404, "/api/v1/status": 404, "/metrics": 200, "/healthz": 200} {
		rec := httptest.NewRecorder()
		bare.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("no sampler: GET %s: %d, want %d", path, rec.Code, want)
		}
	}
}

// TestStatusUnknownLink: out of the box (link_mbit 0) the default classes'
// percentages are of an unknown link, so no class has a guarantee or a
// ceiling of its own, and the node measures the link instead. The status
// and the metrics must show what the lanes enforce then, not zeros: no
// guarantee, every class served by priority (critical strictly first,
// backfill with what is left), each bounded by the link's measured rate.
func TestStatusUnknownLink(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	node, err := aggregator.New(aggregator.Options{Node: "ops-test", Dir: t.TempDir(), Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	sampler, err := NewSampler(node, SamplerOptions{Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Sources{Node: node}, Options{Sampler: sampler})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	defer hs.Close()

	var st Status
	waitFor(t, 10*time.Second, "the link's rate in force", func() bool {
		sampler.sampleAt(time.Now())
		st = sampler.Status()
		return len(st.Classes) == len(classes) && st.Classes[0].EffectiveCeilingBytesPerSecond > 0
	})
	want := map[string]string{"critical": "strict", "ingest": "priority", "replication": "priority", "backfill": "leftover"}
	for _, c := range st.Classes {
		if c.GuaranteedBytesPerSecond != 0 || c.CeilingBytesPerSecond != 0 || c.EffectiveGuaranteedBytesPerSecond != 0 {
			t.Errorf("%s: guaranteed %d (in force %d), ceiling %d; want none configured or in force with link_mbit 0",
				c.Name, c.GuaranteedBytesPerSecond, c.EffectiveGuaranteedBytesPerSecond, c.CeilingBytesPerSecond)
		}
		if c.EffectiveCeilingBytesPerSecond != st.Classes[0].EffectiveCeilingBytesPerSecond || c.CeilingSource != "link" || c.Share != want[c.Name] {
			t.Errorf("%s: ceiling in force %d (%q), share %q; want the link's rate %d (\"link\"), %q",
				c.Name, c.EffectiveCeilingBytesPerSecond, c.CeilingSource, c.Share, st.Classes[0].EffectiveCeilingBytesPerSecond, want[c.Name])
		}
	}
	if st.Link.TargetBytesPerSecond <= 0 {
		t.Errorf("link target %d: the node measures none", st.Link.TargetBytesPerSecond)
	}
	mfs := scrape(t, hs.URL)
	for _, c := range classes {
		if v := value(t, mfs, "sluice_class_effective_ceiling_rate_bytes_per_second", "class", c); v <= 0 {
			t.Errorf("%s: effective ceiling metric %v, want the link's rate", c, v)
		}
	}
}
