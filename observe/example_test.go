package observe_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/observe"
)

// Example wires the operations endpoints to a node: a sampler whose one
// goroutine the caller owns, and the handler.
func Example() {
	dir, _ := os.MkdirTemp("", "sluice-observe-example")
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
	defer node.Close()

	sampler, err := observe.NewSampler(node, observe.SamplerOptions{Name: "edge-1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sampler.Run(ctx) }()
	defer func() { cancel(); <-done }()

	h, err := observe.NewHandler(observe.Sources{Node: node}, observe.Options{Sampler: sampler})
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

// ExampleNewCollector registers a node's metrics in a registry of the
// service's own, beside its other metrics.
func ExampleNewCollector() {
	dir, _ := os.MkdirTemp("", "sluice-observe-example")
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
	defer node.Close()
	if err := node.Ingest(context.Background(), "ingest", []byte(`{"type":"page"}`)); err != nil {
		log.Fatal(err)
	}

	col, err := observe.NewCollector(observe.Sources{Node: node})
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "sluice_class_ingested_events_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			fmt.Println(m.GetLabel()[0].GetValue(), m.GetCounter().GetValue())
		}
	}
	// Output:
	// backfill 0
	// critical 0
	// ingest 1
	// replication 0
}
