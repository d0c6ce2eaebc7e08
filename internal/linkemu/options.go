package linkemu

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Rate is a bandwidth in bits per second of payload (TCP/IP headers are not
// counted). Zero means unlimited.
type Rate int64

// Rate units, decimal as network links are sold: 20*Mbit is 20 000 000 bit/s.
const (
	Kbit Rate = 1000
	Mbit Rate = 1000 * Kbit
	Gbit Rate = 1000 * Mbit
)

// String formats r as "20Mbit/s", "1.5Mbit/s" or "unlimited".
func (r Rate) String() string {
	switch {
	case r <= 0:
		return "unlimited"
	case r >= Gbit:
		return strconv.FormatFloat(float64(r)/float64(Gbit), 'f', -1, 64) + "Gbit/s"
	case r >= Mbit:
		return strconv.FormatFloat(float64(r)/float64(Mbit), 'f', -1, 64) + "Mbit/s"
	case r >= Kbit:
		return strconv.FormatFloat(float64(r)/float64(Kbit), 'f', -1, 64) + "kbit/s"
	}
	return strconv.FormatInt(int64(r), 10) + "bit/s"
}

// serialization is how long n bytes occupy a link of rate r.
func (r Rate) serialization(n int) time.Duration {
	if r <= 0 {
		return 0
	}
	return time.Duration(float64(n) * 8 * float64(time.Second) / float64(r))
}

// bytesIn is how many bytes a link of rate r carries in d.
func (r Rate) bytesIn(d time.Duration) int {
	return int(float64(r) / 8 * d.Seconds())
}

// DefaultQueueDelay sizes the bottleneck queue when Shape.QueueBytes is
// zero: the queue holds this much transmission time at the shaped rate
// (20 Mbit/s → 250 kB), and never less than MinQueueBytes.
const DefaultQueueDelay = 100 * time.Millisecond

// MinQueueBytes is the smallest default queue (see DefaultQueueDelay).
const MinQueueBytes = 64 << 10

// Shape is the behaviour of one direction of the link. The zero value is an
// unlimited, undelayed direction, which the link forwards on a fast path.
type Shape struct {
	// Bandwidth is the bottleneck rate, shared by every connection through
	// the link in this direction. Default 0: unlimited.
	Bandwidth Rate
	// Latency is the one-way propagation delay added to every byte.
	// Default 0.
	Latency time.Duration
	// Jitter is a random extra delay, uniform in [0, Jitter], drawn per
	// chunk from the seeded generator. Bytes of one connection are never
	// reordered: a chunk never arrives before the one read before it.
	// Default 0.
	Jitter time.Duration
	// QueueBytes bounds the bytes waiting for the bottleneck (shared by all
	// connections, like a router's buffer). When it is full the link stops
	// reading, so senders' writes block once their socket buffers fill.
	// Only meaningful with a Bandwidth. Default 0: DefaultQueueDelay's
	// worth of bytes at Bandwidth, at least MinQueueBytes.
	QueueBytes int
}

// IsZero reports whether s neither limits nor delays.
func (s Shape) IsZero() bool { return s == Shape{} }

func (s Shape) validate() error {
	switch {
	case s.Bandwidth < 0:
		return fmt.Errorf("negative bandwidth %d", s.Bandwidth)
	case s.Latency < 0:
		return fmt.Errorf("negative latency %v", s.Latency)
	case s.Jitter < 0:
		return fmt.Errorf("negative jitter %v", s.Jitter)
	case s.QueueBytes < 0:
		return fmt.Errorf("negative queue %d", s.QueueBytes)
	}
	return nil
}

// queueLimit is the effective bottleneck queue size in bytes.
func (s Shape) queueLimit() int {
	if s.QueueBytes > 0 {
		return s.QueueBytes
	}
	return max(s.Bandwidth.bytesIn(DefaultQueueDelay), MinQueueBytes)
}

// String formats s as "20Mbit/s +40ms ~5ms q=250000B", or "unshaped".
func (s Shape) String() string {
	if s.IsZero() {
		return "unshaped"
	}
	var b strings.Builder
	b.WriteString(s.Bandwidth.String())
	if s.Latency > 0 {
		b.WriteString(" +" + s.Latency.String())
	}
	if s.Jitter > 0 {
		b.WriteString(" ~" + s.Jitter.String())
	}
	if s.Bandwidth > 0 {
		fmt.Fprintf(&b, " q=%dB", s.queueLimit())
	}
	return b.String()
}

// Outage says whether the link forwards, and if not, how it fails.
type Outage int

const (
	// OutageNone: the link is up. The zero value.
	OutageNone Outage = iota
	// OutageBlackhole holds everything silently: connections stay open,
	// nothing is forwarded in either direction, new connections are
	// accepted but carry nothing. When the link comes back, held bytes are
	// delivered (at least one Latency after recovery, as a TCP retransmit
	// would be) and nothing is lost.
	OutageBlackhole
	// OutageReset closes every connection with a TCP reset (bytes in flight
	// are dropped and counted) and resets each new connection as soon as
	// it is accepted, until the link comes back.
	OutageReset
)

// String returns "none", "blackhole" or "reset".
func (o Outage) String() string {
	switch o {
	case OutageNone:
		return "none"
	case OutageBlackhole:
		return "blackhole"
	case OutageReset:
		return "reset"
	}
	return "Outage(" + strconv.Itoa(int(o)) + ")"
}

// Settings is the whole live configuration of a link.
type Settings struct {
	// Upstream shapes bytes from the client (sluice) to the upstream server
	// (NATS).
	Upstream Shape
	// Downstream shapes bytes from the upstream server back to the client.
	Downstream Shape
	// Outage, when not OutageNone, takes the link down.
	Outage Outage
}

// Symmetric returns Settings shaping both directions the same way.
func Symmetric(s Shape) Settings { return Settings{Upstream: s, Downstream: s} }

// Validate reports whether s is usable, wrapping ErrInvalidSettings.
func (s Settings) Validate() error {
	if err := s.Upstream.validate(); err != nil {
		return fmt.Errorf("%w: upstream: %v", ErrInvalidSettings, err)
	}
	if err := s.Downstream.validate(); err != nil {
		return fmt.Errorf("%w: downstream: %v", ErrInvalidSettings, err)
	}
	if s.Outage < OutageNone || s.Outage > OutageReset {
		return fmt.Errorf("%w: unknown outage %d", ErrInvalidSettings, int(s.Outage))
	}
	return nil
}

// String formats s for logs and reports, e.g.
// "up 20Mbit/s +20ms q=250000B | down 20Mbit/s +20ms q=250000B".
func (s Settings) String() string {
	var str string
	if s.Upstream == s.Downstream {
		str = "both " + s.Upstream.String()
	} else {
		str = "up " + s.Upstream.String() + " | down " + s.Downstream.String()
	}
	if s.Outage != OutageNone {
		str += " | outage " + s.Outage.String()
	}
	return str
}

// shape returns the Shape of direction d.
func (s Settings) shape(d direction) Shape {
	if d == upstream {
		return s.Upstream
	}
	return s.Downstream
}

// Step is one change in a Schedule: at At after Run starts, the link takes
// Settings (all of them: a step does not inherit from the previous one).
type Step struct {
	At       time.Duration
	Settings Settings
}

// Schedule is a script of settings changes, in non-decreasing At order.
type Schedule []Step

// Validate reports whether every step's Settings are valid and the steps
// are in time order, wrapping ErrInvalidSettings.
func (sc Schedule) Validate() error {
	var prev time.Duration
	for i, st := range sc {
		if st.At < prev || st.At < 0 {
			return fmt.Errorf("%w: step %d at %v is before %v", ErrInvalidSettings, i, st.At, prev)
		}
		prev = st.At
		if err := st.Settings.Validate(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	return nil
}

// Defaults for Options fields left zero.
const (
	DefaultMaxChunk    = 16 << 10
	DefaultWindow      = 4 << 20
	DefaultReadBuffer  = 64 << 10
	DefaultDialTimeout = 5 * time.Second
)

// Options configure New. Upstream is required; every other zero value is a
// working default.
type Options struct {
	// Upstream is the host:port every accepted connection is forwarded to.
	// Required.
	Upstream string
	// Listen is the address to listen on. Default "127.0.0.1:0" (a free
	// loopback port; see Link.Addr).
	Listen string
	// Settings are the initial settings. Default: unshaped, up.
	Settings Settings
	// OutageMode is the Outage that SetDown(true) applies. Default (and
	// when OutageNone): OutageBlackhole.
	OutageMode Outage
	// Seed seeds the jitter generator, so a run's jitter sequence is
	// reproducible for the same order of chunks. Default 0 (a fixed seed).
	Seed uint64
	// MaxChunk bounds the bytes the link serializes as one unit on a shaped
	// direction; at low rates chunks are smaller (about 2 ms of
	// transmission, at least 1500 bytes), so delivery is smooth. Default
	// DefaultMaxChunk (16 KiB).
	MaxChunk int
	// Window bounds the bytes of one connection in one direction that the
	// link has read but not yet delivered (queued, or in propagation), like
	// a TCP window: one connection's throughput is at most
	// Window / (Latency + Jitter). Default DefaultWindow (4 MiB: 800 Mbit/s
	// at 40 ms).
	Window int
	// ReadBuffer is the SO_RCVBUF the link sets on the sockets it reads
	// from, so the kernel's buffering in front of the emulated queue stays
	// small and backpressure reaches the sender promptly. Default
	// DefaultReadBuffer (64 KiB); negative keeps the kernel's autotuning.
	ReadBuffer int
	// DialTimeout bounds connecting to Upstream. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives settings changes and connection errors at Info and
	// Debug. Nil discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Upstream == "" {
		return fmt.Errorf("%w: Upstream is required", ErrInvalidOptions)
	}
	if o.MaxChunk < 0 || o.Window < 0 || o.DialTimeout < 0 {
		return fmt.Errorf("%w: negative MaxChunk, Window or DialTimeout", ErrInvalidOptions)
	}
	if err := o.Settings.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if o.OutageMode < OutageNone || o.OutageMode > OutageReset {
		return fmt.Errorf("%w: unknown OutageMode %d", ErrInvalidOptions, int(o.OutageMode))
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.OutageMode == OutageNone {
		o.OutageMode = OutageBlackhole
	}
	if o.MaxChunk == 0 {
		o.MaxChunk = DefaultMaxChunk
	}
	if o.MaxChunk < minChunk {
		o.MaxChunk = minChunk
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.ReadBuffer == 0 {
		o.ReadBuffer = DefaultReadBuffer
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
