package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// Request bodies are decoded by their Content-Encoding (RFC 9110 section
// 8.4), never by their Content-Type: RudderStack sends gzip labelled
// application/x-www-form-urlencoded. The codings are
//
//	gzip, x-gzip   RFC 1952, several members allowed
//	deflate        zlib-wrapped (RFC 1950) as RFC 9110 says; raw deflate
//	               (RFC 1951) when the first two bytes are no zlib header
//	zstd           RFC 8878, window at most zstdMaxWindow
//	identity, ""   none
//
// A list such as "gzip, identity" names the codings in the order they were
// applied, so they are removed right to left. A body without codings that
// starts with the gzip magic bytes 1f 8b is gunzipped anyway: SDKs send
// these, and NDJSON and JSON never start with 0x1f.
//
// Every coding's output is bounded by MaxDecodedBytes as it streams: a
// decompression bomb is refused with 413 after at most MaxDecodedBytes+1
// decoded bytes, and is never expanded into memory.
//
// The gzip, zlib and flate readers are klauspost/compress's: 1.5 to 2
// times as fast as the standard library's on event bodies
// (BenchmarkDecodeBody), and with their readers pooled a body costs no
// allocation where the standard library's cost 11.

const (
	// maxContentCodings bounds the codings of one body, not counting
	// identity.
	maxContentCodings = 4
	// zstdMaxWindow bounds the window a zstd frame may declare, in bytes,
	// and so the memory of one decoder. 8 MiB is the window of zstd -19;
	// frames made with --long or --ultra are refused.
	zstdMaxWindow = 8 << 20
	// maxPooledBuffer is the largest buffer, in bytes, kept for the next
	// request; bigger ones are left to the garbage collector.
	maxPooledBuffer = 4 << 20
	// maxEchoedCoding bounds how much of an unknown coding a 415 message
	// repeats, in bytes.
	maxEchoedCoding = 32
	// readStep is the most a body's buffer grows by in one read, in bytes:
	// each step is charged to the budget before it is allocated.
	readStep = 32 << 10
)

// acceptEncoding lists the codings decodeBody removes, for the
// Accept-Encoding header of a 415 response (RFC 9110 section 15.5.16).
const acceptEncoding = "gzip, deflate, zstd"

// gzipID is ID1 ID2 (1f 8b), the first bytes of every gzip member (RFC
// 1952 section 2.3.1). handler.go's gzipMagic goes with readBody.
var gzipID = []byte{0x1f, 0x8b}

// bodyLimits bound a request body. They mirror the fields of Options of
// the same names; the zero value takes the same defaults.
type bodyLimits struct {
	// MaxBodyBytes bounds the body as received, in bytes. Default
	// DefaultMaxBodyBytes (8 MiB).
	MaxBodyBytes int64
	// MaxDecodedBytes bounds the body after removing its content codings,
	// in bytes. Default MaxBodyBytes. A body without codings is bounded by
	// MaxBodyBytes alone.
	MaxDecodedBytes int64
	// Meter is charged for the body's buffers, as received and decoded,
	// before they are allocated; nil charges nothing. A charge the budget
	// refuses ends the read with errBusy (429).
	Meter *meter
}

func (l *bodyLimits) setDefaults() {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxDecodedBytes <= 0 {
		l.MaxDecodedBytes = l.MaxBodyBytes
	}
}

// errDecodedTooLarge is how a stage says its output went past the limit.
var errDecodedTooLarge = errors.New("decoded body too large")

// coding is one content coding decodeBody removes.
type coding uint8

const (
	codingGzip coding = iota + 1
	codingDeflate
	codingZstd
)

func (c coding) String() string {
	switch c {
	case codingGzip:
		return "gzip"
	case codingDeflate:
		return "deflate"
	case codingZstd:
		return "zstd"
	}
	return "identity"
}

// decodedBody is a request body with its content codings removed. It is
// pooled: Bytes is valid until Release, and the caller must not retain it
// (nor slices of it, such as the events parseEvents returns) after.
type decodedBody struct {
	data []byte // the decoded body, aliasing raw or out

	raw meteredBuf   // the body as received
	out meteredBuf   // the decoded body, when there were codings
	rd  bytes.Reader // reads raw into the first stage

	codings [maxContentCodings]coding // in the order they were applied
	n       int                       // codings used
	stages  [maxContentCodings]stage  // stages[0] removes codings[n-1]
}

// stage removes one coding. Its readers are created on first use and
// reset for every later body.
type stage struct {
	br  *bufio.Reader // input of a stage after the first
	cap capReader     // the stage's output, bounded
	gz  *gzip.Reader
	fl  io.ReadCloser // raw deflate; a flate.Resetter
	zl  io.ReadCloser // zlib; a zlib.Resetter
	zs  *zstd.Decoder
}

var bodyPool = sync.Pool{New: func() any { return new(decodedBody) }}

// Bytes returns the decoded body, valid until Release.
func (b *decodedBody) Bytes() []byte { return b.data }

// Release returns b to its pool. b and its bytes must not be used after.
// Release of a nil *decodedBody does nothing.
func (b *decodedBody) Release() {
	if b == nil {
		return
	}
	b.data = nil
	b.rd.Reset(nil)
	for i := range b.stages {
		st := &b.stages[i]
		st.cap = capReader{}
		if st.br != nil {
			st.br.Reset(nil)
		}
		if st.zs != nil {
			st.zs.Reset(nil) // drops its reference to the input
		}
	}
	b.n = 0
	for _, mb := range []*meteredBuf{&b.raw, &b.out} {
		mb.reset()
		if cap(mb.b) > maxPooledBuffer {
			mb.b = nil
		}
	}
	bodyPool.Put(b)
}

// decodeBody reads r's body within lim and removes the codings its
// Content-Encoding names. It returns the body, or the status to answer and
// an error whose message is meant for the client:
//
//	413  Content-Length or body over MaxBodyBytes, decoded body over MaxDecodedBytes
//	415  a coding other than gzip, x-gzip, deflate, zstd or identity; answer
//	     with Accept-Encoding: acceptEncoding
//	400  corrupt or truncated compressed data, or a failed read of the body
//
// A zero-length body is returned as is, whatever its codings. The caller
// must Release the body once it is done with its bytes; on error there is
// nothing to release. The caller may wrap r.Body in http.MaxBytesReader so
// the server closes a connection whose body was too large; its
// *http.MaxBytesError also answers 413.
func decodeBody(r *http.Request, lim bodyLimits) (*decodedBody, int, error) {
	return decodeBodyFrom(r.Body, r.ContentLength, r.Header.Values("Content-Encoding"), lim)
}

// decodeBodyFrom is decodeBody for a body that did not come in an
// *http.Request: contentLength is its length if known or -1, and
// contentEncoding the values of its Content-Encoding fields in order. A
// nil body reads as empty.
func decodeBodyFrom(body io.Reader, contentLength int64, contentEncoding []string, lim bodyLimits) (*decodedBody, int, error) {
	lim.setDefaults()
	if contentLength > lim.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body of %d bytes exceeds the limit of %d bytes", contentLength, lim.MaxBodyBytes)
	}
	b := bodyPool.Get().(*decodedBody)
	status, err := b.decode(body, contentLength, contentEncoding, lim)
	if err != nil {
		b.Release()
		return nil, status, err
	}
	return b, 0, nil
}

func (b *decodedBody) decode(body io.Reader, contentLength int64, contentEncoding []string, lim bodyLimits) (int, error) {
	if err := b.parseCodings(contentEncoding); err != nil {
		return http.StatusUnsupportedMediaType, err
	}
	b.raw.reset()
	if body != nil {
		// The buffer grows with the bytes that arrive, each step charged
		// before it is allocated, never with what Content-Length
		// announces: a client that declares 4 MiB and sends one byte
		// holds a few KiB.
		step := readStep
		if contentLength >= 0 && contentLength < readStep {
			step = int(contentLength) + 1 // + 1 to see EOF without growing
		}
		tooLarge := fmt.Errorf("request body exceeds the limit of %d bytes", lim.MaxBodyBytes)
		if err := b.raw.readFrom(lim.Meter, body, step, lim.MaxBodyBytes, tooLarge); err != nil {
			if err == tooLarge {
				return http.StatusRequestEntityTooLarge, err
			}
			if errors.Is(err, errBusy) {
				return http.StatusTooManyRequests, err
			}
			if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds the limit of %d bytes", mbe.Limit)
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				// The server's ReadTimeout passed before the body ended.
				return http.StatusRequestTimeout, errors.New("request body not received in time")
			}
			return http.StatusBadRequest, fmt.Errorf("reading body: %v", err)
		}
	}
	raw := b.raw.b
	if b.n == 0 && bytes.HasPrefix(raw, gzipID) {
		b.codings[0], b.n = codingGzip, 1 // sniffed
	}
	if b.n == 0 || len(raw) == 0 {
		b.data = raw
		return 0, nil
	}

	limit := lim.MaxDecodedBytes
	b.rd.Reset(raw)
	var prev io.Reader // the previous stage's output
	for i := range b.n {
		c := b.codings[b.n-1-i] // right to left
		st := &b.stages[i]
		var src flate.Reader
		var head []byte // the stage's first bytes, for sniffing
		if i == 0 {
			src, head = &b.rd, raw
		} else {
			if st.br == nil {
				st.br = bufio.NewReader(prev)
			} else {
				st.br.Reset(prev)
			}
			src = st.br
			var err error
			if head, err = st.br.Peek(2); err != nil && err != io.EOF {
				return decodeStatus(c, err, limit)
			}
		}
		out, err := st.open(c, src, head)
		if err != nil {
			return decodeStatus(c, err, limit)
		}
		st.cap = capReader{r: out, left: limit + 1, coding: c}
		prev = &st.cap
	}
	b.out.reset()
	if err := b.out.readFrom(lim.Meter, prev, readStep, limit, errDecodedTooLarge); err != nil {
		if errors.Is(err, errBusy) {
			return http.StatusTooManyRequests, err
		}
		return decodeStatus(b.codings[0], err, limit)
	}
	b.data = b.out.b
	return 0, nil
}

// parseCodings sets b.codings from the Content-Encoding field values, in
// the order they were applied, leaving out identity and empty elements.
func (b *decodedBody) parseCodings(values []string) error {
	b.n = 0
	for _, v := range values {
		for len(v) > 0 {
			var tok string
			if i := strings.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, ""
			}
			tok = strings.TrimSpace(tok)
			var c coding
			switch {
			case tok == "" || strings.EqualFold(tok, "identity"):
				continue
			case strings.EqualFold(tok, "gzip") || strings.EqualFold(tok, "x-gzip"):
				c = codingGzip
			case strings.EqualFold(tok, "deflate"):
				c = codingDeflate
			case strings.EqualFold(tok, "zstd"):
				c = codingZstd
			default:
				if len(tok) > maxEchoedCoding {
					tok = tok[:maxEchoedCoding] + "..."
				}
				return fmt.Errorf("unsupported Content-Encoding %q: want gzip, x-gzip, deflate, zstd or identity", tok)
			}
			if b.n == maxContentCodings {
				return fmt.Errorf("unsupported Content-Encoding: more than %d content codings", maxContentCodings)
			}
			b.codings[b.n] = c
			b.n++
		}
	}
	return nil
}

// open starts removing coding c from src, whose first bytes are head (or
// fewer if src is shorter).
func (st *stage) open(c coding, src flate.Reader, head []byte) (io.Reader, error) {
	switch c {
	case codingGzip:
		if st.gz == nil {
			st.gz = new(gzip.Reader)
		}
		if err := st.gz.Reset(src); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // a gzip body has at least one member
			}
			return nil, err
		}
		return st.gz, nil
	case codingDeflate:
		if !zlibHeader(head) {
			if st.fl == nil {
				st.fl = flate.NewReader(src)
			} else if err := st.fl.(flate.Resetter).Reset(src, nil); err != nil {
				return nil, err
			}
			return st.fl, nil
		}
		if st.zl == nil {
			zl, err := zlib.NewReader(src)
			if err != nil {
				return nil, err
			}
			st.zl = zl
		} else if err := st.zl.(zlib.Resetter).Reset(src, nil); err != nil {
			return nil, err
		}
		return st.zl, nil
	case codingZstd:
		if st.zs == nil {
			zs, err := zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1), // synchronous: no goroutines
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(zstdMaxWindow),
				zstd.WithDecoderMaxMemory(zstdMaxWindow),
				// Never decode a whole *bytes.Buffer up front: that
				// shortcut is bounded by MaxMemory, not by our limit.
				zstd.WithDecodeBuffersBelow(0),
			)
			if err != nil {
				return nil, err // cannot happen with these options
			}
			st.zs = zs
		}
		if err := st.zs.Reset(src); err != nil {
			return nil, err
		}
		return st.zs, nil
	}
	return nil, fmt.Errorf("no decoder for %v", c)
}

// zlibHeader reports whether head starts with a zlib header (RFC 1950
// section 2.2): compression method 8 (deflate), a window of at most 32 KiB
// and a check value that makes the first two bytes a multiple of 31. Raw
// deflate from an encoder never passes (its first byte would start a
// non-final stored block with a padding bit set); random bytes pass once
// in 16*2*31 = 992, and then fail to decode with a 400.
func zlibHeader(head []byte) bool {
	if len(head) < 2 {
		return false
	}
	cmf, flg := head[0], head[1]
	return cmf&0x0f == 8 && cmf>>4 <= 7 && (uint16(cmf)<<8|uint16(flg))%31 == 0
}

// decodeStatus turns the error of removing coding c into the status and
// message for the client: 413 for a decoded body over limit, else 400 with
// the coding that failed, such as "gzip: unexpected EOF" or
// "deflate: invalid checksum".
func decodeStatus(c coding, err error, limit int64) (int, error) {
	if errors.Is(err, errDecodedTooLarge) {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("decompressed body exceeds the limit of %d bytes", limit)
	}
	if ce, ok := err.(*codingError); ok {
		c, err = ce.coding, ce.err
	}
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return http.StatusBadRequest, fmt.Errorf("zstd: window size exceeds the limit of %d bytes; compress without --long or --ultra", zstdMaxWindow)
	}
	msg := err.Error()
	for _, p := range []string{"gzip: ", "flate: ", "zlib: ", "zstd: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return http.StatusBadRequest, fmt.Errorf("%v: %s", c, msg)
}

// codingError is a decoder's error on its way through later stages.
type codingError struct {
	coding coding
	err    error
}

func (e *codingError) Error() string { return e.coding.String() + ": " + e.err.Error() }
func (e *codingError) Unwrap() error { return e.err }

// capReader is a stage's output: it reads at most left bytes from r,
// failing with errDecodedTooLarge once all are read, and marks r's errors
// with the coding they came from.
type capReader struct {
	r      io.Reader
	left   int64 // the limit + 1, minus what was read
	coding coding
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errDecodedTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left <= 0 {
		return n, errDecodedTooLarge
	}
	if err != nil && err != io.EOF {
		if _, ok := err.(*codingError); !ok && !errors.Is(err, errDecodedTooLarge) {
			err = &codingError{c.coding, err}
		}
	}
	return n, err
}
