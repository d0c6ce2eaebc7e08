package wire_test

import (
	"fmt"
	"log"
	"time"

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
