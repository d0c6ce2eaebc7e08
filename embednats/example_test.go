package embednats_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/embednats"
)

// Example starts a server with no listener and talks to it in-process.
func Example() {
	dir, err := os.MkdirTemp("", "embednats-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	srv, err := embednats.Start(embednats.Options{Dir: filepath.Join(dir, "nats"), NoListen: true})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	nc, err := srv.Connect()
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		log.Fatal(err)
	}
	ack, err := js.Publish(ctx, "orders.new", []byte(`{"id":1}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ack.Stream, ack.Sequence)
	// Output:
	// ORDERS 1
}
