package ingest

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zlibBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func flateBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := flate.NewWriter(&buf, flate.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// storedFlate is b as raw deflate without compression: as long as b.
func storedFlate(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := flate.NewWriter(&buf, flate.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// errReader fails every read.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestDecodeBody(t *testing.T) {
	const limit = 100
	two := []byte("{\"id\":1}\n{\"id\":2}\n")
	full := bytes.Repeat([]byte("x"), limit) // exactly at the limit
	over := bytes.Repeat([]byte("x"), limit+1)
	gz := gzipBytes(t, two)
	zs := zstdBytes(t, two)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff // CRC-32 of the trailer
	corruptFlate := append([]byte{0x78, 0x9c}, 0xff, 0xff, 0xff, 0xff)

	type tc struct {
		name       string
		encoding   []string // Content-Encoding field values
		body       []byte
		length     int64 // Content-Length; 0 means len(body), -1 unknown
		reader     io.Reader
		lim        bodyLimits // zero: {limit, limit}
		want       []byte
		wantStatus int
		wantErr    string
	}
	tests := []tc{
		{name: "identity, no header", body: two, want: two},
		{name: "identity named", encoding: []string{"identity"}, body: two, want: two},
		{name: "empty", body: nil, want: nil},
		{name: "empty with gzip", encoding: []string{"gzip"}, body: nil, want: nil},
		{name: "identity at the body limit", body: full, want: full},
		{name: "identity over the decoded limit is fine", body: full, lim: bodyLimits{MaxBodyBytes: limit, MaxDecodedBytes: 10}, want: full},
		{name: "gzip", encoding: []string{"gzip"}, body: gz, want: two},
		{name: "x-gzip", encoding: []string{"x-gzip"}, body: gz, want: two},
		{name: "coding is case-insensitive", encoding: []string{" GZip "}, body: gz, want: two},
		{name: "gzip sniffed", body: gz, want: two},
		{name: "gzip sniffed under identity", encoding: []string{"identity"}, body: gz, want: two},
		{name: "gzip, identity", encoding: []string{"gzip, identity"}, body: gz, want: two},
		{name: "identity, gzip, empty elements", encoding: []string{",identity,, gzip ,"}, body: gz, want: two},
		{name: "gzip members", encoding: []string{"gzip"}, body: append(gzipBytes(t, two[:9]), gzipBytes(t, two[9:])...), want: two},
		{name: "deflate zlib", encoding: []string{"deflate"}, body: zlibBytes(t, two), want: two},
		{name: "deflate raw", encoding: []string{"deflate"}, body: flateBytes(t, two), want: two},
		{name: "zstd", encoding: []string{"zstd"}, body: zs, want: two},
		{name: "zstd frames", encoding: []string{"zstd"}, body: append(zstdBytes(t, two[:9]), zstdBytes(t, two[9:])...), want: two},
		{name: "zstd of a gzip body is not sniffed", encoding: []string{"zstd"}, body: zstdBytes(t, gz), want: gz},
		{name: "deflate, gzip: gunzip first", encoding: []string{"deflate, gzip"}, body: gzipBytes(t, zlibBytes(t, two)), want: two},
		{name: "two fields apply in order", encoding: []string{"zstd", "gzip"}, body: gzipBytes(t, zstdBytes(t, two)), want: two},
		{name: "gzip, gzip", encoding: []string{"gzip,gzip"}, body: gzipBytes(t, gz), want: two},
		{name: "gzip at the decoded limit", encoding: []string{"gzip"}, body: gzipBytes(t, full), want: full},

		{
			name: "unknown coding", encoding: []string{"br"}, body: two,
			wantStatus: 415, wantErr: `unsupported Content-Encoding "br": want gzip, x-gzip, deflate, zstd or identity`,
		},
		{
			name: "unknown coding in a list", encoding: []string{"gzip", "compress, gzip"}, body: two,
			wantStatus: 415, wantErr: `unsupported Content-Encoding "compress": want gzip, x-gzip, deflate, zstd or identity`,
		},
		{
			name: "unknown coding is truncated", encoding: []string{strings.Repeat("a", 100)}, body: two,
			wantStatus: 415, wantErr: `unsupported Content-Encoding "` + strings.Repeat("a", 32) + `...": want gzip, x-gzip, deflate, zstd or identity`,
		},
		{
			name: "too many codings", encoding: []string{"gzip, gzip, gzip, gzip, gzip"}, body: two,
			wantStatus: 415, wantErr: `unsupported Content-Encoding: more than 4 content codings`,
		},
		{
			name: "Content-Length over the limit", body: over,
			wantStatus: 413, wantErr: "request body of 101 bytes exceeds the limit of 100 bytes",
		},
		{
			name: "chunked body over the limit", body: over, length: -1,
			wantStatus: 413, wantErr: "request body exceeds the limit of 100 bytes",
		},
		{
			name: "MaxBytesReader", reader: http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(over)), 50), length: -1,
			wantStatus: 413, wantErr: "request body exceeds the limit of 50 bytes",
		},
		{
			name: "read error", reader: errReader{errors.New("connection reset")}, length: -1,
			wantStatus: 400, wantErr: "reading body: connection reset",
		},
		{
			name: "gzip over the decoded limit", encoding: []string{"gzip"}, body: gzipBytes(t, over),
			wantStatus: 413, wantErr: "decompressed body exceeds the limit of 100 bytes",
		},
		{
			name: "sniffed gzip over the decoded limit", body: gzipBytes(t, over), lim: bodyLimits{MaxBodyBytes: 1000, MaxDecodedBytes: 100},
			wantStatus: 413, wantErr: "decompressed body exceeds the limit of 100 bytes",
		},
		{
			name: "deflate over the decoded limit", encoding: []string{"deflate"}, body: zlibBytes(t, over),
			wantStatus: 413, wantErr: "decompressed body exceeds the limit of 100 bytes",
		},
		{
			name: "zstd over the decoded limit", encoding: []string{"zstd"}, body: zstdBytes(t, over),
			wantStatus: 413, wantErr: "decompressed body exceeds the limit of 100 bytes",
		},
		{
			name: "inner stage over the decoded limit", encoding: []string{"deflate, gzip"}, body: gzipBytes(t, storedFlate(t, make([]byte, 1000))), lim: bodyLimits{MaxBodyBytes: 1000, MaxDecodedBytes: 100},
			wantStatus: 413, wantErr: "decompressed body exceeds the limit of 100 bytes",
		},
		{
			name: "not gzip", encoding: []string{"gzip"}, body: two,
			wantStatus: 400, wantErr: "gzip: invalid header",
		},
		{
			name: "truncated gzip", encoding: []string{"gzip"}, body: gz[:len(gz)-5],
			wantStatus: 400, wantErr: "gzip: unexpected EOF",
		},
		{
			name: "truncated sniffed gzip", body: gz[:12],
			wantStatus: 400, wantErr: "gzip: unexpected EOF",
		},
		{
			name: "gzip header only", encoding: []string{"gzip"}, body: gz[:5],
			wantStatus: 400, wantErr: "gzip: unexpected EOF",
		},
		{
			name: "gzip bad checksum", encoding: []string{"gzip"}, body: badCRC,
			wantStatus: 400, wantErr: "gzip: invalid checksum",
		},
		{
			name: "gzip trailing garbage", encoding: []string{"gzip"}, body: append(bytes.Clone(gz), "junk after the stream"...),
			wantStatus: 400, wantErr: "gzip: invalid header",
		},
		{
			name: "corrupt deflate", encoding: []string{"deflate"}, body: corruptFlate,
			wantStatus: 400, wantErr: "deflate: corrupt input before offset 1",
		},
		{
			name: "truncated zlib", encoding: []string{"deflate"}, body: zlibBytes(t, two)[:10],
			wantStatus: 400, wantErr: "deflate: unexpected EOF",
		},
		{
			name: "not zstd", encoding: []string{"zstd"}, body: two,
			wantStatus: 400, wantErr: "zstd: invalid input: magic number mismatch",
		},
		{
			name: "truncated zstd", encoding: []string{"zstd"}, body: zs[:len(zs)-3],
			wantStatus: 400, wantErr: "zstd: unexpected EOF",
		},
		{
			name: "error in an inner stage names its coding", encoding: []string{"deflate, gzip"}, body: gzipBytes(t, two),
			wantStatus: 400, wantErr: "deflate: unexpected EOF",
		},
	}
	// Run twice so that the second round reuses pooled decoders that
	// failed or succeeded on other codings.
	for round := range 2 {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%d", tt.name, round), func(t *testing.T) {
				lim := tt.lim
				if lim == (bodyLimits{}) {
					lim = bodyLimits{MaxBodyBytes: limit, MaxDecodedBytes: limit}
				}
				rd, length := tt.reader, tt.length
				if rd == nil {
					rd = bytes.NewReader(tt.body)
				}
				if length == 0 {
					length = int64(len(tt.body))
				}
				b, status, err := decodeBodyFrom(rd, length, tt.encoding, lim)
				if tt.wantErr != "" {
					if err == nil || err.Error() != tt.wantErr || status != tt.wantStatus || b != nil {
						t.Fatalf("got %v, %d, %v; want nil, %d, %q", b, status, err, tt.wantStatus, tt.wantErr)
					}
					return
				}
				if err != nil || status != 0 {
					t.Fatalf("got %d, %v", status, err)
				}
				defer b.Release()
				if !bytes.Equal(b.Bytes(), tt.want) {
					t.Fatalf("body %q, want %q", b.Bytes(), tt.want)
				}
			})
		}
	}
}

// TestDecodeBodyRequest covers the *http.Request entry: Content-Type is
// ignored, several Content-Encoding fields form one list.
func TestDecodeBodyRequest(t *testing.T) {
	two := []byte("{\"id\":1}\n{\"id\":2}\n")
	r := httptest.NewRequest("POST", "/v1/batch", bytes.NewReader(gzipBytes(t, zlibBytes(t, two))))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded") // RudderStack
	r.Header.Add("Content-Encoding", "deflate")
	r.Header.Add("Content-Encoding", "gzip")
	b, status, err := decodeBody(r, bodyLimits{})
	if err != nil {
		t.Fatalf("%d %v", status, err)
	}
	defer b.Release()
	if !bytes.Equal(b.Bytes(), two) {
		t.Fatalf("body %q", b.Bytes())
	}

	r = httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("x", 200)))
	if _, status, err := decodeBody(r, bodyLimits{MaxBodyBytes: 100}); status != 413 || err == nil {
		t.Fatalf("got %d %v, want 413", status, err)
	}
	r = httptest.NewRequest("POST", "/", nil)
	r.Body = nil
	b, _, err = decodeBody(r, bodyLimits{})
	if err != nil || len(b.Bytes()) != 0 {
		t.Fatalf("nil body: %v %q", err, b.Bytes())
	}
	b.Release()
	(*decodedBody)(nil).Release()
}

// countingZeros yields zeros forever and counts them.
type countingZeros struct{ n int64 }

func (z *countingZeros) Read(p []byte) (int, error) {
	clear(p)
	z.n += int64(len(p))
	return len(p), nil
}

// TestCapReaderReadsLimitPlusOne pins the bound: a stage's output is read
// to at most limit+1 bytes before the body is refused.
func TestCapReaderReadsLimitPlusOne(t *testing.T) {
	for _, limit := range []int64{0, 1, 100, 512, 4096, 1 << 20} {
		z := &countingZeros{}
		var out bytes.Buffer
		_, err := out.ReadFrom(&capReader{r: z, left: limit + 1})
		if !errors.Is(err, errDecodedTooLarge) || z.n != limit+1 {
			t.Errorf("limit %d: read %d bytes, %v; want %d, errDecodedTooLarge", limit, z.n, err, limit+1)
		}
	}
}

// TestDecodeBodyBombs decodes bombs of 16 MiB to 1 GiB against a 1 MiB
// limit and checks that they are refused without being expanded into
// memory. TestCapReaderReadsLimitPlusOne pins the exact bound.
func TestDecodeBodyBombs(t *testing.T) {
	const limit = 1 << 20
	mib := make([]byte, 1<<20)
	gzMember := gzipBytes(t, mib)
	zsFrame := zstdBytes(t, mib, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	bombs := []struct {
		encoding string
		body     []byte
	}{
		{"gzip", bytes.Repeat(gzMember, 1024)},
		{"", bytes.Repeat(gzMember, 1024)}, // sniffed
		{"zstd", bytes.Repeat(zsFrame, 1024)},
		{"deflate", zlibBytes(t, bytes.Repeat(mib, 16))},
		{"gzip, gzip", gzipBytes(t, bytes.Repeat(gzMember, 1024))},
	}
	for _, bomb := range bombs {
		t.Run(bomb.encoding, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, status, err := decodeBodyFrom(bytes.NewReader(bomb.body), int64(len(bomb.body)), []string{bomb.encoding}, bodyLimits{MaxBodyBytes: 8 << 20, MaxDecodedBytes: limit})
			runtime.ReadMemStats(&after)
			if status != 413 || err == nil || err.Error() != "decompressed body exceeds the limit of 1048576 bytes" {
				t.Fatalf("got %d %v, want 413", status, err)
			}
			// The raw body, buffers of about the limit and decoder state
			// (pools are emptied at random under -race), never the
			// decoded 16 MiB to 1 GiB.
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d-byte bomb: allocated %d bytes", len(bomb.body), allocated)
			if allocated > 32<<20 {
				t.Fatalf("allocated %d bytes for a %d-byte bomb, want at most 32 MiB", allocated, len(bomb.body))
			}
		})
	}
}

func TestDecodeBodyZstdWindow(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	body := zstdBytes(t, big, zstd.WithWindowSize(32<<20), zstd.WithEncoderLevel(zstd.SpeedFastest))
	_, status, err := decodeBodyFrom(bytes.NewReader(body), int64(len(body)), []string{"zstd"}, bodyLimits{MaxDecodedBytes: 64 << 20})
	want := "zstd: window size exceeds the limit of 8388608 bytes; compress without --long or --ultra"
	if status != 400 || err == nil || err.Error() != want {
		t.Fatalf("got %d %v, want 400 %q", status, err, want)
	}
}

// FuzzDecodeBody feeds any body under any coding list: no panic, the
// statuses are the documented ones, the decoded body is within its limit,
// and a body without codings or magic comes back unchanged.
func FuzzDecodeBody(f *testing.F) {
	two := []byte("{\"id\":1}\n{\"id\":2}\n")
	f.Add(two, "")
	f.Add(gzipBytes(f, two), "gzip")
	f.Add(gzipBytes(f, two), "")
	f.Add(zlibBytes(f, two), "deflate")
	f.Add(flateBytes(f, two), "deflate")
	f.Add(zstdBytes(f, two), "zstd")
	f.Add(gzipBytes(f, zstdBytes(f, two)), "zstd, gzip")
	f.Add(gzipBytes(f, bytes.Repeat([]byte{'a'}, 5000)), "x-gzip")
	f.Add([]byte{0x1f, 0x8b, 0x08}, "identity")
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, "zstd")
	f.Fuzz(func(t *testing.T, body []byte, encoding string) {
		const maxBody, maxDecoded = 4096, 2048
		in := bytes.Clone(body)
		b, status, err := decodeBodyFrom(bytes.NewReader(body), -1, []string{encoding}, bodyLimits{MaxBodyBytes: maxBody, MaxDecodedBytes: maxDecoded})
		if !bytes.Equal(in, body) {
			t.Fatal("decodeBody modified its input")
		}
		if err != nil {
			if b != nil || (status != 400 && status != 413 && status != 415) || err.Error() == "" {
				t.Fatalf("got %v, %d, %v", b, status, err)
			}
			return
		}
		defer b.Release()
		if status != 0 {
			t.Fatalf("status %d without error", status)
		}
		if len(body) > maxBody {
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		plain := strings.Trim(strings.ToLower(encoding), " ,") == "" || strings.EqualFold(strings.TrimSpace(encoding), "identity")
		switch {
		case plain && !bytes.HasPrefix(body, gzipID):
			if !bytes.Equal(b.Bytes(), body) {
				t.Fatalf("identity body changed: %q -> %q", body, b.Bytes())
			}
		case len(b.Bytes()) > maxDecoded && !bytes.Equal(b.Bytes(), body): // identity may be up to maxBody
			t.Fatalf("decoded %d bytes, limit %d", len(b.Bytes()), maxDecoded)
		}
	})
}

var benchEvent = `{"type":"track","event":"Order Completed","messageId":"%016x-%016x","userId":"user-%d","anonymousId":"%016x","timestamp":"2026-03-01T12:%02d:%02d.%03dZ","context":{"library":{"name":"analytics.js","version":"5.2.0"},"page":{"path":"/checkout","url":"https://shop.example.com/checkout?ref=%x"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"properties":{"orderId":"o-%d","total":%d.%02d,"currency":"EUR"}}` + "\n"

// benchBody is 100 Segment-like events with random ids, about 45 KB as
// NDJSON.
func benchBody() []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	var b bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&b, benchEvent, rng.Uint64(), rng.Uint64(), rng.IntN(1000), rng.Uint64(), rng.IntN(60), rng.IntN(60), rng.IntN(1000), rng.Uint32(), i, rng.IntN(500), rng.IntN(100))
	}
	return b.Bytes()
}

// BenchmarkDecodeBody measures one 100-event body per op:
//
//	go test ./ingest -run '^$' -bench DecodeBody -benchmem
func BenchmarkDecodeBody(b *testing.B) {
	plain := benchBody()
	for _, c := range []struct {
		name     string
		encoding []string
		body     []byte
	}{
		{"plain", nil, plain},
		{"gzip", []string{"gzip"}, gzipBytes(b, plain)},
		{"deflate", []string{"deflate"}, zlibBytes(b, plain)},
		{"zstd", []string{"zstd"}, zstdBytes(b, plain)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(plain)))
			rd := bytes.NewReader(c.body)
			for b.Loop() {
				rd.Reset(c.body)
				body, _, err := decodeBodyFrom(rd, int64(len(c.body)), c.encoding, bodyLimits{})
				if err != nil {
					b.Fatal(err)
				}
				if len(body.Bytes()) != len(plain) {
					b.Fatalf("decoded %d bytes, want %d", len(body.Bytes()), len(plain))
				}
				body.Release()
			}
			b.ReportMetric(float64(len(c.body)), "wire-B")
		})
	}
}
