package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// A record holds the events of one Append call. Its bbolt key is the 8-byte
// big-endian seq of its first event; its value is
//
//	[1 byte format version][4 bytes CRC32C of everything after the CRC]
//	[8 bytes append time, unix ns, big endian][uvarint event count]
//	count × ([uvarint len][len bytes])
const (
	recordVersion    = 1
	recordHeaderSize = 1 + 4 + 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodedSize is the size of the record encodeRecord makes for events.
func encodedSize(events [][]byte) int {
	n := recordHeaderSize + uvarintLen(uint64(len(events)))
	for _, e := range events {
		n += uvarintLen(uint64(len(e))) + len(e)
	}
	return n
}

// encodeRecord encodes events appended at time t. It copies each event once.
func encodeRecord(t int64, events [][]byte) []byte {
	return appendRecord(nil, t, events)
}

// appendRecord is encodeRecord into dst's storage (from dst[:0]), grown
// if it is short.
func appendRecord(dst []byte, t int64, events [][]byte) []byte {
	size := encodedSize(events)
	var b []byte
	if cap(dst) < size {
		b = make([]byte, recordHeaderSize, size)
	} else {
		b = dst[:recordHeaderSize]
	}
	b[0] = recordVersion
	binary.BigEndian.PutUint64(b[5:13], uint64(t))
	b = binary.AppendUvarint(b, uint64(len(events)))
	for _, e := range events {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
}

// record is a parsed, verified record. events aliases the encoded value.
type record struct {
	time   int64
	count  uint64
	events []byte // count × ([uvarint len][bytes]), verified to be well formed
}

// parseRecord verifies v (version, CRC, framing) without copying it.
func parseRecord(v []byte) (record, error) {
	if len(v) < recordHeaderSize+1 {
		return record{}, fmt.Errorf("record of %d bytes: %w", len(v), ErrCorrupt)
	}
	if v[0] != recordVersion {
		return record{}, fmt.Errorf("record version %d: %w", v[0], ErrCorrupt)
	}
	if got, want := crc32.Checksum(v[5:], castagnoli), binary.BigEndian.Uint32(v[1:5]); got != want {
		return record{}, fmt.Errorf("record crc %08x, want %08x: %w", got, want, ErrCorrupt)
	}
	r := record{time: int64(binary.BigEndian.Uint64(v[5:13]))}
	count, n := binary.Uvarint(v[recordHeaderSize:])
	if n <= 0 || count == 0 || n != uvarintLen(count) { // canonical varints only: a record re-encodes to its bytes
		return record{}, fmt.Errorf("record event count: %w", ErrCorrupt)
	}
	r.count = count
	r.events = v[recordHeaderSize+n:]
	// Walk the framing once so that iteration cannot go out of bounds.
	rest := r.events
	for i := uint64(0); i < count; i++ {
		l, n := binary.Uvarint(rest)
		if n <= 0 || n != uvarintLen(l) || l > uint64(len(rest)-n) {
			return record{}, fmt.Errorf("record event %d of %d: bad length: %w", i, count, ErrCorrupt)
		}
		rest = rest[n+int(l):]
	}
	if len(rest) != 0 {
		return record{}, fmt.Errorf("record: %d trailing bytes: %w", len(rest), ErrCorrupt)
	}
	return r, nil
}

// next splits the first event off a verified events region.
func nextEvent(rest []byte) (event, tail []byte) {
	l, n := binary.Uvarint(rest)
	end := n + int(l)
	return rest[n:end:end], rest[end:]
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func putSeq(b []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(b, seq)
}

func seqKey(seq uint64) []byte { return putSeq(make([]byte, 0, 8), seq) }
