package aggregator_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/wire"
)

func Example() {
	dir, _ := os.MkdirTemp("", "sluice-example")
	defer os.RemoveAll(dir)
	// A NATS server with JetStream inside this process; a service with a
	// NATS server of its own connects to that instead.
	srv, err := embednats.Start(embednats.Options{Dir: dir + "/nats", NoListen: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	nc, err := srv.Connect(nats.MaxReconnects(-1))
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

// Ingest's errors tell an embedding service what to do with the events it
// was given: drop or fix them (invalid, too large, unknown class), retry
// later (full), or stop sending (closed). A cancelled context leaves
// nothing behind.
func ExampleNode_Ingest_errors() {
	dir, _ := os.MkdirTemp("", "sluice-example")
	defer os.RemoveAll(dir)
	srv, err := embednats.Start(embednats.Options{Dir: dir + "/nats", NoListen: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	nc, err := srv.Connect()
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	node, err := aggregator.New(aggregator.Options{Node: "edge-1", Dir: dir + "/spool", Conn: nc})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	handle := func(err error) string {
		switch {
		case err == nil:
			return "durable"
		case errors.Is(err, aggregator.ErrInvalidEvent), errors.Is(err, aggregator.ErrTooLarge),
			errors.Is(err, aggregator.ErrInvalidClass):
			return "refused: fix the events"
		case errors.Is(err, aggregator.ErrFull):
			return "full: retry later"
		case errors.Is(err, aggregator.ErrClosed):
			return "closed: stop sending"
		case errors.Is(err, context.Canceled):
			return "cancelled: nothing kept"
		}
		return "unexpected: " + err.Error()
	}
	fmt.Println(handle(node.Ingest(ctx, "ingest", []byte(`{"type":"page"}`))))
	fmt.Println(handle(node.Ingest(ctx, "ingest", []byte(`{"type":"page"}`), []byte(`not json`))))
	fmt.Println(handle(node.Ingest(ctx, "clicks", []byte(`{"type":"page"}`))))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	fmt.Println(handle(node.Ingest(cancelled, "ingest", []byte(`{"type":"page"}`))))
	node.Shutdown(ctx)
	fmt.Println(handle(node.Ingest(ctx, "ingest", []byte(`{"type":"page"}`))))
	// Output:
	// durable
	// refused: fix the events
	// refused: fix the events
	// cancelled: nothing kept
	// closed: stop sending
}
