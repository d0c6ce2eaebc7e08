package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

// dicts is one class's dictionary keeper: its compression workers sample
// the class's batches into it, and its trainer goroutine (run) trains a
// dictionary off the shipping path, publishes it to the stream's
// dictionary bucket and, only once JetStream has acknowledged it, makes it
// current: from then on the workers compress with it and name it in the
// batch (format version 2). Nothing waits for it: until a dictionary is
// current, and whenever training does not pay or publishing fails, the
// batches go without one (or with the last acknowledged one).
//
// Bounded: the samples (DictOptions.SampleBytes), one training at a time
// in the whole node (trainSem), at most one training per Interval after
// the first unless forced, one current dictionary in memory and one
// encoder for it per worker. Published dictionaries stay in the bucket:
// a batch in the stream may name them.
type dicts struct {
	class    string
	mode     DictMode
	o        DictOptions
	level    func() zstd.EncoderLevel // the level the class's policy compresses at now
	smp      *sampler
	bucket   *dictBucket
	trainSem chan struct{} // shared by the node's classes: one training at a time
	stats    *laneStats
	log      *slog.Logger
	timeout  time.Duration

	cur   atomic.Pointer[dictionary] // acknowledged in the bucket; nil: none yet
	force chan struct{}              // retrain now (retrain)

	// last is the dictionary of the last training or drift check, for
	// Stats: its ratios with and without.
	last atomic.Pointer[dictionary]
}

// current returns the dictionary batches are compressed with now, nil if
// none. d may be nil.
func (d *dicts) current() *dictionary {
	if d == nil {
		return nil
	}
	return d.cur.Load()
}

// sample adds a batch's NDJSON to the samples. d may be nil.
func (d *dicts) sample(text []byte) {
	if d != nil {
		d.smp.add(text)
	}
}

// retrain asks the trainer to train a new dictionary now, whatever the
// current one's ratio.
func (d *dicts) retrain() {
	select {
	case d.force <- struct{}{}:
	default:
	}
}

// run is the trainer goroutine: it trains once enough events were
// sampled, then every Interval checks the current dictionary against the
// recent samples and retrains when it has drifted, or tries again a
// training that did not pay or a publish that failed.
func (d *dicts) run(ctx context.Context) {
	t := time.NewTicker(d.o.Interval)
	defer t.Stop()
	ready := d.smp.ready
	var pending *dictionary // trained and adopted, not yet acknowledged in the bucket
	// A training that did not pay waits skip more ticks before the
	// next, doubling up to maxDictSkip: a class a dictionary does not
	// help costs a training an hour or so, not one a minute.
	skip, idle := 0, 0
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-ready:
			ready = nil
		case <-d.force:
			force = true
		case <-t.C:
		}
		if !isClosed(d.smp.ready) {
			continue
		}
		if pending == nil && d.cur.Load() == nil && !force && idle < skip {
			idle++
			continue
		}
		if pending == nil {
			pending = d.step(ctx, force)
			switch {
			case pending != nil || d.cur.Load() != nil:
				skip = 0
			case skip == 0:
				skip = 1
			default:
				skip = min(2*skip, maxDictSkip)
			}
			idle = 0
		}
		if pending != nil && d.publish(ctx, pending) {
			pending = nil
		}
	}
}

// maxDictSkip bounds the Intervals skipped after trainings that did not
// pay.
const maxDictSkip = 64

// step measures the current dictionary on the recent samples and, if it
// has drifted (or there is none, or force), trains a new one and returns
// it if the class's mode adopts it; nil otherwise.
func (d *dicts) step(ctx context.Context, force bool) *dictionary {
	select {
	case d.trainSem <- struct{}{}:
		defer func() { <-d.trainSem }()
	case <-ctx.Done():
		return nil
	}
	samples := d.smp.snapshot()
	// Trained and measured at the level the class compresses at now (its
	// policy's): the dictionary's entropy tables are built at it, and
	// its gain, which decides adoption, is the gain at that level.
	spec := trainSpec{level: d.level(), maxSize: d.o.MaxSize, batchBytes: d.batchBytes(), id: randomDictID()}
	cur := d.cur.Load()
	if cur != nil && !force {
		var held [][]byte
		for i := dictHeldOut - 1; i < len(samples); i += dictHeldOut {
			held = append(held, samples[i])
		}
		// At the level it was adopted at, whatever the level now: a
		// drift is the events changing, not the policy.
		now := &dictionary{id: cur.id, raw: cur.raw, level: cur.level}
		if err := now.measure(held, spec.batchBytes, cur.level); err != nil {
			d.log.Error("dictionary check", "class", d.class, "dict", cur.id, "err", err)
			return nil
		}
		d.last.Store(now)
		if !drifted(cur, now) {
			return nil
		}
		d.log.Info("dictionary drifted, retraining", "class", d.class, "dict", cur.id,
			"ratio_at_adoption", cur.ratio(), "ratio_now", now.ratio())
	}
	d.stats.dictTrainings.Add(1)
	nd, err := train(samples, spec)
	if err != nil {
		d.stats.dictTrainErrors.Add(1)
		d.log.Warn("dictionary training failed", "class", d.class, "err", err)
		return nil
	}
	d.last.Store(nd)
	if !adopt(d.mode, nd, d.o.MinGain) {
		d.log.Info("dictionary does not pay: not used", "class", d.class, "gain", nd.gain(), "min_gain", d.o.MinGain)
		return nil
	}
	return nd
}

// batchBytes is the class's mean batch size so far, in raw bytes, bounded
// to 4 KiB..256 KiB; 16 KiB before any batch.
func (d *dicts) batchBytes() int {
	n, raw := d.stats.batches.Load(), d.stats.rawBytes.Load()
	if n == 0 {
		return minBatchBytes
	}
	return int(min(max(raw/n, 4<<10), 256<<10))
}

// publish writes nd to the bucket under a fresh id, waits for its ack,
// and makes it current. It reports false, counted and logged, if the
// bucket could not take it: batches go on with the current dictionary.
func (d *dicts) publish(ctx context.Context, nd *dictionary) bool {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	err := d.bucket.create(ctx, nd)
	if err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			d.stats.dictPublishErrors.Add(1)
			d.log.Warn("dictionary publish failed: batches go on without it", "class", d.class, "err", err)
		}
		return false
	}
	prev := d.cur.Swap(nd)
	d.stats.dictAdoptions.Add(1)
	d.stats.dictID.Store(nd.id)
	args := []any{"class", d.class, "dict", nd.id, "bytes", len(nd.raw), "ratio", nd.ratio(), "ratio_without", nd.plainRatio()}
	if prev != nil {
		args = append(args, "previous", prev.id)
	}
	d.log.Info("dictionary in use", args...)
	return true
}

// dictBucket is the stream's dictionary bucket (wire.DictBucket), looked
// up or created at its first use and again after a failure.
type dictBucket struct {
	js     jetstream.JetStream
	stream string

	mu sync.Mutex
	kv jetstream.KeyValue
}

// create stores nd under a key no one holds: its id, or another random
// one (nd's id changes with it) if taken. It returns once JetStream has
// acknowledged the write.
func (b *dictBucket) create(ctx context.Context, nd *dictionary) error {
	kv, err := b.open(ctx)
	if err != nil {
		return err
	}
	for range 8 {
		_, err = kv.Create(ctx, wire.DictKey(nd.id), nd.raw)
		if !errors.Is(err, jetstream.ErrKeyExists) {
			break
		}
		nd.id = randomDictID()
		nd.raw = withDictID(nd.raw, nd.id)
	}
	if err != nil {
		b.mu.Lock()
		b.kv = nil // look it up again next time: it may have gone
		b.mu.Unlock()
		return fmt.Errorf("dictionary %d: %w", nd.id, err)
	}
	return nil
}

// open returns the bucket, creating it if missing: no TTL, one value per
// key, the stream's replicas.
func (b *dictBucket) open(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kv != nil {
		return b.kv, nil
	}
	name := wire.DictBucket(b.stream)
	kv, err := b.js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		st, serr := b.js.Stream(ctx, b.stream)
		if serr != nil {
			return nil, fmt.Errorf("dictionary bucket %s: stream %s: %w", name, b.stream, serr)
		}
		kv, err = b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: "sluice: zstd dictionaries of stream " + b.stream + ", by id",
			History:     1,
			Replicas:    st.CachedInfo().Config.Replicas,
			Storage:     jetstream.FileStorage,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("dictionary bucket %s: %w", name, err)
	}
	b.kv = kv
	return kv, nil
}

// encoders is one compression worker's zstd encoder: at the level its
// class's compression policy says now, without a dictionary or with the
// current one, remade when either changes. One at a time: an encoder
// that has compressed a batch holds 0.6–2.6 MiB at fastest, 1.6–3.6 at
// default, 5.4–6.4 at better and 35–36 at best (batches of 64–768 KiB,
// BenchmarkEncoderMemory), a class uses one dictionary, or none, at a
// time, and its policy changes level rarely (hysteresis:
// shaper.ChooseCompression), so remaking it at a change costs less than
// keeping one per level. While it is remade the worker holds two, the old
// one closed as soon as the new one is made. Never shared between
// goroutines.
type encoders struct {
	window func() int // encoderWindow of the class's batches, read at each make
	class  string
	log    *slog.Logger

	enc   *zstd.Encoder
	level shaper.CompressLevel // enc's
	id    uint32               // enc's dictionary; 0: none
}

// newEncoders returns a worker's encoders with one made at level, without
// a dictionary: an encoder the options cannot make fails here, not at the
// first batch.
func newEncoders(level shaper.CompressLevel, window func() int, class string, log *slog.Logger) (*encoders, error) {
	e := &encoders{window: window, class: class, log: log}
	var err error
	if e.enc, err = e.make(level, nil); err != nil {
		return nil, err
	}
	e.level = level
	return e, nil
}

func (e *encoders) make(level shaper.CompressLevel, d *dictionary) (*zstd.Encoder, error) {
	opts := []zstd.EOption{zstd.WithEncoderLevel(wire.EncoderLevel(level.String())), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(e.window())}
	if d != nil {
		opts = append(opts, zstd.WithEncoderDict(d.raw))
	}
	return zstd.NewWriter(nil, opts...)
}

// get returns the encoder at level with dictionary d (nil: none), the
// level it compresses at and the id the batch names. If that encoder
// cannot be made (logged), the one it has goes on: its level, and no
// dictionary or the previous one, acknowledged too.
func (e *encoders) get(level shaper.CompressLevel, d *dictionary) (*zstd.Encoder, shaper.CompressLevel, uint32) {
	var want uint32
	if d != nil {
		want = d.id
	}
	if e.enc != nil && e.level == level && e.id == want {
		return e.enc, level, want
	}
	enc, err := e.make(level, d)
	if err != nil {
		e.log.Error("zstd encoder", "class", e.class, "level", level.String(), "dict", want, "err", err)
		return e.enc, e.level, e.id
	}
	e.close()
	e.enc, e.level, e.id = enc, level, want
	return enc, level, want
}

// close releases the encoder. It is idempotent.
func (e *encoders) close() {
	if e.enc != nil {
		e.enc.Close()
		e.enc, e.id = nil, 0
	}
}

// RetrainDictionary has class train a new dictionary from its recent
// events now, whatever its current one's ratio, and use it if the class's
// mode adopts it (after it is acknowledged in the bucket, like any other).
// It returns at once; the training runs on the class's trainer. It fails
// with ErrInvalidClass for a class the node does not ship, or whose
// dictionary mode is off.
func (n *Node) RetrainDictionary(class string) error {
	for _, l := range n.lanes {
		if l.name == class && l.bt.dict != nil {
			l.bt.dict.retrain()
			return nil
		}
	}
	return fmt.Errorf("%w: %q ships no dictionary", ErrInvalidClass, class)
}
