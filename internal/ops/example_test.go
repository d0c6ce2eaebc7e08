package ops_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/internal/ops"
)

// Example wires the operations endpoints to a node: a sampler whose one
// goroutine the caller owns, and the handler.
func Example() {
	dir, _ := os.MkdirTemp("", "sluice-ops-example")
	defer os.RemoveAll(dir)
	srv, err := embednats.Start(embednats.Options{Dir: dir + "/nats"})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	node, err := aggregator.New(aggregator.Options{Node: "edge-1", Dir: dir + "/spool", Conn: nc})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	sampler, err := ops.NewSampler(node, ops.SamplerOptions{Name: "edge-1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sampler.Run(ctx) }()
	defer func() { cancel(); <-done }()

	h, err := ops.NewHandler(ops.Sources{Node: node}, ops.Options{Sampler: sampler})
	if err != nil {
		log.Fatal(err)
	}
	web := httptest.NewServer(h)
	defer web.Close()

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(web.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("GET %s: %d %s\n", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	lanes := sampler.Status().Classes
	fmt.Println("lanes:", len(lanes), lanes[0].Name, "first")
	// Output:
	// GET /healthz: 200 ok
	// GET /readyz: 200 ready
	// lanes: 4 critical first
}
