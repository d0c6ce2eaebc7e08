package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/sluicehq/sluice/internal/validated"
	"github.com/sluicehq/sluice/spool"
)

// Sink takes the good events of a request. *aggregator.Node is one. Ingest
// returns nil only once the events are durable; its errors are matched
// against aggregator.ErrFull, ErrNoSpace, ErrDropped, ErrClosed,
// ErrTooLarge and ErrInvalidEvent to choose the status. It must not retain
// the slices.
type Sink interface {
	Ingest(ctx context.Context, class string, events ...[]byte) error
}

// validSink is a Sink that can skip validating events the pipeline has
// already checked (one JSON object on one line each): *aggregator.Node's
// IngestValid. The pipeline uses it when its Sink has it. Its method takes
// a validated.Events, which only code of this module can build, so no
// other module can store events past the node's validation.
type validSink interface {
	IngestValid(ctx context.Context, class string, events validated.Events) error
}

// ingestValid hands events the doors' decoders validated to s: the one
// place package ingest vouches for events.
func ingestValid(ctx context.Context, s validSink, class string, bodies [][]byte) error {
	return s.IngestValid(ctx, class, validated.Vouch(bodies))
}

// Handler serves the ingest endpoints (see the package documentation): the
// HTTP door of a Pipeline.
type Handler struct {
	p     *Pipeline
	mux   *http.ServeMux
	stats handlerCounters
}

// NewHandler returns the handler of the ingest endpoints on a Pipeline of
// its own, or an error wrapping ErrInvalidOptions when a key or the
// router is invalid. It is NewPipeline(sink, opts) and its Handler.
func NewHandler(sink Sink, opts Options) (*Handler, error) {
	p, err := NewPipeline(sink, opts)
	if err != nil {
		return nil, err
	}
	return p.Handler(), nil
}

// Handler returns the HTTP door of p: the ingest endpoints, whose events
// take p's path to the Sink with the NATS source's.
func (p *Pipeline) Handler() *Handler {
	h := &Handler{p: p}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", h.healthz)
	post := func(path, source string, decode decodeFunc) {
		mux.Handle(path, h.endpoint(source, http.MethodPost, decode))
	}
	post("/v1/events", sourceEvents, decodeEvents)
	post("/v1/batch", sourceSegment, segmentCall("batch"))
	for _, call := range segmentTypes {
		post("/v1/"+call, sourceSegment, segmentCall(call))
	}
	post("/com.snowplowanalytics.snowplow/tp2", sourceSnowplow, func(_ *http.Request, body []byte, lim decodeLimits) (Decoded, error) {
		return decodeSnowplow(body, lim)
	})
	mux.Handle("/i", h.endpoint(sourceSnowplow, http.MethodGet, func(r *http.Request, _ []byte, lim decodeLimits) (Decoded, error) {
		return decodeSnowplowQuery(r.URL.RawQuery, lim)
	}))
	for _, p := range []string{"/batch", "/capture", "/e"} {
		post(p, sourcePostHog, decodePostHogBody)
		post(p+"/", sourcePostHog, decodePostHogBody)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such path: "+r.URL.Path)
	})
	h.mux = mux
	return h
}

// Pipeline returns the pipeline the handler feeds, for StartNATS and
// Reconfigure.
func (h *Handler) Pipeline() *Pipeline { return h.p }

// Sources: the source endpoint of an event, for routing rules
// (priority.Rule.Source) and for scoping event ids when the write key
// names no source.
const (
	sourceEvents   = "events"
	sourceSegment  = "segment"
	sourceSnowplow = "snowplow"
	sourcePostHog  = "posthog"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// decodeFunc turns a request and its decoded body into events within lim:
// a batch of more than lim.maxEvents elements may stop decoding with
// errTooManyEvents.
type decodeFunc func(r *http.Request, body []byte, lim decodeLimits) (Decoded, error)

func decodeEvents(_ *http.Request, body []byte, lim decodeLimits) (Decoded, error) {
	if c, ok := firstNonSpace(body); ok && c == '[' {
		return decodeArray(body, lim)
	}
	n := countLines(body)
	if n > lim.maxEvents {
		// Refused whole: never parse it (its lines would cost far more
		// memory than its bytes).
		return Decoded{}, tooManyLines(n)
	}
	// The lists parseEvents makes, charged before.
	if err := lim.meter.charge(int64(n) * (eventSize + 24)); err != nil {
		return Decoded{}, err
	}
	sc := newEventScan(lim.plan)
	events, rejected := parseEvents(body, lim.maxEvent, &sc, make([]Event, 0, n), nil)
	return Decoded{Rejected: rejected, Events: events}, nil
}

func segmentCall(call string) decodeFunc {
	return func(_ *http.Request, body []byte, lim decodeLimits) (Decoded, error) {
		return decodeSegment(body, call, lim)
	}
}

func decodePostHogBody(_ *http.Request, body []byte, lim decodeLimits) (Decoded, error) {
	return decodePostHog(body, lim)
}

// countLines counts the lines of body that are not blank: the events
// and rejections parseEvents would return.
func countLines(body []byte) int {
	n := 0
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
	}
	return n
}

// tooManyLines is errTooManyEvents for an NDJSON body of n lines.
type tooManyLines int

func (n tooManyLines) Error() string { return fmt.Sprintf("%d lines", int(n)) }
func (tooManyLines) Unwrap() error   { return errTooManyEvents }

// response is the body of a request that reached decoding.
type response struct {
	Error      string      `json:"error,omitempty"`
	Accepted   int         `json:"accepted"`
	Duplicates int         `json:"duplicates,omitempty"`
	Dropped    int         `json:"dropped,omitempty"`
	Rejected   []Rejection `json:"rejected"`
	Omitted    int         `json:"rejected_omitted,omitempty"`
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// endpoint returns the handler of one ingest endpoint.
func (h *Handler) endpoint(source, method string, decode decodeFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			methodNotAllowed(w, method)
			return
		}
		h.stats.requests.Add(1)
		status := h.serve(w, r, source, decode)
		if status >= 400 {
			h.stats.failed.Add(1)
		}
	})
}

// serve handles one request and returns its status.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, source string, decode decodeFunc) int {
	explicit := r.URL.Query().Get("class")
	if explicit == "" {
		explicit = r.Header.Get("X-Sluice-Class")
	}
	if explicit != "" && !spool.ValidClass(explicit) {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid class %q: want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\"", explicit))
	}
	p := h.p
	live := p.live.Load() // one request, one configuration
	// A key in the headers is checked before the body is read.
	presented, err := presentedKey(r.Header)
	if err != nil {
		return h.unauthorized(w, err)
	}
	// Memory is charged before it is spent: to the pre-auth budget until
	// the request's key has passed, then to the main one.
	m := &meter{ctx: r.Context(), pre: p.preauth, main: p.budget}
	defer m.releaseAll() // after the body's Release: defers run last first
	var match keyMatch
	if presented != "" {
		var status int
		if match, status, err = live.keys.authorize(presented); err != nil {
			return h.writeStatus(w, status, err)
		}
	}
	if presented != "" || !live.keys.enabled() {
		m.authorize()
	}

	var body []byte
	if method := r.Method; method != http.MethodGet {
		if p.opts.MaxBodyBytes > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, p.opts.MaxBodyBytes)
		}
		b, status, err := decodeBody(r, bodyLimits{MaxBodyBytes: p.opts.MaxBodyBytes, MaxDecodedBytes: p.opts.MaxDecodedBytes, Meter: m})
		if err != nil {
			switch status {
			case http.StatusUnsupportedMediaType:
				w.Header().Set("Accept-Encoding", acceptEncoding)
			case http.StatusTooManyRequests:
				return h.busy(w)
			case http.StatusRequestEntityTooLarge:
				h.stats.tooLarge.Add(1)
			}
			return writeError(w, status, err.Error())
		}
		defer b.Release() // after the Sink: the events alias the body
		body = b.Bytes()
	}
	lim := decodeLimits{maxEvent: live.maxEventBytes, maxEvents: live.maxEvents, maxExpansion: p.opts.MaxExpansion, meter: m,
		plan: live.plan(source, explicit)}
	authStatus := 0
	if !m.authorized {
		// The key is in the body: the decoder has it checked the moment
		// it finds it (in the envelope, or the first event), before it
		// builds a single event.
		lim.authorize = func(key string) error {
			var err error
			if match, authStatus, err = live.keys.authorize(key); err != nil {
				return err
			}
			m.authorize()
			return nil
		}
	}
	dec, err := decode(r, body, lim)
	if n, ok := errors.AsType[tooManyLines](err); ok {
		h.stats.tooLarge.Add(1)
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch of %d events exceeds the limit of %d events", int(n), live.maxEvents))
	}
	if errors.Is(err, errTooManyEvents) {
		h.stats.tooLarge.Add(1)
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch of more than %d events exceeds the limit of %d events", live.maxEvents, live.maxEvents))
	}
	if _, ok := errors.AsType[*errExpansion](err); ok {
		h.stats.tooLarge.Add(1)
		return writeError(w, http.StatusRequestEntityTooLarge, err.Error())
	}
	switch {
	case errors.Is(err, errBusy):
		return h.busy(w)
	case authStatus != 0:
		return h.writeStatus(w, authStatus, err)
	case errors.Is(err, errKeyFirst):
		return h.writeStatus(w, http.StatusUnauthorized, err)
	case err != nil:
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	if n := len(dec.Events) + len(dec.Rejected); n > live.maxEvents {
		h.stats.tooLarge.Add(1)
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch of %d events exceeds the limit of %d events", n, live.maxEvents))
	}
	if !m.authorized {
		// No key in the headers nor in the body (or a body format with
		// no place for one): refused.
		var status int
		if match, status, err = live.keys.authorize(dec.WriteKey); err != nil {
			return h.writeStatus(w, status, err)
		}
		m.authorize()
	}
	if match.Pin {
		if explicit != "" && explicit != match.Class {
			return writeError(w, http.StatusForbidden, fmt.Sprintf("class %q refused: this write key sends only to its own class", explicit))
		}
		explicit = match.Class
	}
	resp := response{Rejected: dec.Rejected}
	if n := len(resp.Rejected) - p.opts.MaxRejected; n > 0 {
		resp.Rejected, resp.Omitted = resp.Rejected[:p.opts.MaxRejected], n
	}
	if resp.Rejected == nil {
		resp.Rejected = []Rejection{}
	}
	h.stats.rejected.Add(uint64(len(dec.Rejected)))
	if len(dec.Events) == 0 {
		switch {
		case len(dec.Rejected) > 0:
			resp.Error = fmt.Sprintf("no valid events: %d rejected", len(dec.Rejected))
		case source == sourceEvents:
			resp.Error = "empty body: no events"
		default:
			// An SDK's empty batch (a flush with nothing in it) is not an error.
			return h.ok(w, r, resp)
		}
		return writeJSON(w, http.StatusBadRequest, resp)
	}

	scope := source
	if match.Source != "" {
		scope = match.Source
	}
	bufs := p.getBufs()
	defer p.putBufs(bufs)
	dups, err := p.prepare(&pipeBatch{cfg: live, source: source, scope: scope, class: explicit, keyClass: match.Class, events: dec.Events}, bufs, m)
	resp.Duplicates = dups
	h.stats.duplicates.Add(uint64(dups))
	if err != nil {
		return h.busy(w)
	}

	// One Sink call per class, in the order the classes appeared.
	for _, g := range bufs.order {
		switch out, err := p.store(r.Context(), g.class, g.bodies); out {
		case outStored:
			resp.Accepted += len(g.bodies)
			p.commit(g.keys)
		case outDropped:
			resp.Dropped += len(g.bodies)
		default:
			h.stats.accepted.Add(uint64(resp.Accepted))
			return h.sinkError(w, g.class, len(g.bodies), resp, out, err)
		}
	}
	h.stats.accepted.Add(uint64(resp.Accepted))
	h.stats.dropped.Add(uint64(resp.Dropped))
	return h.ok(w, r, resp)
}

// ok answers a request whose good events are all durable (or dropped by a
// drop_newest class, or repeats). Snowplow's pixel (GET /i) gets a pixel.
func (h *Handler) ok(w http.ResponseWriter, r *http.Request, resp response) int {
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "image/gif")
		w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
		w.WriteHeader(http.StatusOK)
		w.Write(pixelGIF)
		return http.StatusOK
	}
	return writeJSON(w, http.StatusOK, resp)
}

// pixelGIF is a transparent 1×1 GIF, what Snowplow's collector answers to
// GET /i.
var pixelGIF = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x01D\x00;")

// sinkError answers a request whose class refused its events. What earlier
// classes took is durable and counted in "accepted"; a client retrying
// the whole request repeats those, and the dedup window drops the repeats
// of events that have ids. The answer's message is fixed per cause: the
// Sink's errors name files, sizes and caps, which are no business of
// producers (they go to the log where they help an operator). A failure
// that is not the request's fault is a 503 with Retry-After, never a 500:
// SDKs give up on a 500.
func (h *Handler) sinkError(w http.ResponseWriter, class string, n int, resp response, out outcome, err error) int {
	resp.Error = err.Error()
	status := http.StatusServiceUnavailable
	o := &h.p.opts
	switch out {
	case outFull:
		resp.Error = fmt.Sprintf("class %q is full: retry later", class)
		w.Header().Set("Retry-After", strconv.Itoa(o.RetryAfterFull))
		status = http.StatusTooManyRequests
	case outNoSpace:
		// 503, not 507: SDKs retry 503 with Retry-After and drop on 507.
		// The spool logs the disk filling up (once, not per request); the
		// error names files, which are no business of producers.
		resp.Error = "spool disk full"
		w.Header().Set("Retry-After", strconv.Itoa(o.RetryAfterClose))
		status = http.StatusServiceUnavailable
	case outClosed:
		resp.Error = "shutting down: retry later"
		w.Header().Set("Retry-After", strconv.Itoa(o.RetryAfterClose))
		status = http.StatusServiceUnavailable
	case outTooLarge:
		o.Logger.Warn("ingest refused as too large", "class", class, "events", n, "err", err)
		h.stats.tooLarge.Add(1)
		resp.Error = fmt.Sprintf("%d events of class %q are more than the class stores at once: send smaller batches", n, class)
		status = http.StatusRequestEntityTooLarge
	case outInvalid:
		status = http.StatusBadRequest
	case outCanceled:
		// The client went away or the server's deadline passed before
		// the events were taken: nothing of this class is durable.
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(o.RetryAfterFull))
	default:
		o.Logger.Error("ingest failed", "class", class, "events", n, "err", err)
		resp.Error = "internal error storing the events: retry later"
		w.Header().Set("Retry-After", strconv.Itoa(o.RetryAfterClose))
	}
	return writeJSON(w, status, resp)
}

// busy answers a request whose memory charge the budget refused.
func (h *Handler) busy(w http.ResponseWriter) int {
	h.stats.busy.Add(1)
	w.Header().Set("Retry-After", strconv.Itoa(h.p.opts.RetryAfterFull))
	return writeError(w, http.StatusTooManyRequests, "too many requests in flight: retry later")
}

func (h *Handler) unauthorized(w http.ResponseWriter, err error) int {
	return h.writeStatus(w, http.StatusUnauthorized, err)
}

func (h *Handler) writeStatus(w http.ResponseWriter, status int, err error) int {
	if status == http.StatusUnauthorized {
		h.stats.unauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", authChallenge)
	}
	return writeError(w, status, err.Error())
}

func methodNotAllowed(w http.ResponseWriter, allow string) int {
	w.Header().Set("Allow", allow)
	return writeError(w, http.StatusMethodNotAllowed, "method not allowed: use "+allow)
}

func writeError(w http.ResponseWriter, status int, msg string) int {
	return writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) int {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen for our types
		b = []byte(`{"error":"internal: encoding response"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
	return status
}
