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
	kv jetstream.KeyValue

	mu    sync.Mutex
	ids   []uint32 // kept, least recently used first
	dicts map[uint32][]byte
	bytes int
}

// NewBucketDictionaries returns the dictionary source of the bucket kv,
// opened by the caller (js.KeyValue(ctx, wire.DictBucket(stream))). The
// caller's connection stays the caller's.
func NewBucketDictionaries(kv jetstream.KeyValue) *BucketDictionaries {
	return &BucketDictionaries{kv: kv, dicts: map[uint32][]byte{}}
}

// Dictionary returns dictionary id from the bucket, or from what it kept.
// The slice is shared: do not modify it. A value that is not dictionary id
// is ErrBadDict, and is not kept.
func (s *BucketDictionaries) Dictionary(ctx context.Context, id uint32) ([]byte, error) {
	if raw, ok := s.kept(id); ok {
		return raw, nil
	}
	e, err := s.kv.Get(ctx, DictKey(id))
	if err != nil {
		return nil, fmt.Errorf("bucket %s key %s: %w", s.kv.Bucket(), DictKey(id), err)
	}
	raw := e.Value()
	if err := checkDict(raw, id); err != nil {
		return nil, fmt.Errorf("bucket %s key %s: %w", s.kv.Bucket(), DictKey(id), err)
	}
	if _, err := zstd.InspectDictionary(raw); err != nil {
		return nil, fmt.Errorf("bucket %s key %s: %w %d: %v", s.kv.Bucket(), DictKey(id), ErrBadDict, id, err)
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
