package wire

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/natstest"
)

// dictBucket starts a NATS server and returns the dictionary bucket of
// stream SLUICE on it.
func dictBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := testJetStream(t).CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: DictBucket("SLUICE")})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// testJetStream starts a NATS server and returns a JetStream client of it.
func testJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(natstest.Start(t).ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestBucketDictionaries decodes a version 2 batch of real events with the
// dictionary from the stream's bucket: a key not there yet is ErrDict,
// the same batch decodes once the key is written, and the dictionary is
// fetched once for every Decoder sharing the source.
func TestBucketDictionaries(t *testing.T) {
	kv := dictBucket(t)
	if kv.Bucket() != "SLUICE_DICT" {
		t.Fatalf("bucket %q, want SLUICE_DICT", kv.Bucket())
	}
	raw := trainedDict(t)
	h, body, want := dictBatch(t, raw)
	src := NewBucketDictionaries(kv)
	d := newDictDecoder(t, src)

	_, err := d.DecodeContext(t.Context(), h, body)
	checkErr(t, err, ErrDict, "wire: dictionary unavailable: dictionary 40000: bucket SLUICE_DICT key 40000: …")
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("err %v does not wrap jetstream.ErrKeyNotFound", err)
	}

	if _, err := kv.Create(t.Context(), DictKey(testDictID), raw); err != nil {
		t.Fatal(err)
	}
	b, err := d.DecodeContext(t.Context(), h, body)
	if err != nil {
		t.Fatalf("Decode once the key exists: %v", err)
	}
	checkEvents(t, b, want)

	// Kept: other Decoders on the same source decode without the bucket,
	// concurrently.
	if err := kv.Purge(t.Context(), DictKey(testDictID)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			d, err := NewDecoder(0, WithDictionaries(src))
			if err != nil {
				t.Error(err)
				return
			}
			defer d.Close()
			for range 10 {
				b, err := d.DecodeContext(t.Context(), h, body)
				if err != nil || len(b.Events) != len(want) {
					t.Errorf("concurrent decode: %d events, %v", len(b.Events), err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestBucketDictionariesBad: a value that is not the dictionary its key
// names is ErrBadDict, with the bucket and key, and is not kept.
func TestBucketDictionariesBad(t *testing.T) {
	kv := dictBucket(t)
	raw := trainedDict(t)
	cut := bytes.Clone(raw[:40])
	for _, tt := range []struct {
		id    uint32
		value []byte
		msg   string
	}{
		{testDictID + 1, raw, "bucket SLUICE_DICT key 40001: wire: bad dictionary 40001: the dictionary says it is 40000"},
		{testDictID + 2, []byte("zstd"), "bucket SLUICE_DICT key 40002: wire: bad dictionary 40002: not in zstd's dictionary format (no magic number)"},
		{testDictID + 3, withID(cut, testDictID+3), "bucket SLUICE_DICT key 40003: wire: bad dictionary 40003: …"},
	} {
		if _, err := kv.Put(t.Context(), DictKey(tt.id), tt.value); err != nil {
			t.Fatal(err)
		}
		src := NewBucketDictionaries(kv)
		_, err := src.Dictionary(t.Context(), tt.id)
		checkErr(t, err, ErrBadDict, tt.msg)
		if len(src.dicts) != 0 {
			t.Errorf("key %d: a bad dictionary was kept", tt.id)
		}
		// Through a Decoder, it stays ErrBadDict, not ErrDict.
		h, body, _ := dictBatch(t, withID(raw, tt.id))
		_, err = newDictDecoder(t, src).Decode(h, body)
		if !errors.Is(err, ErrBadDict) || errors.Is(err, ErrDict) {
			t.Errorf("key %d through a Decoder: %v, want ErrBadDict only", tt.id, err)
		}
	}
}

// TestBucketDictionariesBound: the source keeps at most bucketDicts
// dictionaries, dropping the least recently used.
func TestBucketDictionariesBound(t *testing.T) {
	kv := dictBucket(t)
	raw := trainedDict(t)
	src := NewBucketDictionaries(kv)
	for i := range bucketDicts + 1 {
		id := testDictID + uint32(i)
		if _, err := kv.Put(t.Context(), DictKey(id), withID(raw, id)); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Dictionary(t.Context(), id); err != nil {
			t.Fatalf("dictionary %d: %v", id, err)
		}
		if i == 0 {
			continue
		}
		// Keep the first the most recently used.
		if _, err := src.Dictionary(t.Context(), testDictID); err != nil {
			t.Fatal(err)
		}
	}
	if len(src.ids) != bucketDicts || len(src.dicts) != bucketDicts {
		t.Fatalf("keeps %d/%d dictionaries, bound %d", len(src.ids), len(src.dicts), bucketDicts)
	}
	if _, ok := src.dicts[testDictID+1]; ok {
		t.Error("the least recently used dictionary is still kept")
	}
	if _, ok := src.dicts[testDictID]; !ok {
		t.Error("the most recently used dictionary was dropped")
	}
}

// TestZstdCLIDecodesDictBatch: the reference zstd CLI decodes a body
// compressed with a dictionary from the bucket, given that dictionary
// (`zstd -D dict -d`), as docs/wire.md tells consumers in other languages.
func TestZstdCLIDecodesDictBatch(t *testing.T) {
	zstdCLI, err := exec.LookPath("zstd")
	if err != nil {
		t.Skip("zstd CLI not on PATH: interop with the reference implementation not checked")
	}
	raw := trainedDict(t)
	_, body, want := dictBatch(t, raw)
	dir := t.TempDir()
	dictFile, bodyFile := filepath.Join(dir, "40000.dict"), filepath.Join(dir, "batch.zst")
	if err := os.WriteFile(dictFile, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bodyFile, body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(zstdCLI, "-q", "-D", dictFile, "-d", "-c", bodyFile).Output()
	if err != nil {
		t.Fatalf("zstd -D %s -d: %v", dictFile, err)
	}
	if w := append(bytes.Join(want, []byte("\n")), '\n'); !bytes.Equal(out, w) {
		t.Fatalf("zstd -D -d wrote %d bytes, want the %d bytes of the batch's events", len(out), len(w))
	}
	// And without the dictionary it cannot.
	if err := exec.Command(zstdCLI, "-q", "-d", "-c", bodyFile).Run(); err == nil {
		t.Error("zstd -d decoded a dictionary batch without its dictionary")
	}
	v, _ := exec.Command(zstdCLI, "--version").Output()
	t.Logf("%s", bytes.TrimSpace(v))
}

// A consumer may start before the node creates the bucket: until it exists
// the batch is ErrDict, and once it holds the dictionary the batch decodes
// through the same source.
func TestStreamDictionariesBeforeTheBucket(t *testing.T) {
	js := testJetStream(t)
	raw := trainedDict(t)
	h, body, want := dictBatch(t, raw)
	d := newDictDecoder(t, NewStreamDictionaries(js, "SLUICE"))
	if _, err := d.DecodeContext(t.Context(), h, body); !errors.Is(err, ErrDict) || !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("no bucket: err %v, want ErrDict wrapping jetstream.ErrBucketNotFound", err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: DictBucket("SLUICE")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(t.Context(), DictKey(testDictID), raw); err != nil {
		t.Fatal(err)
	}
	b, err := d.DecodeContext(t.Context(), h, body)
	if err != nil {
		t.Fatalf("bucket and key there: %v", err)
	}
	checkEvents(t, b, want)
}
