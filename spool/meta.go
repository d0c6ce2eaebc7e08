package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// meta.db holds, per class, in bucket "classes"/<class>:
//
//	"cursor"   8 bytes: persisted contiguous ack cursor (lazily written)
//	"hwm"      8 bytes: first seq of the newest segment ever created
//	"reserved" 8 bytes: a seq no record of that segment can reach (hwm + hard bound)
//	"claims"   bucket: 8-byte First -> 8-byte Last of each claimed range,
//	           written only by versions before claims moved to the segments;
//	           read at Open, moved to the tail segment and deleted
//
// Losing meta.db loses only cursor progress (ranges are re-sent and
// deduplicated upstream); hwm/reserved only matter if the tail segment is also
// lost.
var (
	bucketClasses = []byte("classes")
	bucketClaims  = []byte("claims")
	keyCursor     = []byte("cursor")
	keyHWM        = []byte("hwm")
	keyReserved   = []byte("reserved")
)

type metaClass struct {
	cursor, hwm, reserved uint64
	claims                []Range
}

// isCorruption reports whether a bbolt Open error means a damaged file rather
// than an environment problem (lock held, permissions, I/O).
func isCorruption(err error) bool {
	if errors.Is(err, berrors.ErrTimeout) || errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist) || isNoSpace(err) {
		return false
	}
	return true
}

// openBolt opens a bbolt file, turning a panic on a damaged file into ErrCorrupt.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("bbolt panic: %v: %w", r, ErrCorrupt)
		}
	}()
	return bolt.Open(path, 0o600, o)
}

func (s *Spool) metaOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
		NoSync:       s.opts.Fsync == FsyncNever,
	}
}

// openMeta opens meta.db and loads it; a damaged meta.db is quarantined and
// replaced by an empty one (rebuilt = true).
func (s *Spool) openMeta() (m map[string]*metaClass, rebuilt bool, err error) {
	path := filepath.Join(s.dir, "meta.db")
	db, err := openBolt(path, s.metaOptions())
	if err == nil {
		s.meta = db
		if m, err = s.loadMeta(); err == nil {
			return m, false, nil
		}
		_ = db.Close()
		s.meta = nil
	}
	if !isCorruption(err) {
		return nil, false, fmt.Errorf("spool: open meta.db: %w", err)
	}
	s.quarantine(path, "", err)
	s.opts.Logger.Error("spool: meta.db damaged and rebuilt; acknowledged ranges whose cursor was not persisted, and recorded claims, may be re-sent",
		"dir", s.dir, "reason", err.Error())
	if s.meta, err = openBolt(path, s.metaOptions()); err != nil {
		return nil, false, fmt.Errorf("spool: create meta.db: %w", err)
	}
	return map[string]*metaClass{}, true, nil
}

func (s *Spool) loadMeta() (m map[string]*metaClass, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt panic: %v: %w", r, ErrCorrupt)
		}
	}()
	m = map[string]*metaClass{}
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrCorrupt)
	}
	err = s.meta.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketClasses)
		if root == nil {
			return nil
		}
		return root.ForEach(func(name, v []byte) error {
			b := root.Bucket(name)
			if v != nil || b == nil || !ValidClass(string(name)) {
				return corrupt("class entry %q", name)
			}
			mc := &metaClass{}
			for _, f := range []struct {
				key []byte
				dst *uint64
			}{{keyCursor, &mc.cursor}, {keyHWM, &mc.hwm}, {keyReserved, &mc.reserved}} {
				if v := b.Get(f.key); v != nil {
					if len(v) != 8 {
						return corrupt("class %s: %s", name, f.key)
					}
					*f.dst = binary.BigEndian.Uint64(v)
				}
			}
			if cb := b.Bucket(bucketClaims); cb != nil {
				if err := cb.ForEach(func(k, v []byte) error {
					if len(k) != 8 || len(v) != 8 {
						return corrupt("class %s: claim", name)
					}
					r := Range{binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v)}
					if r.First == 0 || r.Last < r.First {
						return corrupt("class %s: claim %v", name, r)
					}
					mc.claims = append(mc.claims, r)
					return nil
				}); err != nil {
					return err
				}
			}
			m[string(name)] = mc
			return nil
		})
	})
	return m, err
}

// metaClassBucket returns the class's bucket, creating it.
func metaClassBucket(tx *bolt.Tx, class string) (*bolt.Bucket, error) {
	root, err := tx.CreateBucketIfNotExists(bucketClasses)
	if err != nil {
		return nil, err
	}
	return root.CreateBucketIfNotExists([]byte(class))
}

func putU64(b *bolt.Bucket, k []byte, v uint64) error { return b.Put(k, seqKey(v)) }

// writeMetaLocked writes the cursors of classes whose cursor moved since the
// last write (removing claims at or below them) and then runs fn, in one
// committed (and, unless FsyncNever, fsynced) transaction. s.metaMu is held.
func (s *Spool) writeMetaLocked(fn func(tx *bolt.Tx) error) error {
	type cur struct {
		c      *class
		cursor uint64
	}
	var dirty []cur
	for _, c := range s.classList() {
		c.mu.Lock()
		if c.acks.cursor != c.persisted {
			dirty = append(dirty, cur{c, c.acks.cursor})
		}
		c.mu.Unlock()
	}
	if len(dirty) == 0 && fn == nil {
		return nil
	}
	err := s.meta.Update(func(tx *bolt.Tx) error {
		for _, d := range dirty {
			b, err := metaClassBucket(tx, d.c.name)
			if err != nil {
				return err
			}
			if err := putU64(b, keyCursor, d.cursor); err != nil {
				return err
			}
			if cb := b.Bucket(bucketClaims); cb != nil {
				var del [][]byte
				_ = cb.ForEach(func(k, v []byte) error {
					if len(v) == 8 && binary.BigEndian.Uint64(v) <= d.cursor {
						del = append(del, k)
					}
					return nil
				})
				for _, k := range del {
					if err := cb.Delete(k); err != nil {
						return err
					}
				}
			}
		}
		if fn != nil {
			return fn(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: write meta.db: %w", err)
	}
	for _, d := range dirty {
		d.c.mu.Lock()
		d.c.persisted = d.cursor
		d.c.mu.Unlock()
	}
	s.persistedAt.Store(s.now().UnixNano())
	return nil
}

// persistCursors writes moved cursors to meta.db.
func (s *Spool) persistCursors() error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	return s.writeMetaLocked(nil)
}

// reserve durably records that a segment starting at first is being created,
// before its file exists, so that seqs are never reused even if that file is
// later lost.
func (s *Spool) reserve(class string, first uint64) error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	return s.writeMetaLocked(func(tx *bolt.Tx) error {
		b, err := metaClassBucket(tx, class)
		if err != nil {
			return err
		}
		if err := putU64(b, keyHWM, first); err != nil {
			return err
		}
		return putU64(b, keyReserved, first+uint64(s.hardBound))
	})
}
