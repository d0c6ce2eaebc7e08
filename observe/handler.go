package observe

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed status.html
var statusPage []byte

// Options configure a Handler. The zero value works.
type Options struct {
	// Sampler serves the status page (/) and its JSON (/api/v1/status).
	// Default nil: those two paths answer 404 and only metrics and health
	// are served.
	Sampler *Sampler
	// Collectors are registered beside the node's Collector, so that
	// /metrics serves them too: a service's own metrics, or those of its
	// listener. Default none.
	Collectors []prometheus.Collector
	// Logger receives errors met while gathering or writing metrics. Nil
	// discards.
	Logger *slog.Logger
}

// Handler serves the node's operations endpoints:
//
//	GET /metrics         Prometheus text (or protobuf, by negotiation)
//	GET /healthz         200 "ok": the process is alive
//	GET /readyz          200 "ready", or 503 with the reason (shutting down, disk full)
//	GET /                the live status page (Options.Sampler)
//	GET /api/v1/status   the status page's JSON (Status)
//
// Any other path is 404; HEAD works wherever GET does.
type Handler struct {
	src     Sources
	sampler *Sampler
	mux     *http.ServeMux
}

// NewHandler returns the handler of src's operations endpoints. Its
// metrics registry holds a Collector over src, Go runtime and process
// collectors, Options.Collectors, and promhttp's own scrape counters.
func NewHandler(src Sources, opts Options) (*Handler, error) {
	src, err := src.check()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	col, err := NewCollector(src)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	for _, c := range append([]prometheus.Collector{
		col,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, opts.Collectors...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("observe: register metrics: %w", err)
		}
	}
	metrics := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrintln{opts.Logger},
		ErrorHandling: promhttp.ContinueOnError, // a failing metric must not hide the others
	}))

	h := &Handler{src: src, sampler: opts.Sampler, mux: http.NewServeMux()}
	h.mux.Handle("GET /metrics", metrics)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	if h.sampler != nil {
		h.mux.HandleFunc("GET /{$}", h.page)
		h.mux.HandleFunc("GET /api/v1/status", h.status)
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Ready returns nil when the node is ready for traffic, or an error that
// says why not: shutting down, or the spool's disk full (ingest answers
// 503 until there is room). It is what /readyz answers.
func (h *Handler) Ready() error {
	if !h.src.Node.Accepting() {
		return errors.New("node is shutting down: intake closed, spool draining")
	}
	if h.src.Node.DiskFull() {
		return errors.New("spool disk full: events are refused until there is room")
	}
	return nil
}

func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := h.Ready(); err != nil {
		w.Header().Set("Retry-After", "5")
		text(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	text(w, http.StatusOK, "ready")
}

func (h *Handler) page(w http.ResponseWriter, _ *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-cache")
	// Everything is inline; the page only fetches its JSON.
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	hd.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(statusPage)
}

func (h *Handler) status(w http.ResponseWriter, _ *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(h.sampler.statusJSON())
}

func text(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

// slogPrintln adapts a slog.Logger to promhttp's Logger.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }
