package aggregator_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/embedded"
	"github.com/sluicehq/sluice/wire"
)

func Example() {
	dir, _ := os.MkdirTemp("", "sluice-example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{Dir: dir + "/nats", Port: -1})
	if err != nil {
		log.Fatal(err)
	}
	defer embedded.Shutdown(context.Background(), srv)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	node, err := aggregator.New(aggregator.Options{Node: "edge-1", Dir: dir + "/spool", Conn: nc})
	if err != nil {
		log.Fatal(err)
	}
	// A nil error means both events are durable in the spool.
	err = node.Ingest(context.Background(), "ingest",
		[]byte(`{"type":"page","name":"/pricing"}`),
		[]byte(`{"type":"track","event":"signup"}`))
	if err != nil {
		log.Fatal(err)
	}
	// Shutdown drains: it returns once JetStream has acknowledged them.
	if err := node.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}

	// A consumer reads the batch back with the wire package.
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, _ := js.Stream(ctx, "SLUICE")
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	dec, _ := wire.NewDecoder(0)
	defer dec.Close()
	b, err := dec.Decode(nats.Header(msg.Header), msg.Data)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Subject, b.Node, b.Class, b.Count)
	for _, ev := range b.Events {
		fmt.Println(string(ev))
	}
	// Output:
	// sluice.ingest edge-1 ingest 2
	// {"type":"page","name":"/pricing"}
	// {"type":"track","event":"signup"}
}
