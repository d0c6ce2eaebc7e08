package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// A batch is one class's cut of spooled events: its wire header fields
// (class, spool range, count, oldest event, level, dropped fields), its
// events as NDJSON (text) until it is compressed, then its zstd body, from
// the batcher's pool of bodies.
type batch struct {
	wire.Batch               // header fields; Events unused
	raw        int           // uncompressed bytes
	stale      time.Duration // the max age its oldest event had passed when cut (expiry by demotion); 0 if none
	text       *[]byte       // NDJSON, from cut until compress; nil after
	body       *[]byte       // zstd, from compress until its ack; nil before
}

// rng is the batch's spool range.
func (b *batch) rng() spool.Range { return spool.Range{First: b.First, Last: b.Last} }

// size is what the batch costs on the link.
func (b *batch) size() int { return len(*b.body) }

// A batcher reads one class's spool from its cursor and cuts batches:
// it expires events past the class's max age (dropped, or set aside to be
// sent after the newer ones: expiry by demotion), drops low-priority
// fields as the degradation level says, claims the batch's range durably
// in the spool, so that the batch's identity is fixed before its first
// publish, and compresses it with a reused zstd encoder at the level
// the lane's compression policy says and with the class's current
// dictionary: the caller's (compress, one encoder per compression worker
// of the lane's pipeline) or, for the halves of a split, its own
// (compressOwn).
//
// Expiry by demotion: events past the max age at the head of what is
// unsent are set aside (neither claimed nor acknowledged, so they stay in
// the spool) and the cursor goes on with the newer events; the set-aside
// ranges are cut into batches of their own, labelled stale, whenever no
// newer event is ready to go. The spool takes acks in any order. A stale
// batch's range lies within one set-aside range, so no two batches'
// ranges overlap. After a restart, unclaimed ranges below a claim are such
// events (or a split's unsent half): they are shipped the same way. At
// most maxStaleRanges ranges are kept; beyond, old events are cut where
// they are, still in batches of their own and labelled.
//
// The cursor and the set-aside ranges belong to the lane's shipper; cut
// may also be called by the publisher (for the halves of a split). Each
// cut reads into an NDJSON buffer of its own, from a free list that keeps
// as many as were ever in use at once (the pipeline bounds them).
type batcher struct {
	sp      *spool.Spool
	class   string
	node    string // header fields
	spoolID string
	cfg     *atomic.Pointer[laneConfig] // the lane's, replaced whole by Reconfigure
	now     func() time.Time
	log     *slog.Logger
	stats   *laneStats
	// pol chooses the level and bounds the size of a batch.
	pol *compressPolicy
	// expire is false with Link.Unshaped: nothing expires.
	expire bool

	// pending counts raw bytes ingested but not yet cut into a batch.
	pending atomic.Int64

	cursor uint64        // the first event not yet cut, set aside, dropped or expired
	stale  []spool.Range // set aside, still to be sent after the newer events; ascending, disjoint

	dict  *dicts // the class's dictionaries; nil with DictOff
	mu    sync.Mutex
	own   *encoders    // compressOwn's (mu)
	texts chan *[]byte // free NDJSON buffers
	bufs  sync.Pool    // compressed bodies, returned after their ack
}

// maxFreeTexts bounds the free list of NDJSON buffers. The buffers in use
// at once are bounded by the pipeline (its slots, plus a split's half),
// so the list keeps only as many as that.
const maxFreeTexts = 64

func newBatcher(sp *spool.Spool, class, node string, pol *compressPolicy, cfg *atomic.Pointer[laneConfig],
	stats *laneStats, expire bool, now func() time.Time, log *slog.Logger) (*batcher, error) {
	bt := &batcher{
		sp: sp, class: class, node: node, spoolID: sp.ID(), cfg: cfg, now: now, log: log,
		stats: stats, pol: pol, expire: expire,
		texts: make(chan *[]byte, maxFreeTexts),
	}
	// Fail at New, not at the first batch, on an encoder the options
	// cannot make.
	own, err := bt.newEncoders()
	if err != nil {
		return nil, err
	}
	bt.own = own
	return bt, nil
}

// newEncoders returns one goroutine's encoder, made at the policy's
// lowest level without a dictionary, and remade at the level and with the
// dictionary each batch wants; its window fits the largest batch the
// class may cut (encoderWindow of the class's MaxBytes, read when the
// encoder is made: the policy may cut smaller batches, never larger).
func (bt *batcher) newEncoders() (*encoders, error) {
	return newEncoders(bt.pol.lo, func() int { return encoderWindow(bt.cfg.Load().maxBytes) }, bt.class, bt.log)
}

// encoderWindow is the zstd window for batches of up to maxBytes of NDJSON:
// the smallest power of two that holds one, from 64 KiB to zstd's default
// 8 MiB. A batch is one frame and nothing refers outside it, so a larger
// window finds no more matches; it only costs memory, as an encoder keeps
// a history of up to twice its window (16 MiB at the default, per
// compression worker). A batch larger than the window (its class's limit
// raised by a reload after the encoder was made, or a range claimed before
// a restart under a larger limit) is still one valid frame, with matches
// only within the window.
func encoderWindow(maxBytes int) int {
	w := 64 << 10
	for w < maxBytes && w < 8<<20 {
		w <<= 1
	}
	return w
}

// close releases compressOwn's encoder.
func (bt *batcher) close() {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.own != nil {
		bt.own.close()
		bt.own = nil
	}
}

// compress replaces b's NDJSON with its zstd body, encoded by encs (one
// goroutine's) at the policy's level with the class's current dictionary
// if it has one (named in b.Dict), and gives the NDJSON buffer back. The
// batch is sampled for the class's next dictionary first. The policy
// observes the level's ratio and speed on the batch as it is sent: with
// the dictionary when there is one.
func (bt *batcher) compress(encs *encoders, b *batch) {
	bt.dict.sample(*b.text)
	enc, l, id := encs.get(bt.pol.current(), bt.dict.current())
	body := bt.getBody()
	start := time.Now()
	*body = enc.EncodeAll(*b.text, (*body)[:0])
	bt.pol.observe(l, len(*b.text), len(*body), time.Since(start))
	b.body = body
	b.Dict = id
	if id != 0 {
		bt.stats.dictBatches.Add(1)
	}
	bt.putText(b.text)
	b.text = nil
}

// compressOwn compresses b with the batcher's own encoder: for the
// halves of a split, cut outside the pipeline.
func (bt *batcher) compressOwn(b *batch) error {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.own == nil {
		own, err := bt.newEncoders()
		if err != nil {
			return err
		}
		bt.own = own
	}
	bt.compress(bt.own, b)
	return nil
}

// release gives back the buffers of a batch that will not be published.
func (bt *batcher) release(b *batch) {
	bt.putText(b.text)
	bt.putBody(b.body)
	b.text, b.body = nil, nil
}

// resume places the cursor after the last acknowledged event and returns
// the ranges claimed before a restart, to be republished range for range
// (cutExact) before anything new. The unclaimed ranges below a claim
// (never claimed, or half of a batch split when the node stopped: not
// sent yet, older than what follows) are set aside.
func (bt *batcher) resume() []spool.Range {
	bt.cursor = bt.sp.Acked(bt.class) + 1
	var out []spool.Range
	for _, c := range bt.sp.Claims(bt.class) {
		if c.Last < bt.cursor {
			continue
		}
		if c.First > bt.cursor {
			bt.aside(spool.Range{First: bt.cursor, Last: c.First - 1})
		}
		out = append(out, c)
		bt.cursor = c.Last + 1
	}
	return out
}

// aside adds r to the set-aside ranges.
func (bt *batcher) aside(r spool.Range) {
	if n := len(bt.stale); n > 0 && bt.stale[n-1].Last+1 >= r.First {
		bt.stale[n-1].Last = max(bt.stale[n-1].Last, r.Last)
		return
	}
	bt.stale = append(bt.stale, r)
}

// unsent is the number of spooled events at or past the cursor.
func (bt *batcher) unsent() uint64 {
	if last := bt.sp.Last(bt.class); last >= bt.cursor {
		return last + 1 - bt.cursor
	}
	return 0
}

// hasStale reports whether set-aside events wait to be sent.
func (bt *batcher) hasStale() bool { return len(bt.stale) > 0 }

// cutExact cuts claimed range r again, as the batch it was: same range,
// same message id, whatever its events have become. The batch is left to
// be compressed.
func (bt *batcher) cutExact(b *batch, r spool.Range, act priority.Action, level int) (bool, error) {
	ok, _, _, err := bt.cut(b, cutSpec{from: r.First, last: r.Last, maxEvents: int(r.Len()), exact: true}, act, level)
	return ok, err
}

// next cuts the next batch, left to be claimed (claimAll, before it is
// sent) and compressed: of the set-aside events if old, else from the
// cursor, which then moves past what was read. It returns false with a
// nil error when nothing is left to send in what was read (all of it
// expired, dropped or set aside). On an error nothing moved: the same
// events are cut again next time.
func (bt *batcher) next(b *batch, old bool, act priority.Action, level int) (bool, error) {
	maxEvents, maxBytes := bt.cfg.Load().maxEvents, bt.batchBytes()
	var (
		ok       bool
		set      spool.Range // events set aside by this cut
		readNext uint64      // where the cut's read ended
		err      error
	)
	if old {
		r := bt.stale[0]
		ok, _, readNext, err = bt.cut(b, cutSpec{from: r.First, last: r.Last, maxEvents: maxEvents, maxBytes: maxBytes}, act, level)
	} else {
		ok, set, readNext, err = bt.cut(b, cutSpec{from: bt.cursor, maxEvents: maxEvents, maxBytes: maxBytes, aside: len(bt.stale) < maxStaleRanges}, act, level)
	}
	if err != nil {
		return false, err
	}
	if old {
		// Past what was read: sent, or dropped if expiry now drops.
		if bt.stale[0].First = max(bt.stale[0].First, readNext); bt.stale[0].First > bt.stale[0].Last {
			bt.stale = bt.stale[1:]
		}
	} else {
		if set.First != 0 {
			bt.aside(set)
		}
		// Past what was read: sent, set aside, dropped or expired.
		bt.cursor = max(bt.cursor, readNext)
	}
	return ok, nil
}

// cutHalf cuts, claims and compresses the batch of at most n events (0:
// all) of [from, last], a half of a split batch: old and newer events
// together, since the half must cover its range whatever it holds.
func (bt *batcher) cutHalf(b *batch, from, last uint64, n int, act priority.Action, level int) (bool, error) {
	ok, _, _, err := bt.cut(b, cutSpec{from: from, last: last, maxEvents: n, mixed: true}, act, level)
	if err == nil && ok {
		err = bt.claim(b)
	}
	if err == nil && ok {
		if err = bt.compressOwn(b); err != nil {
			// Claimed: the half goes again, identically, after a restart.
			bt.release(b)
		}
	}
	return ok, err
}

// claim records b's range durably: from now on it is republished as the
// same batch until acknowledged. On failure b's buffers go back.
func (bt *batcher) claim(b *batch) error {
	if err := bt.sp.Claim(bt.class, b.rng()); err != nil {
		bt.release(b)
		return fmt.Errorf("claim %d-%d: %w", b.First, b.Last, err)
	}
	return nil
}

// claimAll records the ranges rs, batches cut by next, durably in one
// spool commit: from then on each is republished as the same batch until
// acknowledged. A spool that fails is tried again, the same ranges, after
// a backoff, until it succeeds or ctx ends (false): the batches are cut
// and their cursor moved, so they may not be cut again; unclaimed, they
// must not be sent, and after a restart they are cut anew.
func (bt *batcher) claimAll(ctx context.Context, retryMin, retryMax time.Duration, rs []spool.Range) bool {
	trouble := backoff{min: retryMin, max: retryMax}
	for {
		err := bt.sp.Claim(bt.class, rs...)
		if err == nil {
			return true
		}
		if !bt.trouble(ctx, &trouble, fmt.Errorf("claim %d batches from %d: %w", len(rs), rs[0].First, err)) {
			return false
		}
	}
}

// cutSpec says what a cut reads.
type cutSpec struct {
	from, last          uint64 // from seq from on, not past last (0: no limit)
	maxEvents, maxBytes int    // bounds of the batch (0: none); maxBytes bounds its NDJSON
	// exact: the batch keeps the range [from, last] whatever was read, so
	// that a republished claim keeps its message id.
	exact bool
	// aside: with expiry by demotion, events past the max age at the
	// head of the cut are set aside, not cut into the batch.
	aside bool
	// mixed: old and newer events may share the batch (a split half must
	// cover its range whatever it holds). Implied by exact.
	mixed bool
}

// maxStaleRanges bounds the set-aside ranges a lane remembers (16 bytes
// each). Ranges multiply only while a class's backlog stays about its max
// age behind; beyond the bound, old events are cut where they are.
const maxStaleRanges = 4096

// cut reads the events s describes into batch b as NDJSON, applying the
// level's action (under ActionDropFields, low-priority fields are
// removed) and the class's expiry: an event past the max age is left out
// and counted (ExpireDrop), or, with ExpireDemote, set aside (s.aside, at
// the head of the cut) or kept, the batch then labelled stale. Unless
// mixed or exact, a demoting class's batch holds only old or only newer
// events. It reports whether b was filled, false when no event is left to
// send (a range whose events have all expired is acknowledged here); the
// range of events set aside; and the seq to read from next.
func (bt *batcher) cut(b *batch, s cutSpec, act priority.Action, level int) (ok bool, set spool.Range, next uint64, err error) {
	text := bt.getText()
	defer func() {
		if !ok {
			bt.putText(text)
		}
	}()
	raw := (*text)[:0]
	*b = batch{}
	b.Level = level
	cfg := bt.cfg.Load()
	var drop *priority.Paths
	if act.Kind == priority.ActionDropFields {
		drop = cfg.fields.Below(act.MinFieldPriority)
	}
	var oldBefore int64 // events appended before this are past the max age
	maxAge := cfg.class.MaxAge
	if maxAge > 0 && bt.expire {
		oldBefore = bt.now().Add(-maxAge).UnixNano()
	}
	demote := oldBefore != 0 && cfg.class.Expire != priority.ExpireDrop
	var read spool.Range
	var expired uint64
	next, err = bt.sp.Read(bt.class, s.from, s.maxEvents, s.maxBytes, func(e spool.Entry) error {
		if s.last != 0 && e.Seq > s.last {
			return errStopRead
		}
		old := e.Time < oldBefore
		if demote && !s.exact && !s.mixed {
			if old && s.aside && read.First == 0 {
				if set.First == 0 {
					set.First = e.Seq
				}
				set.Last = e.Seq
				return nil
			}
			if b.Count > 0 && old != (b.Oldest.UnixNano() < oldBefore) {
				return errStopRead // old and newer events go in batches of their own
			}
		}
		if b.Count > 0 && s.maxBytes > 0 && len(raw)+len(e.Data)+1 > s.maxBytes {
			// The spool bounds the events' bytes; the batch is NDJSON,
			// one newline more per event.
			return errStopRead
		}
		if read.First == 0 {
			read.First = e.Seq
		}
		read.Last = e.Seq
		if old && !demote {
			expired++
			return nil
		}
		if b.Count == 0 {
			b.Oldest = time.Unix(0, e.Time)
		}
		b.Count++
		if drop != nil {
			var err error
			if raw, b.Dropped, err = drop.Drop(raw, e.Data, b.Dropped); err != nil {
				// Spooled events are valid JSON; if one is not, it travels as is.
				bt.log.Warn("drop fields", "class", bt.class, "seq", e.Seq, "err", err)
			}
		} else {
			raw = append(raw, e.Data...)
		}
		raw = append(raw, '\n')
		return nil
	})
	*text = raw
	if err != nil && !errors.Is(err, errStopRead) {
		return false, spool.Range{}, s.from, fmt.Errorf("read from %d: %w", s.from, err)
	}
	err = nil
	if s.exact {
		read = spool.Range{First: s.from, Last: s.last}
	}
	if expired > 0 {
		bt.stats.expired.Add(expired)
	}
	if read.First == 0 {
		return false, set, next, nil
	}
	if bt.pending.Add(-int64(len(raw))) < 0 {
		// Events spooled before a restart were never counted in.
		bt.pending.Store(0)
	}
	b.First, b.Last = read.First, read.Last
	if b.Count == 0 {
		// Nothing left to send in this range: it is done.
		return false, set, next, bt.sp.Ack(bt.class, read)
	}
	if demote && b.Oldest.UnixNano() < oldBefore {
		b.stale = maxAge
	}
	b.raw = len(raw)
	b.text = text
	b.Node, b.Spool, b.Class = bt.node, bt.spoolID, bt.class
	return true, set, next, nil
}

var errStopRead = errors.New("stop read")

// Batch air time: a batch takes at most this long on the wire at the
// link's target rate (but is never cut below minBatchBytes raw). A batch
// is the shaper's packet: once on the wire nothing overtakes it, so a
// critical batch queued behind a bulk batch waits for all of it. HTB
// relies on 1500-byte packets for the same reason.
const (
	batchAirtime  = shaper.DefaultBatchAirtime // 25 ms
	minBatchBytes = shaper.MinBatchRawBytes    // 16 KiB
)

// batchBytes is the raw size bound of the next batch: the class's MaxBytes,
// or less on a slow link, so that the batch compressed fits in its air
// time at the link's target (batchAirtime at a fixed level, at the
// class's observed ratio; shaper.DefaultBulkAirtime at the level the
// compression policy chooses, at that level's ratio). The rules are
// shaper's model, which `sluice plan` evaluates too.
func (bt *batcher) batchBytes() int { return bt.pol.batchBytes() }

// wireFrac is the wire bytes per raw byte of the class's batches
// published so far (1 before any).
func (bt *batcher) wireFrac() float64 {
	if raw, wire := bt.stats.rawBytes.Load(), bt.stats.wireBytes.Load(); raw > 0 && wire > 0 {
		return float64(wire) / float64(raw)
	}
	return 1
}

// trouble logs a spool failure and waits before the caller tries again.
// It returns false if ctx ends meanwhile.
func (bt *batcher) trouble(ctx context.Context, b *backoff, err error) bool {
	bt.stats.spoolErrors.Add(1)
	if b.attempt == 0 {
		bt.log.Error("spool failed, retrying", "class", bt.class, "err", err)
	}
	return sleep(ctx, b.next())
}

func (bt *batcher) getText() *[]byte {
	select {
	case p := <-bt.texts:
		return p
	default:
		p := make([]byte, 0, 64<<10)
		return &p
	}
}

func (bt *batcher) putText(p *[]byte) {
	if p == nil {
		return
	}
	select {
	case bt.texts <- p:
	default:
	}
}

func (bt *batcher) getBody() *[]byte {
	if p, ok := bt.bufs.Get().(*[]byte); ok {
		return p
	}
	p := make([]byte, 0, 64<<10)
	return &p
}

// putBody gives a body back once its batch is done with it.
func (bt *batcher) putBody(p *[]byte) {
	if p != nil {
		bt.bufs.Put(p)
	}
}
