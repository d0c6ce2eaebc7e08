package wire_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/wire"
)

func ExampleDecoder_Decode() {
	// What the edge publishes: headers from the batch's metadata, and a
	// body that is one zstd frame of NDJSON.
	batch := wire.Batch{
		Node: "edge-1", Spool: "sp1", Class: "ingest",
		First: 101, Last: 103, Count: 2, // sequence 102 was dropped from the spool
		Oldest:  time.Date(2026, 3, 1, 12, 4, 5, 0, time.UTC),
		Level:   1,
		Dropped: []string{"context.userAgent"},
	}
	ndjson := []byte(`{"type":"track","event":"Signed Up","messageId":"m101"}` + "\n" +
		`{"type":"page","name":"Home","messageId":"m103"}` + "\n")
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		log.Fatal(err)
	}
	msg := nats.NewMsg("sluice.ingest")
	msg.Header = batch.Header()
	msg.Data = enc.EncodeAll(ndjson, nil)
	enc.Close()

	// What a consumer does with each message it receives.
	dec, err := wire.NewDecoder(0) // 0: DefaultMaxSize
	if err != nil {
		log.Fatal(err)
	}
	defer dec.Close()
	b, err := dec.Decode(msg.Header, msg.Data)
	if err != nil {
		log.Fatal(err) // errors.Is(err, wire.ErrVersion), wire.ErrHeader or wire.ErrBody
	}
	fmt.Println("msg id:", msg.Header.Get(wire.HdrMsgID))
	fmt.Printf("class %s, range %d-%d, %d events, oldest %s\n",
		b.Class, b.First, b.Last, b.Count, b.Oldest.Format(time.RFC3339))
	if b.Level > 0 {
		fmt.Printf("partial: level %d dropped %v\n", b.Level, b.Dropped)
	}
	for _, e := range b.Events {
		fmt.Println(string(e)) // e aliases dec's buffer: copy it to keep it
	}
	// Output:
	// msg id: sp1.ingest.101-103
	// class ingest, range 101-103, 2 events, oldest 2026-03-01T12:04:05Z
	// partial: level 1 dropped [context.userAgent]
	// {"type":"track","event":"Signed Up","messageId":"m101"}
	// {"type":"page","name":"Home","messageId":"m103"}
}

// savedDicts is a dictionary source over dictionaries a consumer saved,
// for instance with `nats kv get SLUICE_DICT <id> --raw > <id>.dict`. A
// consumer that reads the stream's bucket uses wire.NewBucketDictionaries.
type savedDicts map[uint32][]byte

func (s savedDicts) Dictionary(_ context.Context, id uint32) ([]byte, error) {
	if d, ok := s[id]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("dictionary %d not saved", id)
}

func ExampleWithDictionaries() {
	// What the edge does: train a dictionary on the class's recent events,
	// store it under its id, and compress batches with it (version 2).
	var samples [][]byte
	for i := range 100 {
		samples = append(samples, fmt.Appendf(nil,
			`{"type":"page","name":"/docs/%d","properties":{"path":"/docs/%d","referrer":"https://example.com/"},"messageId":"m%d"}`, i%17, i%17, i))
	}
	const id = 40000
	dictionary, err := dict.BuildZstdDict(samples, dict.Options{MaxDictSize: 4 << 10, HashBytes: 6, ZstdDictID: id})
	if err != nil {
		log.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderDict(dictionary))
	if err != nil {
		log.Fatal(err)
	}
	batch := wire.Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 7, Last: 8, Count: 2, Dict: id}
	msg := nats.NewMsg("sluice.ingest")
	msg.Header = batch.Header()
	msg.Data = enc.EncodeAll([]byte(`{"type":"page","name":"/docs/3","messageId":"m7"}`+"\n"+
		`{"type":"page","name":"/docs/4","messageId":"m8"}`+"\n"), nil)
	enc.Close()

	// What a consumer does: give the Decoder a dictionary source.
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(savedDicts{id: dictionary}))
	if err != nil {
		log.Fatal(err)
	}
	defer dec.Close()
	b, err := dec.DecodeContext(context.Background(), msg.Header, msg.Data)
	if errors.Is(err, wire.ErrDict) {
		log.Fatal(err) // not available now: keep the message and retry later
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("version %s, dictionary %d, %d events\n", msg.Header.Get(wire.HdrVersion), b.Dict, len(b.Events))
	for _, e := range b.Events {
		fmt.Println(string(e))
	}

	// A Decoder without the dictionary cannot decode it, and says why.
	plain, err := wire.NewDecoder(0)
	if err != nil {
		log.Fatal(err)
	}
	defer plain.Close()
	_, err = plain.Decode(msg.Header, msg.Data)
	fmt.Println(errors.Is(err, wire.ErrDict), err)
	// Output:
	// version 2, dictionary 40000, 2 events
	// {"type":"page","name":"/docs/3","messageId":"m7"}
	// {"type":"page","name":"/docs/4","messageId":"m8"}
	// true wire: dictionary unavailable: dictionary 40000: this Decoder has no dictionary source (wire.WithDictionaries)
}
