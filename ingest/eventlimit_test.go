package ingest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/natstest"
)

// TestEventLimitOnePerDoor: an event is bounded by the limit of the door
// it came in by, and by that one only. The pipeline's MaxEventBytes
// bounds HTTP events, and the node does not check them again against its
// own (smaller) MaxEventBytes, which bounds only direct Node.Ingest calls.
func TestEventLimitOnePerDoor(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	node, err := aggregator.New(aggregator.Options{Node: "limits", Dir: t.TempDir(), Conn: nc, MaxEventBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	h, err := ingest.NewHandler(node, ingest.Options{Node: "limits", MaxEventBytes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(h)
	defer web.Close()

	mid := `{"pad":"` + strings.Repeat("x", 1000) + `"}` // over the node's limit, under the pipeline's
	big := `{"pad":"` + strings.Repeat("x", 3000) + `"}` // over both
	for _, tc := range []struct {
		body string
		want int
	}{{mid, http.StatusOK}, {big, http.StatusBadRequest}} { // 400: its only line rejected
		res, err := http.Post(web.URL+"/v1/events", "application/x-ndjson", strings.NewReader(tc.body+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		ans, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want || tc.body == big && !strings.Contains(string(ans), "limit 2000") {
			t.Errorf("POST of a %d-byte event: %s %s, want %d (by the pipeline's limit)", len(tc.body), res.Status, ans, tc.want)
		}
	}
	if st := node.Stats().Classes["ingest"]; st.Ingested != 1 || st.IngestedBytes <= uint64(len(mid)) {
		t.Errorf("node took %d events of %d bytes, want the stamped %d-byte one", st.Ingested, st.IngestedBytes, len(mid))
	}
	if err := node.Ingest(context.Background(), "ingest", []byte(mid)); !errors.Is(err, aggregator.ErrTooLarge) {
		t.Errorf("Node.Ingest of a %d-byte event: %v, want ErrTooLarge (its own limit)", len(mid), err)
	}
}
