package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// Dictionaries is where a Decoder gets the zstd dictionaries that version 2
// batches name. BucketDictionaries is the one that reads a stream's
// dictionary bucket; a consumer may write its own (a local directory, a
// cache in front of another store).
type Dictionaries interface {
	// Dictionary returns dictionary id in zstd's dictionary format (its
	// magic number, then id, then tables and content), or an error if it
	// cannot be had now. The Decoder does not modify or keep the slice.
	Dictionary(ctx context.Context, id uint32) ([]byte, error)
}

// MaxDictSize bounds a dictionary a Decoder accepts from its source: 1 MiB,
// the default max_payload of a NATS server and so of a KV value. Trained
// dictionaries are about 100 KB.
const MaxDictSize = 1 << 20

// Bounds of the dictionaries a Decoder keeps ready: a node has one current
// dictionary per class, two while one replaces another.
const (
	decoderDicts     = 16
	decoderDictBytes = 16 << 20
)

// dictMagic starts every dictionary in zstd's format.
const dictMagic = "\x37\xa4\x30\xec"

// DecoderOption configures a Decoder made by NewDecoder.
type DecoderOption func(*Decoder)

// WithDictionaries gives the Decoder the source of the dictionaries that
// version 2 batches need. Without it, a version 2 batch is ErrDict.
func WithDictionaries(src Dictionaries) DecoderOption {
	return func(d *Decoder) { d.src = src }
}

// checkDict returns ErrBadDict, wrapped with what is wrong, unless raw
// looks like dictionary id in zstd's format within MaxDictSize. It does not
// parse the tables: registering the dictionary with a zstd decoder does.
func checkDict(raw []byte, id uint32) error {
	switch {
	case len(raw) > MaxDictSize:
		return fmt.Errorf("%w %d: %d bytes, limit %d", ErrBadDict, id, len(raw), MaxDictSize)
	case len(raw) < 8 || string(raw[:4]) != dictMagic:
		return fmt.Errorf("%w %d: not in zstd's dictionary format (no magic number)", ErrBadDict, id)
	}
	if got := binary.LittleEndian.Uint32(raw[4:8]); got != id {
		return fmt.Errorf("%w %d: the dictionary says it is %d", ErrBadDict, id, got)
	}
	return nil
}

// useDict makes dictionary id ready in d.zdict, getting it from d.src if
// d.zdict does not hold it yet, and evicting the least recently used ones
// beyond the Decoder's bounds.
func (d *Decoder) useDict(ctx context.Context, id uint32) error {
	if i := slices.Index(d.dictIDs, id); i >= 0 {
		if i != len(d.dictIDs)-1 { // most recently used last
			d.dictIDs = append(slices.Delete(d.dictIDs, i, i+1), id)
			size := d.dictSizes[i]
			d.dictSizes = append(slices.Delete(d.dictSizes, i, i+1), size)
		}
		return nil
	}
	if d.src == nil {
		return fmt.Errorf("%w: dictionary %d: this Decoder has no dictionary source (wire.WithDictionaries)", ErrDict, id)
	}
	raw, err := d.src.Dictionary(ctx, id)
	if err != nil {
		if errors.Is(err, ErrBadDict) {
			return err
		}
		return fmt.Errorf("%w: dictionary %d: %w", ErrDict, id, err)
	}
	if err := checkDict(raw, id); err != nil {
		return err
	}
	if d.zdict == nil {
		zd, err := zstd.NewReader(nil, d.zstdOptions()...)
		if err != nil {
			return err
		}
		d.zdict = zd
	}
	// Evict first so that the bounds hold with the new one in.
	var evict []uint32
	total := len(raw)
	for _, s := range d.dictSizes {
		total += s
	}
	n := 0
	for len(d.dictIDs)-n+1 > decoderDicts || (total > decoderDictBytes && n < len(d.dictIDs)) {
		evict = append(evict, d.dictIDs[n])
		total -= d.dictSizes[n]
		n++
	}
	opts := []zstd.DOption{zstd.WithDecoderDicts(raw)}
	if len(evict) > 0 {
		opts = append([]zstd.DOption{zstd.WithDecoderDictDelete(evict...)}, opts...)
	}
	// ResetWithOptions with no reader prepares DecodeAll only; a failed
	// option leaves the dictionaries registered before it.
	if err := d.zdict.ResetWithOptions(nil, opts...); err != nil {
		if len(evict) > 0 {
			// The deletion may have been applied: forget what it removed.
			d.dictIDs, d.dictSizes = d.dictIDs[n:], d.dictSizes[n:]
		}
		return fmt.Errorf("%w %d: %v", ErrBadDict, id, err)
	}
	d.dictIDs = append(d.dictIDs[n:], id)
	d.dictSizes = append(d.dictSizes[n:], len(raw))
	return nil
}

// checkFrames returns ErrBody, wrapped with what is wrong, unless body is a
// sequence of whole zstd frames (skippable ones allowed) each of which
// names dictionary id or none: zstd writes the frame of an empty input
// without its dictionary. It reports whether a frame names id. It reads
// only frame and block headers, so a frame that names another dictionary is
// refused before any dictionary is fetched or any block decoded.
func checkFrames(body []byte, id uint32) (uses bool, err error) {
	for frame := 0; len(body) > 0; frame++ {
		var h zstd.Header
		rest, err := h.DecodeAndStrip(body)
		if err != nil {
			return false, fmt.Errorf("%w: zstd frame %d: %v", ErrBody, frame, err)
		}
		if h.Skippable {
			if uint64(h.SkippableSize) > uint64(len(rest)) {
				return false, fmt.Errorf("%w: zstd frame %d: skippable frame of %d bytes, %d left", ErrBody, frame, h.SkippableSize, len(rest))
			}
			body = rest[h.SkippableSize:]
			continue
		}
		switch h.DictionaryID {
		case id:
			uses = true
		case 0:
		default:
			return false, fmt.Errorf("%w: zstd frame %d names dictionary %d, %s says %d", ErrBody, frame, h.DictionaryID, HdrDict, id)
		}
		for last := false; !last; {
			if len(rest) < 3 {
				return false, fmt.Errorf("%w: zstd frame %d: truncated block header", ErrBody, frame)
			}
			bh := uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
			last = bh&1 != 0
			size := int(bh >> 3)
			switch (bh >> 1) & 3 {
			case 1: // RLE: one byte, repeated
				size = 1
			case 3:
				return false, fmt.Errorf("%w: zstd frame %d: reserved block type", ErrBody, frame)
			}
			if len(rest)-3 < size {
				return false, fmt.Errorf("%w: zstd frame %d: truncated block", ErrBody, frame)
			}
			rest = rest[3+size:]
		}
		if h.HasCheckSum {
			if len(rest) < 4 {
				return false, fmt.Errorf("%w: zstd frame %d: truncated checksum", ErrBody, frame)
			}
			rest = rest[4:]
		}
		body = rest
	}
	return uses, nil
}
