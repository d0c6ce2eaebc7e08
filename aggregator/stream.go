package aggregator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the settings of the JetStream stream the node
// publishes to (Options.Stream). The node creates a missing stream with
// them; it checks a stream that exists against the promises it makes
// (see checkStream) and, by OnMismatch, refuses to publish to one that
// breaks them or only warns. The zero value is a working default: one
// replica, no placement, no age or size limit, a 10 minute duplicate
// window, refuse.
type StreamOptions struct {
	// Replicas is the number of servers that hold the stream, 1 to 5.
	// Default 1. A JetStream ack is not an fsync: only a replicated stream
	// (3) keeps acknowledged batches through a server's power loss. An
	// existing stream with fewer replicas is a mismatch.
	Replicas int
	// Cluster and Tags place a created stream (JetStream placement): in
	// the named cluster, on servers that have every tag. Default: where
	// the server puts it. Not checked on an existing stream.
	Cluster string
	Tags    []string
	// MaxAge is how long a created stream keeps a batch. Default 0:
	// forever. It must be at least DuplicateWindow. Not checked on an
	// existing stream (it is the consumers' retention, not the node's).
	MaxAge time.Duration
	// MaxBytes caps a created stream's size in bytes. Default 0:
	// unlimited. A full stream refuses new batches (discard new), which
	// the node keeps in its spool and retries; it never drops old ones.
	// Not checked on an existing stream.
	MaxBytes int64
	// DuplicateWindow is the node's duplicate window: the longest gap
	// between a batch's first publish and a republish of it (a retry, or
	// after a restart) that the stream must absorb. A created stream gets
	// it; an existing stream's window must be at least this long. The
	// retrier gives up retrying a batch at once past
	// max(DuplicateWindow-20s, DuplicateWindow/2) after its first publish.
	// Default 10m. Options.DuplicateWindow, its older name, is the same
	// setting: set either or both to the same value.
	DuplicateWindow time.Duration
	// OnMismatch says what the node does with an existing stream whose
	// settings break its promises. Default MismatchRefuse.
	OnMismatch Mismatch
}

// Mismatch is a policy for an existing stream that breaks the node's
// promises.
type Mismatch int

const (
	// MismatchRefuse: the node publishes nothing to the stream. It keeps
	// accepting and spooling events, logs the findings at error level,
	// reports them in Node.StreamRefused, checks the stream again every
	// RetryMax and at each reconnection, and ships once the stream is
	// fixed. Batches already in flight when a check at a reconnection
	// first refuses the stream still finish their attempts. The default.
	MismatchRefuse Mismatch = iota
	// MismatchWarn: the node logs the findings at warn level and ships
	// anyway: what the findings say can happen (a batch stored twice, or
	// dropped by the stream) may happen.
	MismatchWarn
)

// ParseMismatch parses "refuse" or "warn".
func ParseMismatch(s string) (Mismatch, error) {
	switch s {
	case "refuse":
		return MismatchRefuse, nil
	case "warn":
		return MismatchWarn, nil
	}
	return 0, fmt.Errorf("on_mismatch %q: want refuse or warn", s)
}

func (m Mismatch) String() string {
	switch m {
	case MismatchRefuse:
		return "refuse"
	case MismatchWarn:
		return "warn"
	}
	return fmt.Sprintf("Mismatch(%d)", int(m))
}

// ErrStreamMismatch is wrapped by the error that says why the node refuses
// its stream (Node.StreamRefused).
var ErrStreamMismatch = errors.New("aggregator: stream breaks the node's promises")

// defaultDuplicateWindow is the duplicate window of a node that sets none.
const defaultDuplicateWindow = 10 * time.Minute

// setStreamDefaults reconciles the two names of the duplicate window,
// fills the defaults of o.StreamConfig and checks it.
func (o *Options) setStreamDefaults() error {
	s := &o.StreamConfig
	switch {
	case o.DuplicateWindow < 0 || s.DuplicateWindow < 0:
		return fmt.Errorf("%w: negative duplicate window", ErrInvalidOptions)
	case o.DuplicateWindow > 0 && s.DuplicateWindow > 0 && o.DuplicateWindow != s.DuplicateWindow:
		return fmt.Errorf("%w: DuplicateWindow %v and StreamConfig.DuplicateWindow %v differ: they are one setting, set one",
			ErrInvalidOptions, o.DuplicateWindow, s.DuplicateWindow)
	case s.DuplicateWindow == 0 && o.DuplicateWindow == 0:
		s.DuplicateWindow = defaultDuplicateWindow
	case s.DuplicateWindow == 0:
		s.DuplicateWindow = o.DuplicateWindow
	}
	o.DuplicateWindow = s.DuplicateWindow
	if s.Replicas == 0 {
		s.Replicas = 1
	}
	return s.Validate()
}

// Validate checks s as New would, its defaults applied (a zero
// DuplicateWindow is the default's), and returns an error wrapping
// ErrInvalidOptions that names the field.
func (s StreamOptions) Validate() error {
	if s.DuplicateWindow == 0 {
		s.DuplicateWindow = defaultDuplicateWindow
	}
	switch {
	case s.DuplicateWindow < 100*time.Millisecond:
		// JetStream's own lower bound.
		return fmt.Errorf("%w: StreamConfig.DuplicateWindow %v: want at least 100ms", ErrInvalidOptions, s.DuplicateWindow)
	case s.Replicas < 0 || s.Replicas > 5:
		return fmt.Errorf("%w: StreamConfig.Replicas %d: want 1 to 5", ErrInvalidOptions, s.Replicas)
	case s.MaxAge < 0 || s.MaxBytes < 0:
		return fmt.Errorf("%w: negative StreamConfig.MaxAge or MaxBytes", ErrInvalidOptions)
	case s.MaxAge > 0 && s.MaxAge < s.DuplicateWindow:
		return fmt.Errorf("%w: StreamConfig.MaxAge %v is shorter than the duplicate window %v: JetStream keeps ids no longer than batches",
			ErrInvalidOptions, s.MaxAge, s.DuplicateWindow)
	case s.OnMismatch != MismatchRefuse && s.OnMismatch != MismatchWarn:
		return fmt.Errorf("%w: StreamConfig.OnMismatch %v", ErrInvalidOptions, s.OnMismatch)
	}
	return nil
}

// retryHorizon is how long after its first publish the shaper's retrier
// still retries a batch at once (driver.go); past it a retry could fall
// outside the duplicate window.
func retryHorizon(window time.Duration) time.Duration {
	return max(window-20*time.Second, window/2)
}

// streamConfig is the configuration of the stream the node creates.
func (o *Options) streamConfig() jetstream.StreamConfig {
	s := o.StreamConfig
	cfg := jetstream.StreamConfig{
		Name:       o.Stream,
		Subjects:   []string{o.Subject + ".>"},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   s.Replicas,
		Duplicates: s.DuplicateWindow,
		MaxAge:     s.MaxAge,
		MaxBytes:   s.MaxBytes,
		// A full stream refuses the new batch (the node keeps it and
		// retries) rather than dropping an old one it acknowledged.
		Discard: jetstream.DiscardNew,
	}
	if s.MaxBytes == 0 {
		cfg.MaxBytes = -1
	}
	if s.Cluster != "" || len(s.Tags) > 0 {
		cfg.Placement = &jetstream.Placement{Cluster: s.Cluster, Tags: slices.Clone(s.Tags)}
	}
	return cfg
}

// checkStream returns what in the configuration of an existing stream
// breaks the node's promises, one finding per setting, each naming the
// setting, the value found and the value needed; nil if nothing does.
// subjects are the subjects the node publishes to (one per class). The
// promises:
//
//   - every batch the node publishes is stored: the stream's subjects
//     cover each class's subject; it is no mirror, not sealed, and acks
//     publishes (no_ack false);
//   - a republished batch is stored once: the duplicate window is at
//     least the node's, which bounds its retries and restarts;
//   - an acknowledged batch stays until the stream's max age: file
//     storage (memory loses it at a server restart), limits retention
//     (interest drops batches no consumer is interested in; work queue
//     deletes consumed ones, and with them the trace the node needs to
//     tell whether a batch is stored), a full stream that refuses new
//     batches rather than discarding old ones, and no per-subject cap
//     (one subject holds a whole class) that discards;
//   - replicas at least the node's.
func checkStream(cfg jetstream.StreamConfig, o *StreamOptions, subjects []string) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	streamSubjects := cfg.Subjects
	if len(streamSubjects) == 0 {
		streamSubjects = []string{cfg.Name} // JetStream's default
	}
	var uncovered []string
	for _, s := range subjects {
		if !slices.ContainsFunc(streamSubjects, func(f string) bool { return subjectMatches(f, s) }) {
			uncovered = append(uncovered, s)
		}
	}
	if len(uncovered) > 0 {
		add("subjects %v do not cover %s: need subjects that match every class's subject", streamSubjects, strings.Join(uncovered, ", "))
	}
	if cfg.Mirror != nil {
		add("mirror of %q: need a stream that takes publishes, not a mirror", cfg.Mirror.Name)
	}
	if cfg.Sealed {
		add("sealed true: need sealed false (a sealed stream takes no publishes)")
	}
	if cfg.NoAck {
		add("no_ack true: need no_ack false (the node deletes a batch from its spool only on an ack)")
	}
	if cfg.Duplicates < o.DuplicateWindow {
		add("duplicate_window %v: need at least %v, the node's duplicate window (it retries a batch for up to %v after its first publish and republishes unacknowledged batches after a restart, under the same Nats-Msg-Id; past the stream's window such a batch is stored twice)",
			cfg.Duplicates, o.DuplicateWindow, retryHorizon(o.DuplicateWindow))
	}
	if cfg.Storage != jetstream.FileStorage {
		add("storage %s: need file (a memory stream loses acknowledged batches when its server restarts)", strings.ToLower(cfg.Storage.String()))
	}
	switch cfg.Retention {
	case jetstream.LimitsPolicy:
	case jetstream.InterestPolicy:
		add("retention interest: need limits (an interest stream drops at once the batches no consumer is interested in)")
	default:
		add("retention %s: need limits (a work queue deletes consumed batches, and with them what tells the node whether a batch is stored)", strings.ToLower(cfg.Retention.String()))
	}
	if cfg.Discard == jetstream.DiscardOld && (cfg.MaxBytes > 0 || cfg.MaxMsgs > 0) {
		add("discard old with max_bytes %d, max_msgs %d: need discard new (a full stream would delete its oldest acknowledged batches to take new ones)", cfg.MaxBytes, cfg.MaxMsgs)
	}
	if cfg.MaxMsgsPerSubject > 0 && (cfg.Discard != jetstream.DiscardNew || !cfg.DiscardNewPerSubject) {
		add("max_msgs_per_subject %d: need -1 (unlimited), or discard new per subject (a class is one subject: the stream would delete the class's older acknowledged batches past %d)", cfg.MaxMsgsPerSubject, cfg.MaxMsgsPerSubject)
	}
	if cfg.Replicas < o.Replicas {
		add("replicas %d: need at least %d, the node's replicas", cfg.Replicas, o.Replicas)
	}
	return out
}

// subjectMatches says whether NATS subject filter (with * and >
// wildcards) matches the literal subject s.
func subjectMatches(filter, s string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(s, ".")
	for i, f := range ft {
		if f == ">" {
			return i < len(st)
		}
		if i >= len(st) || (f != "*" && f != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}

// streamGate holds publishes back while the node refuses its stream.
// Closed at first, until the first check of the stream ends (with a
// verdict or with an error that says nothing of the stream), so that no
// batch goes to a stream the node would refuse before it looked.
type streamGate struct {
	mu      sync.Mutex
	pending bool          // no check has ended yet
	refused error         // why the node refuses the stream; nil if it does not
	open    chan struct{} // closed while neither pending nor refused
	change  chan struct{} // closed, and replaced, at each verdict
}

func newStreamGate() *streamGate {
	return &streamGate{pending: true, open: make(chan struct{}), change: make(chan struct{})}
}

// set records the verdict of a check: err nil opens the gate, an error
// closes it. It returns whether the verdict differs from the last one.
func (g *streamGate) set(err error) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := g.pending || (err == nil) != (g.refused == nil) || (err != nil && err.Error() != g.refused.Error())
	wasOpen := !g.pending && g.refused == nil
	g.pending, g.refused = false, err
	switch {
	case err == nil && !wasOpen:
		close(g.open)
	case err != nil && wasOpen:
		g.open = make(chan struct{})
	}
	close(g.change)
	g.change = make(chan struct{})
	return changed
}

// settle opens a gate no check has ended yet: a check that could not look
// at the stream (upstream away) leaves publishing as it would be without
// the gate, failing and retried while the stream cannot be reached.
func (g *streamGate) settle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending {
		g.pending = false
		close(g.open)
		close(g.change)
		g.change = make(chan struct{})
	}
}

// err returns why the node refuses its stream, nil if it does not.
func (g *streamGate) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refused
}

// wait returns true once the gate is open, false if ctx ends, or if the
// node drains while it refuses the stream: a refused stream is not
// drained to, the batch stays claimed in the spool. A drain while the
// first check is still under way waits for its verdict. A nil gate is
// always open.
func (g *streamGate) wait(ctx context.Context, drain <-chan struct{}) bool {
	if g == nil {
		return true
	}
	for {
		g.mu.Lock()
		open, refused, change := g.open, g.refused != nil, g.change
		g.mu.Unlock()
		select {
		case <-open:
			return true
		default:
		}
		wake := drain
		if isClosed(drain) {
			if refused {
				return false
			}
			wake = nil // pending: wait for the verdict
		}
		select {
		case <-open:
			return true
		case <-ctx.Done():
			return false
		case <-wake:
		case <-change:
		}
	}
}

// StreamRefused returns why the node refuses to publish to its stream
// (wrapping ErrStreamMismatch), or nil while it does not: the stream was
// found fine, created, or not checked yet. See StreamOptions.OnMismatch.
func (n *Node) StreamRefused() error { return n.gate.err() }

// ensureStream makes sure the node's stream exists and keeps its
// promises: it creates a missing stream with Options.StreamConfig and
// checks an existing one (or one another node created at the same
// moment). It returns an error if the stream could not be looked at;
// refused says whether the check found the stream unfit under
// MismatchRefuse. It never changes a stream that exists.
func (n *Node) ensureStream() (refused bool, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.AckTimeout)
	defer cancel()
	var info *jetstream.StreamInfo
	s, err := n.js.Stream(ctx, n.opts.Stream)
	switch {
	case err == nil:
		info = s.CachedInfo()
	case errors.Is(err, jetstream.ErrStreamNotFound):
		cfg := n.opts.streamConfig()
		s, err = n.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another node created it first, maybe otherwise: check it.
			s, err = n.js.Stream(ctx, n.opts.Stream)
		} else if err == nil {
			n.opts.Logger.Info("stream created", "stream", cfg.Name, "subjects", cfg.Subjects[0],
				"replicas", cfg.Replicas, "duplicate_window", cfg.Duplicates, "max_age", cfg.MaxAge, "max_bytes", cfg.MaxBytes)
		}
		if err != nil {
			return false, err
		}
		info = s.CachedInfo()
	default:
		return false, err
	}
	subjects := make([]string, len(n.opts.Classes))
	for i, c := range n.opts.Classes {
		subjects[i] = n.opts.Subject + "." + c.Name
	}
	found := checkStream(info.Config, &n.opts.StreamConfig, subjects)
	if len(found) == 0 {
		if was := n.gate.err(); n.gate.set(nil) && was != nil {
			n.opts.Logger.Info("stream fixed: publishing again", "stream", n.opts.Stream)
		}
		return false, nil
	}
	why := fmt.Errorf("%w: stream %q: %s", ErrStreamMismatch, n.opts.Stream, strings.Join(found, "; "))
	if n.opts.StreamConfig.OnMismatch == MismatchWarn {
		if n.gate.set(nil) {
			n.opts.Logger.Warn("stream breaks the node's promises; shipping anyway (on_mismatch warn)", "err", why)
		}
		return false, nil
	}
	if n.gate.set(why) {
		n.opts.Logger.Error("stream breaks the node's promises: not publishing until it is fixed (on_mismatch refuse)", "err", why)
	}
	return true, nil
}
