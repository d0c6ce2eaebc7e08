package wire

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// Version is the envelope format version of a batch compressed without a
// dictionary. Such batches are byte for byte what format version 1 always
// was, so a consumer that knows only version 1 still reads them.
const Version = "1"

// VersionDict is the format version of a batch whose zstd frame was
// compressed with a trained dictionary: version 1 plus the Sluice-Dict
// header naming the dictionary. A consumer needs the dictionary to decode it.
const VersionDict = "2"

// Dictionary ids. A dictionary's id is the zstd dictionary id written in the
// dictionary itself and in every frame compressed with it; zstd reserves ids
// below 32768 and from 2^31 on. One id names one dictionary for as long as a
// stream can hold a batch that uses it: ids are reserved in the dictionary
// bucket (see DictBucket) and never reused.
const (
	MinDictID = 1 << 15
	MaxDictID = 1<<31 - 1
)

// DictBucket returns the name of the JetStream key-value bucket that holds
// the dictionaries of the batches published to stream: one key per
// dictionary (DictKey), its value the dictionary in zstd's format, written
// and acknowledged before the first batch that uses it is published.
func DictBucket(stream string) string { return stream + "_DICT" }

// DictKey returns the key of dictionary id in its bucket: the id in decimal.
func DictKey(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

// Encoding is the only body encoding of format version 1: a zstd frame of
// NDJSON.
const Encoding = "zstd"

// Header names. They are case-sensitive, as NATS headers are.
const (
	HdrVersion  = "Sluice-Version"        // format version, "1"
	HdrNode     = "Sluice-Node"           // name of the edge node that shipped the batch
	HdrSpool    = "Sluice-Spool"          // id of the spool the events came from
	HdrClass    = "Sluice-Class"          // traffic class
	HdrCount    = "Sluice-Count"          // number of events (NDJSON lines) in the body
	HdrRange    = "Sluice-Range"          // spool range "first-last", inclusive
	HdrEncoding = "Sluice-Encoding"       // body encoding, "zstd"
	HdrOldest   = "Sluice-Oldest"         // ingest time of the oldest event, RFC 3339 with nanoseconds
	HdrLevel    = "Sluice-Level"          // degradation level 0..3 the batch was shipped at; absent = 0
	HdrDropped  = "Sluice-Dropped-Fields" // comma-separated JSON paths dropped from events; absent = none
	HdrDict     = "Sluice-Dict"           // version 2: id of the zstd dictionary the body needs, decimal
	HdrMsgID    = "Nats-Msg-Id"           // JetStream deduplication id, see MsgID
)

// Batch is the metadata of one published batch, and after Decode its events.
type Batch struct {
	Node   string
	Spool  string
	Class  string
	First  uint64 // first spool sequence in the batch
	Last   uint64 // last spool sequence in the batch; Last-First+1 >= Count (ranges may span dropped events)
	Count  int
	Oldest time.Time // ingest time of the oldest event; zero if unknown
	Level  int       // degradation level the batch was shipped at
	// Dropped lists the JSON paths removed from events because the link was
	// degraded. A consumer that sees it knows the events are partial.
	Dropped []string
	// Dict is the id of the zstd dictionary the body was compressed with;
	// 0 = none (format version 1).
	Dict uint32

	// Events are the decoded NDJSON lines, without their newlines. Set by
	// Decode only; they share one buffer owned by the Decoder.
	Events [][]byte
}

// MsgID returns the JetStream deduplication id of the batch covering
// spool range [first, last] of class in the spool with the given id. It is a
// pure function of its arguments, so a batch republished after a retry or a
// restart carries the same id.
func MsgID(spool, class string, first, last uint64) string {
	return spool + "." + class + "." + strconv.FormatUint(first, 10) + "-" + strconv.FormatUint(last, 10)
}

// Header returns the NATS headers describing b, including its Nats-Msg-Id.
func (b *Batch) Header() nats.Header {
	h := nats.Header{
		HdrVersion:  {Version},
		HdrNode:     {b.Node},
		HdrSpool:    {b.Spool},
		HdrClass:    {b.Class},
		HdrCount:    {strconv.Itoa(b.Count)},
		HdrRange:    {strconv.FormatUint(b.First, 10) + "-" + strconv.FormatUint(b.Last, 10)},
		HdrEncoding: {Encoding},
		HdrMsgID:    {MsgID(b.Spool, b.Class, b.First, b.Last)},
	}
	if !b.Oldest.IsZero() {
		h[HdrOldest] = []string{b.Oldest.UTC().Format(time.RFC3339Nano)}
	}
	if b.Level != 0 {
		h[HdrLevel] = []string{strconv.Itoa(b.Level)}
	}
	if len(b.Dropped) > 0 {
		h[HdrDropped] = []string{strings.Join(b.Dropped, ",")}
	}
	if b.Dict != 0 {
		h[HdrVersion] = []string{VersionDict}
		h[HdrDict] = []string{DictKey(b.Dict)}
	}
	return h
}

// ParseHeader reads the batch metadata from h. It does not touch the body.
func ParseHeader(h nats.Header) (Batch, error) {
	var b Batch
	switch v := get(h, HdrVersion); v {
	case Version:
		if _, ok := h[HdrDict]; ok {
			return b, fmt.Errorf("%w: %s in a version %s batch", ErrHeader, HdrDict, Version)
		}
	case VersionDict:
		id, err := strconv.ParseUint(get(h, HdrDict), 10, 32)
		if err != nil || id < MinDictID || id > MaxDictID {
			return b, fmt.Errorf("%w: %s %q", ErrHeader, HdrDict, get(h, HdrDict))
		}
		b.Dict = uint32(id)
	default:
		return b, fmt.Errorf("%w: %s %q", ErrVersion, HdrVersion, v)
	}
	if v := get(h, HdrEncoding); v != Encoding {
		return b, fmt.Errorf("%w: %s %q, want %q", ErrHeader, HdrEncoding, v, Encoding)
	}
	b.Node, b.Spool, b.Class = get(h, HdrNode), get(h, HdrSpool), get(h, HdrClass)
	if b.Class == "" {
		return b, fmt.Errorf("%w: %s missing", ErrHeader, HdrClass)
	}
	n, err := strconv.Atoi(get(h, HdrCount))
	if err != nil || n < 0 {
		return b, fmt.Errorf("%w: %s %q", ErrHeader, HdrCount, get(h, HdrCount))
	}
	b.Count = n
	r := get(h, HdrRange)
	first, last, ok := strings.Cut(r, "-")
	if ok {
		b.First, err = strconv.ParseUint(first, 10, 64)
		if err == nil {
			b.Last, err = strconv.ParseUint(last, 10, 64)
		}
	}
	if !ok || err != nil || b.Last < b.First || (b.Count > 0 && b.Last-b.First < uint64(b.Count-1)) {
		return b, fmt.Errorf("%w: %s %q for %d events", ErrHeader, HdrRange, r, b.Count)
	}
	if v := get(h, HdrOldest); v != "" {
		// Header writes Oldest in UTC, and RFC 3339 has four-digit years.
		b.Oldest, err = time.Parse(time.RFC3339Nano, v)
		if y := b.Oldest.UTC().Year(); err != nil || y < 0 || y > 9999 {
			return b, fmt.Errorf("%w: %s %q", ErrHeader, HdrOldest, v)
		}
	}
	if v := get(h, HdrLevel); v != "" {
		if b.Level, err = strconv.Atoi(v); err != nil || b.Level < 0 || b.Level > 3 {
			return b, fmt.Errorf("%w: %s %q", ErrHeader, HdrLevel, v)
		}
	}
	if v := get(h, HdrDropped); v != "" {
		b.Dropped = strings.Split(v, ",")
	}
	return b, nil
}

// get is h.Get without its panic on a key present with no values.
func get(h nats.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// DefaultMaxSize is the default bound on a batch's decompressed body: 64 MiB.
const DefaultMaxSize = 64 << 20

// Decoder decodes batches. It reuses its buffers and a zstd decoder, so it
// is not safe for concurrent use; use one per goroutine.
//
// A Decoder made WithDictionaries decodes version 2 batches too: it gets
// each dictionary from its source the first time a batch names it and keeps
// the 16 it used last (at most 16 MiB of them) ready.
type Decoder struct {
	max int
	zd  *zstd.Decoder // version 1: no dictionaries registered, ever
	buf []byte
	evs [][]byte

	src       Dictionaries
	zdict     *zstd.Decoder // version 2: made on the first, holds dictIDs
	dictIDs   []uint32      // registered with zdict, least recently used first
	dictSizes []int         // their sizes, bytes
}

// NewDecoder returns a Decoder that refuses bodies that decompress to more
// than maxSize bytes (DefaultMaxSize if maxSize <= 0).
func NewDecoder(maxSize int, opts ...DecoderOption) (*Decoder, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	d := &Decoder{max: maxSize}
	for _, o := range opts {
		o(d)
	}
	zd, err := zstd.NewReader(nil, d.zstdOptions()...)
	if err != nil {
		return nil, err
	}
	d.zd = zd
	return d, nil
}

// zstdOptions are the options of both zstd decoders.
func (d *Decoder) zstdOptions() []zstd.DOption {
	// zstd refuses a window below 1 KiB, and with a smaller limit it
	// would refuse every frame; Decode checks maxSize itself.
	zmax := uint64(max(d.max, zstd.MinWindowSize))
	return []zstd.DOption{
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(zmax),
		zstd.WithDecoderMaxWindow(zmax),
	}
}

// Close releases the decoder's resources. It is idempotent.
func (d *Decoder) Close() {
	if d.zd != nil {
		d.zd.Close()
		d.zd = nil
	}
	if d.zdict != nil {
		d.zdict.Close()
		d.zdict = nil
	}
	d.dictIDs, d.dictSizes = nil, nil
}

// Decode is DecodeContext without a context: a dictionary source's lookup
// is bounded only by the source itself.
func (d *Decoder) Decode(h nats.Header, body []byte) (Batch, error) {
	return d.DecodeContext(context.Background(), h, body)
}

// DecodeContext parses the headers and decompresses the body of one batch
// message. The returned events alias the Decoder's buffer until the next
// Decode. ctx bounds the lookup of a version 2 batch's dictionary, if the
// Decoder does not hold it yet.
//
// Every zstd frame of a version 2 batch must name the dictionary of its
// Sluice-Dict header, or none (ErrBody otherwise). ErrDict means the dictionary
// could not be had now: the batch may decode later. ErrBadDict means the
// source returned something else than that dictionary.
func (d *Decoder) DecodeContext(ctx context.Context, h nats.Header, body []byte) (Batch, error) {
	b, err := ParseHeader(h)
	if err != nil {
		return b, err
	}
	zd := d.zd
	if b.Dict != 0 {
		uses, err := checkFrames(body, b.Dict)
		if err != nil {
			return b, err
		}
		if uses {
			if err := d.useDict(ctx, b.Dict); err != nil {
				return b, err
			}
			zd = d.zdict
		}
	}
	d.buf, err = zd.DecodeAll(body, d.buf[:0])
	if err != nil {
		return b, fmt.Errorf("%w: zstd: %v", ErrBody, err)
	}
	if len(d.buf) > d.max {
		return b, fmt.Errorf("%w: %d bytes decompressed, limit %d", ErrBody, len(d.buf), d.max)
	}
	d.evs = SplitLines(d.evs[:0], d.buf)
	if len(d.evs) != b.Count {
		return b, fmt.Errorf("%w: %d events in body, %s says %d", ErrBody, len(d.evs), HdrCount, b.Count)
	}
	b.Events = d.evs
	return b, nil
}

// SplitLines appends to dst the newline-terminated lines of ndjson without
// their newlines; a final line without a newline counts too, empty lines do
// not.
func SplitLines(dst [][]byte, ndjson []byte) [][]byte {
	for len(ndjson) > 0 {
		i := bytes.IndexByte(ndjson, '\n')
		if i < 0 {
			i = len(ndjson)
		}
		if line := ndjson[:i]; len(line) > 0 {
			dst = append(dst, line[:len(line):len(line)])
		}
		if i == len(ndjson) {
			break
		}
		ndjson = ndjson[i+1:]
	}
	return dst
}
