package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A segment is one bbolt file dir/<class>/seg-<first seq %020d>.db holding
// the records of seqs first..last in bucket "r" (in layout 2, those of each
// commit of 1 KiB or more in a bucket of their own: see layout.go), in
// bucket "m" its class, first seq and layout ("version"), and in bucket "c"
// (made at the first claim) the claims committed while it was the tail:
// 8-byte First -> 8-byte Last.
var (
	bucketRecords   = []byte("r")
	bucketSegMeta   = []byte("m")
	bucketSegClaims = []byte("c")
	keyClass        = []byte("class")
	keyFirst        = []byte("first")
	keyVersion      = []byte("version")
)

// lockTimeout bounds the wait for a bbolt file lock, so that a second process
// opening the same spool gets an error instead of hanging.
const lockTimeout = time.Second

type segment struct {
	first uint64
	last  uint64 // last seq stored; first-1 while empty
	path  string
	size  int64 // disk bytes (file size)

	// Guarded by the class's mu.
	db        *bolt.DB // nil while a sealed segment is not being read
	refs      int      // readers using db
	gone      bool     // removed from the class (deleted or quarantined): close db at last release
	readahead bool     // readahead asked for: once per segment
	syncedAt  time.Time

	// readBytes counts the record bytes readers passed since the
	// segment's pages were last unmapped (unmapReadPages).
	readBytes atomic.Int64
}

func segName(first uint64) string { return fmt.Sprintf("seg-%020d.db", first) }

// parseSegName returns the first seq of a segment file name.
func parseSegName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, "seg-")
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, ".db"); !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

func (s *Spool) segOptions(readOnly bool) *bolt.Options {
	return &bolt.Options{
		Timeout:         lockTimeout,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		MaxSize:         int(s.hardBound),
		InitialMmapSize: int(s.hardBound), // readers never wait for a remap
		NoSync:          s.opts.Fsync != FsyncAlways,
		ReadOnly:        readOnly,
	}
}

// openSegDB opens a segment file; a writable one gets a small AllocSize so that
// the file (our unit of disk accounting) grows in small steps.
func (s *Spool) openSegDB(path string, readOnly bool) (*bolt.DB, error) {
	db, err := openBolt(path, s.segOptions(readOnly))
	if err != nil {
		return nil, err
	}
	db.AllocSize = int(s.allocSize)
	return db, nil
}

// createSegment creates the file of a new, empty segment. The file is made
// under a temporary name and renamed once its buckets are durable, so a crash
// never leaves a half-made segment behind (leftovers are removed at Open).
func (s *Spool) createSegment(class string, first uint64) (*segment, error) {
	dir := filepath.Join(s.dir, class)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, segName(first))
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("%s exists", path) // never overwrite: it would reuse seqs
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	db, err := s.openSegDB(tmp, false)
	if err != nil {
		_ = os.Remove(tmp) // bbolt leaves a file it could not initialise (ENOSPC)
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket(bucketRecords); err != nil {
			return err
		}
		m, err := tx.CreateBucket(bucketSegMeta)
		if err != nil {
			return err
		}
		if err := m.Put(keyClass, []byte(class)); err != nil {
			return err
		}
		if err := m.Put(keyFirst, seqKey(first)); err != nil {
			return err
		}
		return m.Put(keyVersion, []byte{segNested})
	})
	if err == nil && s.opts.Fsync != FsyncAlways {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	renamed := false
	if err == nil {
		err = os.Rename(tmp, path)
		renamed = err == nil
	}
	if err == nil && s.opts.Fsync != FsyncNever {
		err = syncDir(dir)
	}
	if err == nil {
		db, err = s.openSegDB(path, false)
	}
	if err != nil {
		if renamed {
			tmp = path // an empty segment nothing uses; left, it would block the next roll
		}
		_ = os.Remove(tmp)
		return nil, err
	}
	seg := &segment{first: first, last: first - 1, path: path, db: db, syncedAt: s.now()}
	seg.size = fileSize(path)
	return seg, nil
}

// checkSegment verifies an open segment: buckets, its metadata, the key and
// CRC of its first and last records (scanSegment verifies the others). It
// returns the last seq stored and the claims recorded in it, ascending;
// malformed claim entries are counted in bad and skipped (a lost claim only
// makes its range at-least-once).
func checkSegment(db *bolt.DB, class string, first uint64) (last uint64, claims []Range, bad int, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt panic: %v: %w", r, ErrCorrupt)
		}
	}()
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrCorrupt)
	}
	err = db.View(func(tx *bolt.Tx) error {
		// A truncated file would fault when its missing pages are touched.
		if size := fileSize(db.Path()); tx.Size() > size {
			return corrupt("truncated: %d bytes, %d in use", size, tx.Size())
		}
		r, m := tx.Bucket(bucketRecords), tx.Bucket(bucketSegMeta)
		if r == nil || m == nil {
			return corrupt("missing bucket")
		}
		if got := m.Get(keyClass); !bytes.Equal(got, []byte(class)) {
			return corrupt("segment of class %q", got)
		}
		if got := m.Get(keyFirst); len(got) != 8 || binary.BigEndian.Uint64(got) != first {
			return corrupt("segment first seq does not match its name")
		}
		if _, err := segLayout(tx); err != nil {
			return err
		}
		if cb := tx.Bucket(bucketSegClaims); cb != nil {
			_ = cb.ForEach(func(k, v []byte) error {
				if len(k) != 8 || len(v) != 8 {
					bad++
					return nil
				}
				r := Range{binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v)}
				if r.First == 0 || r.Last < r.First {
					bad++
					return nil
				}
				claims = append(claims, r)
				return nil
			})
		}
		c, err := newRecCursor(tx)
		if err != nil {
			return err
		}
		k, v := c.First()
		if k == nil {
			last = first - 1
			return c.err
		}
		if len(k) != 8 || binary.BigEndian.Uint64(k) != first {
			return corrupt("first record key %x", k)
		}
		if _, err := parseRecord(v); err != nil {
			return fmt.Errorf("first record: %w", err)
		}
		k, v = c.Last()
		if c.err != nil {
			return c.err
		}
		rec, err := parseRecord(v)
		if err != nil {
			return fmt.Errorf("last record: %w", err)
		}
		if len(k) != 8 || binary.BigEndian.Uint64(k) < first {
			return corrupt("last record key %x", k)
		}
		last = binary.BigEndian.Uint64(k) + rec.count - 1
		return nil
	})
	return last, claims, bad, err
}

// openSegment opens and checks an existing segment file read-only (a
// writable open of a damaged file could touch every page first), returning
// it and the claims recorded in it. The tail is then reopened writable; a
// sealed segment is reopened only when read.
//
// The tail's records are all verified (a sealed segment's only when read):
// a damaged one would otherwise fail every Read of the class until the tail
// fills. A tail holding one is returned sealed (sealed true, not opened): the
// caller starts a new tail after it, and Read quarantines it at the damage.
func (s *Spool) openSegment(class, path string, first uint64, tail bool) (seg *segment, claims []Range, sealed bool, err error) {
	db, err := s.openSegDB(path, true)
	if err != nil {
		return nil, nil, false, err
	}
	last, claims, bad, err := checkSegment(db, class, first)
	if err == nil && tail {
		// At most the hard bound of records: a file is no larger, unless
		// SegmentBytes was lowered since it was written.
		if seq, serr := scanSegment(db, first, last, s.hardBound); serr != nil {
			s.opts.Logger.Warn("spool: damaged record in the tail segment; sealing it and starting a new tail, it is quarantined when read reaches the damage",
				"class", class, "file", path, "seq", seq, "reason", serr.Error())
			sealed = true
		}
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, false, err
	}
	if bad > 0 {
		s.opts.Logger.Warn("spool: malformed claims skipped; their ranges may be cut and sent again",
			"file", path, "claims", bad)
	}
	seg = &segment{first: first, last: last, path: path, size: fileSize(path), syncedAt: s.now()}
	if tail && !sealed {
		if seg.db, err = s.openSegDB(path, false); err != nil {
			return nil, nil, false, err
		}
	}
	return seg, claims, sealed, nil
}

// quarantine moves a damaged file to dir/quarantine/ and logs it. class is ""
// for meta.db. A file that cannot be moved is removed, so that a damaged file
// never blocks the spool.
func (s *Spool) quarantine(path, class string, reason error) {
	s.quarantined.Add(1)
	qdir := filepath.Join(s.dir, quarantineDir)
	name := filepath.Base(path)
	if class != "" {
		name = class + "." + name
	}
	dst := filepath.Join(qdir, name+"."+s.now().UTC().Format("20060102T150405.000000000"))
	err := os.MkdirAll(qdir, 0o700)
	if err == nil {
		err = os.Rename(path, dst)
	}
	if err != nil {
		s.opts.Logger.Error("spool: cannot quarantine file; removing it", "file", path, "err", err)
		_ = os.Remove(path)
		dst = ""
	}
	_ = syncDir(filepath.Dir(path))
	s.opts.Logger.Warn("spool: file quarantined", "file", path, "class", class, "moved_to", dst, "reason", reason.Error())
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// syncDir fsyncs a directory so that created, renamed or removed entries are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
