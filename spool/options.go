package spool

import (
	"fmt"
	"log/slog"
	"time"
)

// Fsync is the durability policy of Append.
type Fsync int

const (
	// FsyncAlways fsyncs every commit before Append returns (the default).
	FsyncAlways Fsync = iota
	// FsyncInterval commits without fsync and fsyncs the class's segment at
	// most every Options.FsyncInterval (checked at each commit), when a segment
	// is sealed, and on Sync and Close. A power loss or OS crash can lose up to
	// FsyncInterval of acknowledged appends; a process crash loses nothing.
	FsyncInterval
	// FsyncNever commits without fsync; data is fsynced only when a segment is
	// sealed and on Sync and Close. Claims are not fsynced either.
	FsyncNever
)

var fsyncNames = [...]string{"always", "interval", "never"}

// String returns "always", "interval" or "never".
func (f Fsync) String() string {
	if f >= 0 && int(f) < len(fsyncNames) {
		return fsyncNames[f]
	}
	return fmt.Sprintf("Fsync(%d)", int(f))
}

// ParseFsync parses "always", "interval" or "never".
func ParseFsync(s string) (Fsync, error) {
	for i, n := range fsyncNames {
		if s == n {
			return Fsync(i), nil
		}
	}
	return 0, fmt.Errorf("spool: fsync policy %q: %w", s, ErrInvalidOptions)
}

// Overflow is what Append does when a cap would be exceeded.
type Overflow int

const (
	// Block refuses the append with ErrFull and changes nothing (the default);
	// the caller turns it into backpressure.
	Block Overflow = iota
	// DropOldest deletes the class's oldest whole segments (sealing the tail
	// first if it is the only one) until the append fits, counting the live
	// events deleted under the reason "drop_oldest".
	DropOldest
	// DropNewest refuses the incoming events with ErrDropped, counting them
	// under the reason "drop_newest".
	DropNewest
)

var overflowNames = [...]string{"block", "drop_oldest", "drop_newest"}

// String returns "block", "drop_oldest" or "drop_newest".
func (o Overflow) String() string {
	if o >= 0 && int(o) < len(overflowNames) {
		return overflowNames[o]
	}
	return fmt.Sprintf("Overflow(%d)", int(o))
}

// ParseOverflow parses "block", "drop_oldest" or "drop_newest".
func ParseOverflow(s string) (Overflow, error) {
	for i, n := range overflowNames {
		if s == n {
			return Overflow(i), nil
		}
	}
	return 0, fmt.Errorf("spool: overflow policy %q: %w", s, ErrInvalidOptions)
}

// ClassOptions are the caps of one class.
type ClassOptions struct {
	// MaxBytes caps the disk bytes of the class's segment files. 0 means only
	// Options.MaxBytes applies. Caps are checked before each commit, so the
	// class can overshoot by at most one commit's file growth.
	MaxBytes int64
	// Overflow is applied when a cap would be exceeded. Default Block.
	Overflow Overflow
}

// Options configure a Spool. The zero value is valid: fsync always, 64 MiB
// segments, no caps, Block.
type Options struct {
	// Fsync is the durability policy. Default FsyncAlways.
	Fsync Fsync
	// FsyncInterval is the longest time between fsyncs under FsyncInterval.
	// Default 1s; ignored by the other policies.
	FsyncInterval time.Duration
	// SegmentBytes is the target size of one segment file in bytes: the tail is
	// sealed and a new segment started once the tail's file reaches it.
	// Default 64 MiB, minimum 1 MiB. A segment file never exceeds its hard
	// bound of 1.25 × SegmentBytes (bbolt MaxSize).
	SegmentBytes int64
	// MaxBytes caps the disk bytes of all segments of all classes. 0 means
	// unlimited. When an append would exceed it, the appending class's
	// Overflow policy applies.
	MaxBytes int64
	// Classes sets the caps of named classes; other classes use Default.
	Classes map[string]ClassOptions
	// Default applies to classes not in Classes.
	Default ClassOptions
	// Logger receives state changes (segment quarantined, meta rebuilt), never
	// per-event messages. nil discards.
	Logger *slog.Logger
}

const (
	defaultSegmentBytes  = 64 << 20
	minSegmentBytes      = 1 << 20
	maxSegmentBytes      = 512 << 20 // keeps the hard bound and mmap well below bbolt's limits
	defaultFsyncInterval = time.Second
)

func (o Options) withDefaults() (Options, error) {
	bad := func(format string, a ...any) (Options, error) {
		return o, fmt.Errorf("spool: options: %s: %w", fmt.Sprintf(format, a...), ErrInvalidOptions)
	}
	if o.Fsync < FsyncAlways || o.Fsync > FsyncNever {
		return bad("fsync %d", int(o.Fsync))
	}
	if o.FsyncInterval < 0 {
		return bad("negative FsyncInterval")
	}
	if o.FsyncInterval == 0 {
		o.FsyncInterval = defaultFsyncInterval
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = defaultSegmentBytes
	}
	if o.SegmentBytes < minSegmentBytes || o.SegmentBytes > maxSegmentBytes {
		return bad("SegmentBytes %d outside [%d, %d]", o.SegmentBytes, minSegmentBytes, maxSegmentBytes)
	}
	if o.MaxBytes < 0 {
		return bad("negative MaxBytes")
	}
	check := func(name string, c ClassOptions) error {
		if c.MaxBytes < 0 {
			return fmt.Errorf("spool: options: class %q: negative MaxBytes: %w", name, ErrInvalidOptions)
		}
		if c.Overflow < Block || c.Overflow > DropNewest {
			return fmt.Errorf("spool: options: class %q: overflow %d: %w", name, int(c.Overflow), ErrInvalidOptions)
		}
		return nil
	}
	if err := check("default", o.Default); err != nil {
		return o, err
	}
	classes := make(map[string]ClassOptions, len(o.Classes))
	for name, c := range o.Classes {
		if !ValidClass(name) {
			return bad("class %q: %v", name, ErrInvalidClass)
		}
		if err := check(name, c); err != nil {
			return o, err
		}
		classes[name] = c
	}
	o.Classes = classes // our own copy: the caller may reuse its map
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

func (o *Options) class(name string) ClassOptions {
	if c, ok := o.Classes[name]; ok {
		return c
	}
	return o.Default
}

// quarantineDir is the name of the directory holding moved-aside files; it is
// therefore not a valid class name.
const quarantineDir = "quarantine"

// ValidClass reports whether name can be a class: 1–64 bytes of
// [A-Za-z0-9_-], and not "quarantine". A class becomes a directory name and
// a NATS subject token.
func ValidClass(name string) bool {
	if name == "" || len(name) > 64 || name == quarantineDir {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
