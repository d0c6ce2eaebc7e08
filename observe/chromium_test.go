package observe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// chromium returns the path of a Chromium binary: $SLUICE_CHROMIUM, or
// the first of the usual names in PATH; "" when there is none.
func chromium() string {
	if p := os.Getenv("SLUICE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome-headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// runChromium runs headless Chromium on url with extra flags, its profile
// in profile (a fresh directory), and returns its standard output. It may
// run on any goroutine.
func runChromium(ctx context.Context, bin, profile, url string, extra ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := append([]string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
		"--hide-scrollbars", "--user-data-dir=" + profile,
		"--window-size=1280,900", "--virtual-time-budget=5000",
	}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %v: %w\nstderr:\n%s", bin, extra, err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// TestStatusPageInChromium loads the status page of a real node under load
// in headless Chromium and checks what a person would see: a row per lane
// with a live, non-zero rate, and a screenshot that is neither blank nor
// the wrong size. It skips when no Chromium is installed (.ci/run installs
// Debian's chromium).
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium()
	if bin == "" {
		t.Skip("no Chromium found (chromium, chromium-browser, google-chrome in PATH, or $SLUICE_CHROMIUM): " +
			"the status page is not checked in a browser; .ci/run installs Debian's chromium")
	}
	r := newRig(t)
	sampler, err := NewSampler(r.node, SamplerOptions{Name: "edge-chromium", Interval: 500 * time.Millisecond, Window: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	sampled := make(chan error, 1)
	go func() { sampled <- sampler.Run(ctx) }()
	defer func() {
		cancel()
		<-sampled
	}()
	h, err := NewHandler(Sources{Node: r.node, Ingest: r.ingest}, Options{Sampler: sampler})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", r.ingest)
	mux.Handle("/", h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://" + ln.Addr().String()

	// Load for the whole test, so the page's every poll sees live rates.
	stop := load(t, base, 20, 20*time.Second)
	defer stop()
	waitFor(t, 6*time.Second, "a rate in every lane", func() bool {
		st := sampler.Status()
		if len(st.Classes) != len(classes) {
			return false
		}
		for _, c := range st.Classes {
			if c.RateBytesPerSecond <= 0 {
				return false
			}
		}
		return true
	})

	// Both browser runs at once: each takes seconds, mostly waiting.
	dir := os.Getenv("SLUICE_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "status-page.png")
	var dom []byte
	var domErr, shotErr error
	var wg sync.WaitGroup
	profiles := [2]string{t.TempDir(), t.TempDir()}
	wg.Go(func() { dom, domErr = runChromium(t.Context(), bin, profiles[0], base+"/", "--dump-dom") })
	wg.Go(func() { _, shotErr = runChromium(t.Context(), bin, profiles[1], base+"/", "--screenshot="+shot) })
	wg.Wait()
	if err := errors.Join(domErr, shotErr); err != nil {
		t.Fatal(err)
	}

	rows := regexp.MustCompile(`<tr[^>]*\bclass="lane"[^>]*>`).FindAll(dom, -1)
	attr := func(tag []byte, name string) string {
		m := regexp.MustCompile(`\b` + name + `="([^"]*)"`).FindSubmatch(tag)
		if m == nil {
			return ""
		}
		return html.UnescapeString(string(m[1]))
	}
	rates := map[string]float64{}
	for _, row := range rows {
		rate, err := strconv.ParseFloat(attr(row, "data-rate"), 64)
		if err != nil {
			t.Errorf("lane row %s: data-rate: %v", row, err)
		}
		rates[attr(row, "data-class")] = rate
	}
	if len(rows) != len(classes) {
		t.Errorf("the rendered page has %d lane rows, want %d", len(rows), len(classes))
	}
	for _, c := range classes {
		if rate, ok := rates[c]; !ok || rate <= 0 {
			t.Errorf("lane %s: rendered rate %v (present %v), want > 0", c, rate, ok)
		}
	}
	for _, want := range []string{"edge-chromium", "accepting", "level 0", "capacity", "smoothed RTT", "<rect", "<path"} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	checkScreenshot(t, shot, 1280, 900)
	t.Logf("screenshot: %s", shot)
}

// checkScreenshot decodes the PNG at path and checks its size, that it is
// not blank (many pixels off the background, many colours), and that the
// page's rate blue and level-0 green are drawn.
func checkScreenshot(t *testing.T, path string, w, h int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if got := img.Bounds().Size(); got != image.Pt(w, h) {
		t.Errorf("screenshot is %v, want %dx%d", got, w, h)
	}
	counts := map[color.RGBA]int{}
	near := func(c color.RGBA, r, g, b uint8) bool {
		d := func(x, y uint8) int { return max(int(x)-int(y), int(y)-int(x)) }
		return d(c.R, r) < 24 && d(c.G, g) < 24 && d(c.B, b) < 24
	}
	var blue, green int
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			counts[c]++
			if near(c, 0x2f, 0x6f, 0xde) {
				blue++
			}
			if near(c, 0x22, 0xa3, 0x5a) {
				green++
			}
		}
	}
	var bg color.RGBA
	for c, n := range counts {
		if n > counts[bg] {
			bg = c
		}
	}
	total := bounds.Dx() * bounds.Dy()
	off := total - counts[bg]
	msg := fmt.Sprintf("screenshot %s: background %v, %d colours, %.1f%% off the background, %d rate-blue and %d level-green pixels",
		path, bg, len(counts), 100*float64(off)/float64(total), blue, green)
	t.Log(msg)
	if len(counts) < 20 || off < total/20 {
		t.Errorf("blank %s", msg)
	}
	if blue < 200 || green < 200 {
		t.Errorf("lanes or level strip not drawn: %s", msg)
	}
}
