package spool_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/sluicehq/sluice/spool"
)

func Example() {
	dir, _ := os.MkdirTemp("", "spool-example")
	defer os.RemoveAll(dir)

	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := context.Background()
	// Producers: Append returns once the events are durable.
	r, err := s.Append(ctx, "ingest", [][]byte{[]byte(`{"e":"view"}`), []byte(`{"e":"click"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended", r)

	// Batcher: read a batch, claim its range before publishing, ack it once
	// upstream acknowledged it.
	var batch spool.Range
	next, err := s.Read("ingest", s.Acked("ingest")+1, 100, 1<<20, func(e spool.Entry) error {
		if batch.First == 0 {
			batch.First = e.Seq
		}
		batch.Last = e.Seq
		fmt.Printf("seq %d: %s\n", e.Seq, e.Data) // e.Data is valid only here
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Claim("ingest", batch); err != nil {
		log.Fatal(err)
	}
	// ... publish the batch ...
	if err := s.Ack("ingest", batch); err != nil {
		log.Fatal(err)
	}
	fmt.Println("next", next, "acked", s.Acked("ingest"), "depth", s.Stats().Classes["ingest"].Depth)
	// Output:
	// appended {1 2}
	// seq 1: {"e":"view"}
	// seq 2: {"e":"click"}
	// next 3 acked 2 depth 0
}
