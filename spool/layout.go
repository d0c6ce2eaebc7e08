package spool

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Segment layouts, recorded in bucket "m" under "version".
//
// Layout 1 (segFlat, spools written before layout 2) keeps every record
// directly in bucket "r". bbolt splits a leaf only once it holds more than
// four entries, so the last leaf keeps up to four records and every commit
// rewrites them: a record of a large Append call was written to disk several
// times.
//
// Layout 2 (segNested) gives each commit of smallCommit record bytes or more
// its own bucket inside "r", keyed by the 8-byte big-endian first seq of its
// first record and holding that commit's records (key and value as in
// layout 1); the records of a smaller commit go directly into "r" as in
// layout 1. A commit writes its new bucket's pages once; the entries of "r"
// are bucket headers (about 40 bytes) or small records, so the leaf a commit
// rewrites holds no earlier large record and stays near a page. Small
// commits stay in "r" because a bucket of their own would add about 56
// bytes each to the file and save no rewrite. Record keys still only grow
// across the whole segment.
//
// A segment keeps the layout it was created with: a layout-1 tail found at
// Open is appended to in layout 1 until it is sealed; new segments use
// layout 2. Readers handle both.
const (
	segFlat   = 1
	segNested = 2

	// smallCommit is the record bytes below which a commit of layout 2
	// writes its records directly into "r": a leaf of such entries splits
	// at a page like any other, so rewriting it costs about a page.
	smallCommit = 1024
)

// segLayout returns the layout of the segment tx belongs to.
func segLayout(tx *bolt.Tx) (byte, error) {
	m := tx.Bucket(bucketSegMeta)
	if m == nil {
		return 0, fmt.Errorf("missing bucket: %w", ErrCorrupt)
	}
	v := m.Get(keyVersion)
	if len(v) != 1 || v[0] != segFlat && v[0] != segNested {
		return 0, fmt.Errorf("segment version %v: %w", v, ErrCorrupt)
	}
	return v[0], nil
}

// recCursor walks the records of a segment in seq order, in either layout.
// Its methods return a nil key at the end or on damage; err then tells
// which (damage in the layout, not in a record: records are for the caller
// to parse).
type recCursor struct {
	top    *bolt.Cursor
	nested bool
	sub    *bolt.Cursor // layout 2, inside a commit's bucket; nil on a record of "r" itself
	err    error
}

// newRecCursor returns a cursor on the records of the segment tx belongs to.
func newRecCursor(tx *bolt.Tx) (*recCursor, error) {
	layout, err := segLayout(tx)
	if err != nil {
		return nil, err
	}
	b := tx.Bucket(bucketRecords)
	if b == nil {
		return nil, fmt.Errorf("missing bucket: %w", ErrCorrupt)
	}
	return &recCursor{top: b.Cursor(), nested: layout == segNested}, nil
}

// entry resolves the top cursor's entry k, v of layout 2: a record of "r"
// itself (v != nil; bbolt gives a nested bucket a nil value), or a commit's
// bucket, whose first record's key must be k, positioned in by pos.
func (c *recCursor) entry(k, v []byte, pos func(*bolt.Cursor) ([]byte, []byte)) ([]byte, []byte) {
	c.sub = nil
	if k == nil || v != nil {
		return k, v
	}
	b := c.top.Bucket().Bucket(k)
	if b == nil {
		c.err = fmt.Errorf("commit key %x: no value and not a bucket: %w", k, ErrCorrupt)
		return nil, nil
	}
	sub := b.Cursor()
	if fk, _ := sub.First(); !bytes.Equal(fk, k) {
		c.err = fmt.Errorf("commit %x: first record key %x: %w", k, fk, ErrCorrupt)
		return nil, nil
	}
	c.sub = sub
	return pos(sub)
}

// First positions on the first record.
func (c *recCursor) First() (k, v []byte) {
	if !c.nested {
		return c.top.First()
	}
	k, v = c.top.First()
	return c.entry(k, v, (*bolt.Cursor).First)
}

// Last positions on the last record.
func (c *recCursor) Last() (k, v []byte) {
	if !c.nested {
		return c.top.Last()
	}
	k, v = c.top.Last()
	return c.entry(k, v, (*bolt.Cursor).Last)
}

// Next moves to the next record.
func (c *recCursor) Next() (k, v []byte) {
	if !c.nested {
		return c.top.Next()
	}
	if c.sub != nil {
		if k, v = c.sub.Next(); k != nil {
			return k, v
		}
	}
	k, v = c.top.Next()
	return c.entry(k, v, (*bolt.Cursor).First)
}

// SeekHolding positions on the record that may hold seq: the last record
// whose key is <= seq, or the first record if there is none.
func (c *recCursor) SeekHolding(seq uint64) (k, v []byte) {
	if !c.nested {
		return seekLE(c.top, seq)
	}
	k, v = seekLE(c.top, seq)
	return c.entry(k, v, func(sub *bolt.Cursor) ([]byte, []byte) { return seekLE(sub, seq) })
}

// seekLE positions cur on its last key <= seq, or on its first key if there
// is none.
func seekLE(cur *bolt.Cursor, seq uint64) (k, v []byte) {
	key := seqKey(seq)
	k, v = cur.Seek(key)
	if k == nil {
		k, v = cur.Last()
	}
	if k != nil && bytes.Compare(k, key) > 0 {
		if k, v = cur.Prev(); k == nil {
			k, v = cur.First()
		}
	}
	return k, v
}
