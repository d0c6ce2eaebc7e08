package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/wire"
)

// Example puts the HTTP intake in front of a node: a producer posts
// NDJSON, hears which events are durable (the bad line is refused on its
// own), and the node ships them, stamped with the node's name, to
// JetStream.
func Example() {
	dir, _ := os.MkdirTemp("", "sluice-ingest-example")
	defer os.RemoveAll(dir)
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

	h, err := ingest.NewHandler(node, ingest.Options{Node: "edge-1"})
	if err != nil {
		log.Fatal(err)
	}
	web := httptest.NewServer(h) // a service mounts h on its own mux or server
	defer web.Close()

	body := `{"type":"track","event":"signup"}` + "\n" + `{"type":` + "\n"
	resp, err := http.Post(web.URL+"/v1/events", "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	var ans struct {
		Accepted int `json:"accepted"`
		Rejected []struct {
			Line int `json:"line"`
		} `json:"rejected"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, "accepted", ans.Accepted, "rejected line", ans.Rejected[0].Line)

	// Shutdown drains: it returns once JetStream has acknowledged them.
	if err := node.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
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
	var ev struct {
		Event      string `json:"event"`
		SluiceNode string `json:"sluiceNode"`
		ReceivedAt string `json:"receivedAt"`
	}
	json.Unmarshal(b.Events[0], &ev)
	fmt.Println(b.Class, b.Count, ev.Event, ev.SluiceNode, ev.ReceivedAt != "")
	// Output:
	// 200 accepted 1 rejected line 2
	// ingest 1 signup edge-1 true
}
