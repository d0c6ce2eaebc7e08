package wire

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of the dictionaries a BucketDictionaries keeps.
const (
	bucketDicts     = 64
	bucketDictBytes = 32 << 20
)

// BucketDictionaries is the Dictionaries of a stream's dictionary bucket
// (DictBucket): it gets dictionary id from key DictKey(id), checks that the
// value is that dictionary and keeps it, so that every Decoder sharing it
// fetches a dictionary once. It keeps the 64 dictionaries it returned last,
// at most 32 MiB of them, and is safe for concurrent use.
//
// A key that is not there is an error, not a verdict: a dictionary is
// written before the first batch that uses it, but a KV read (Direct Get)
// may be served by a replica that has not caught up yet. Decoder turns
// every error of Dictionary into ErrDict: try again later.
type BucketDictionaries struct {
	js     jetstream.JetStream // set: kv is opened at first use
	bucket string

	mu    sync.Mutex
	kv    jetstream.KeyValue
	ids   []uint32 // kept, least recently used first
	dicts map[uint32][]byte
	bytes int
}

// NewBucketDictionaries returns the dictionary source of the bucket kv,
// opened by the caller (js.KeyValue(ctx, wire.DictBucket(stream))). The
// caller's connection stays the caller's.
func NewBucketDictionaries(kv jetstream.KeyValue) *BucketDictionaries {
	return &BucketDictionaries{kv: kv, bucket: kv.Bucket(), dicts: map[uint32][]byte{}}
}

// NewStreamDictionaries returns the dictionary source of stream's bucket
// (DictBucket(stream)) through js. The bucket is opened at the first
// Dictionary, and again after an open that failed: a node creates it only
// when it adopts its first dictionary, so a consumer may start before it
// exists.
func NewStreamDictionaries(js jetstream.JetStream, stream string) *BucketDictionaries {
	return OpenDictionaries(js, DictBucket(stream))
}

// OpenDictionaries is NewStreamDictionaries for a bucket named apart from
// its stream: opened through js at the first Dictionary, and again after
// an open that failed.
func OpenDictionaries(js jetstream.JetStream, bucket string) *BucketDictionaries {
	return &BucketDictionaries{js: js, bucket: bucket, dicts: map[uint32][]byte{}}
}

// open returns the bucket, opening it first if need be.
func (s *BucketDictionaries) open(ctx context.Context) (jetstream.KeyValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv == nil {
		kv, err := s.js.KeyValue(ctx, s.bucket)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", s.bucket, err)
		}
		s.kv = kv
	}
	return s.kv, nil
}

// Dictionary returns dictionary id from the bucket, or from what it kept.
// The slice is shared: do not modify it. A value that is not dictionary id
// is ErrBadDict, and is not kept.
func (s *BucketDictionaries) Dictionary(ctx context.Context, id uint32) ([]byte, error) {
	if raw, ok := s.kept(id); ok {
		return raw, nil
	}
	kv, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, DictKey(id))
	if err != nil {
		return nil, fmt.Errorf("bucket %s key %s: %w", s.bucket, DictKey(id), err)
	}
	raw := e.Value()
	if err := checkDict(raw, id); err != nil {
		return nil, fmt.Errorf("bucket %s key %s: %w", s.bucket, DictKey(id), err)
	}
	if _, err := zstd.InspectDictionary(raw); err != nil {
		return nil, fmt.Errorf("bucket %s key %s: %w %d: %v", s.bucket, DictKey(id), ErrBadDict, id, err)
	}
	s.keep(id, raw)
	return raw, nil
}

func (s *BucketDictionaries) kept(id uint32) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, ok := s.dicts[id]
	if ok {
		i := slices.Index(s.ids, id)
		s.ids = append(slices.Delete(s.ids, i, i+1), id)
	}
	return raw, ok
}

func (s *BucketDictionaries) keep(id uint32, raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.dicts[id]; ok {
		return // another goroutine fetched it meanwhile
	}
	s.dicts[id] = raw
	s.ids = append(s.ids, id)
	s.bytes += len(raw)
	for len(s.ids) > bucketDicts || (s.bytes > bucketDictBytes && len(s.ids) > 1) {
		old := s.ids[0]
		s.bytes -= len(s.dicts[old])
		delete(s.dicts, old)
		s.ids = s.ids[1:]
	}
}
