package aggregator

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestEncoderWindow(t *testing.T) {
	for _, tc := range []struct{ maxBytes, want int }{
		{0, 64 << 10},
		{1, 64 << 10},
		{64 << 10, 64 << 10},
		{64<<10 + 1, 128 << 10},
		{512 << 10, 512 << 10},
		{768 << 10, 1 << 20},
		{8 << 20, 8 << 20},
		{1 << 30, 8 << 20},
	} {
		if got := encoderWindow(tc.maxBytes); got != tc.want {
			t.Errorf("encoderWindow(%d) = %d, want %d", tc.maxBytes, got, tc.want)
		}
	}
}

// TestEncoderWindowSameFrames checks that the bounded window costs nothing
// on the wire: a batch up to the class's limit compresses to the very bytes
// zstd's default window gives, at every level; a larger one still decodes.
func TestEncoderWindowSameFrames(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var text []byte
	for len(text) < 600<<10 {
		text = fmt.Appendf(text, `{"type":"track","messageId":"%016x","event":"page %d","properties":{"path":"/p/%d","n":%d}}`+"\n",
			r.Uint64(), r.IntN(50), r.IntN(300), r.IntN(1e6))
	}
	const maxBytes = 512 << 10
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		def, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		bounded, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(encoderWindow(maxBytes)))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1000, 100 << 10, maxBytes} {
			if a, b := def.EncodeAll(text[:n], nil), bounded.EncodeAll(text[:n], nil); !bytes.Equal(a, b) {
				t.Errorf("%v, %d bytes: %d bytes with the bounded window, %d with the default", level, n, len(b), len(a))
			}
		}
		big := bounded.EncodeAll(text, nil)
		if got, err := dec.DecodeAll(big, nil); err != nil || !bytes.Equal(got, text) {
			t.Errorf("%v: a batch over the window does not decode: %v", level, err)
		}
		def.Close()
		bounded.Close()
	}
}
