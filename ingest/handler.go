package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/spool"
)

// Sink takes the good events of a request. *aggregator.Node is one. Ingest
// returns nil only once the events are durable; its errors are matched
// against aggregator.ErrFull, ErrDropped, ErrClosed, ErrTooLarge and
// ErrInvalidEvent to choose the status. It must not retain the slices.
type Sink interface {
	Ingest(ctx context.Context, class string, events ...[]byte) error
}

// NewHandler returns the handler of POST /v1/events and GET /healthz.
func NewHandler(sink Sink, opts Options) http.Handler {
	opts.setDefaults()
	h := &handler{sink: sink, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/events", h.events)
	mux.HandleFunc("/healthz", h.healthz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such path: "+r.URL.Path)
	})
	return mux
}

type handler struct {
	sink Sink
	opts Options
}

// response is the body of a request that reached validation.
type response struct {
	Error    string      `json:"error,omitempty"`
	Accepted int         `json:"accepted"`
	Dropped  int         `json:"dropped,omitempty"`
	Rejected []Rejection `json:"rejected"`
	Omitted  int         `json:"rejected_omitted,omitempty"`
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	class := r.URL.Query().Get("class")
	if class == "" {
		class = r.Header.Get("X-Sluice-Class")
	}
	if class == "" {
		class = h.opts.DefaultClass
	}
	if !spool.ValidClass(class) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid class %q: want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\"", class))
		return
	}
	body, status, err := h.readBody(w, r)
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	events, rejected := parseNDJSON(body, h.opts.MaxEventBytes, nil, nil)
	resp := response{Rejected: rejected}
	if n := len(resp.Rejected) - h.opts.MaxRejected; n > 0 {
		resp.Rejected, resp.Omitted = resp.Rejected[:h.opts.MaxRejected], n
	}
	if resp.Rejected == nil {
		resp.Rejected = []Rejection{}
	}
	if len(events) == 0 {
		if len(rejected) == 0 {
			resp.Error = "empty body: no events"
		} else {
			resp.Error = fmt.Sprintf("no valid events: %d lines rejected", len(rejected))
		}
		writeJSON(w, http.StatusBadRequest, resp)
		return
	}
	err = h.sink.Ingest(r.Context(), class, events...)
	switch {
	case err == nil:
		resp.Accepted = len(events)
		writeJSON(w, http.StatusOK, resp)
	case errors.Is(err, aggregator.ErrDropped):
		resp.Dropped = len(events)
		writeJSON(w, http.StatusOK, resp)
	case errors.Is(err, aggregator.ErrFull):
		w.Header().Set("Retry-After", strconv.Itoa(DefaultRetryAfterFull))
		writeError(w, http.StatusTooManyRequests, err.Error())
	case errors.Is(err, aggregator.ErrClosed):
		w.Header().Set("Retry-After", strconv.Itoa(DefaultRetryAfterClose))
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, aggregator.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, aggregator.ErrInvalidEvent):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		h.opts.Logger.Error("ingest failed", "class", class, "events", len(events), "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// readBody reads the request body within the limits, decompressing gzip.
// On error it returns the status to answer.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	limit := h.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds the limit of %d bytes", limit)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading body: %v", err)
	}
	body := buf.Bytes()
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch {
	case enc == "gzip" || enc == "x-gzip":
	case enc == "" || enc == "identity":
		if !bytes.HasPrefix(body, gzipMagic) {
			return body, 0, nil
		}
		// A gzip body without its header: SDKs do send these, and NDJSON
		// never starts with 0x1f.
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("unsupported Content-Encoding %q: want gzip or identity", enc)
	}
	return gunzip(body, h.opts.MaxDecodedBytes)
}

var gzipMagic = []byte{0x1f, 0x8b}

func gunzip(body []byte, limit int64) ([]byte, int, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("gzip: %v", err)
	}
	var out bytes.Buffer
	n, err := out.ReadFrom(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("gzip: %v", err)
	}
	if n > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("decompressed body exceeds the limit of %d bytes", limit)
	}
	return out.Bytes(), 0, nil
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed: use "+allow)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for our types
		b = []byte(`{"error":"internal: encoding response"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
