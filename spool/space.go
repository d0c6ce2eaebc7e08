package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// A full filesystem (ENOSPC) or an exhausted quota (EDQUOT) is a state of
// the spool, not of one append: Append wraps ErrNoSpace, NoSpace reports it
// for readiness checks, and the Logger hears of it twice, when the disk
// fills and when there is room again, however many appends fail between.

// spaceHold is how long after the last append refused for lack of space the
// spool keeps reporting NoSpace, so that a disk on the edge (small appends
// fit, large ones do not) does not flip the state and its logs at every
// append; NoSpace probes for room at most this often.
const spaceHold = time.Second

// probeName is the file NoSpace writes to check for room, probeBytes long:
// about what a commit of a few dozen events takes. It is not a valid class
// name, so Open and Check never take it for a class.
const (
	probeName  = ".space-probe"
	probeBytes = 64 << 10
)

// isNoSpace reports whether err is a full filesystem or an exhausted quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// noSpace marks err with ErrNoSpace, and the spool as out of space, if err
// is a full filesystem; other errors are returned as they are.
func (s *Spool) noSpace(err error) error {
	if !isNoSpace(err) {
		return err
	}
	if s.fullAt.Swap(s.now().UnixNano()) == 0 {
		s.opts.Logger.Warn("spool: disk full: appends are refused until there is room",
			"dir", s.dir, "err", err)
	}
	return fmt.Errorf("%w: %w", ErrNoSpace, err)
}

// hasRoom records that a write succeeded: the spool leaves the out-of-space
// state, unless an append was refused less than spaceHold ago. since is the
// state's time as loaded before the write.
func (s *Spool) hasRoom(since int64) {
	if since == 0 || s.now().UnixNano()-since < spaceHold.Nanoseconds() {
		return
	}
	if s.fullAt.CompareAndSwap(since, 0) {
		s.opts.Logger.Warn("spool: disk has room again: appends resume", "dir", s.dir)
	}
}

// NoSpace reports whether the spool's filesystem is full: an Append failed
// with ErrNoSpace and no room has been seen since. It clears by itself, at
// the first commit more than a second after the last refusal, or when
// NoSpace finds room: while the spool is out of space it checks, at most
// once a second, by writing (and removing) a 64 KiB probe file in the
// spool's directory. So a node that producers stopped sending to (because
// its readiness check failed) still finds out that space was freed.
func (s *Spool) NoSpace() bool {
	t := s.fullAt.Load()
	if t == 0 {
		return false
	}
	now := s.now().UnixNano()
	if now-t < spaceHold.Nanoseconds() || !s.fullAt.CompareAndSwap(t, now) {
		return true // too soon, or another caller probes
	}
	if err := s.enter(); err != nil {
		return true // closed
	}
	defer s.wg.Done()
	if err := s.probeSpace(); err != nil {
		if !isNoSpace(err) {
			s.opts.Logger.Error("spool: check for free space", "dir", s.dir, "err", err)
		}
		return true
	}
	if s.fullAt.CompareAndSwap(now, 0) {
		s.opts.Logger.Warn("spool: disk has room again: appends resume", "dir", s.dir)
	}
	return s.fullAt.Load() != 0
}

// probeSpace writes probeBytes to a probe file and removes it. Filesystems
// allocate (or reserve) blocks and charge quotas at write, so a full one
// fails the write with ENOSPC or EDQUOT.
func (s *Spool) probeSpace() error {
	path := filepath.Join(s.dir, probeName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, probeBytes))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(path); err == nil {
		err = rerr
	}
	return err
}
