package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/wire"
)

// TestReloadReachesNATS runs `sluice run` with a NATS subject to ingest:
// its events are stamped as HTTP ones are, and a reload that adds a route
// routes the next NATS event by it, as it does HTTP events.
func TestReloadReachesNATS(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	sock := filepath.Join(socketDir(t), "admin.sock")
	base := "admin:\n  listen: unix:" + sock + "\nnats_ingest:\n  subscriptions:\n    - subject: in.>\n"
	if err := os.WriteFile(cfg, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stop := startNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"), "--node", "edge-9")
	admin := adminClient(&net.UnixAddr{Net: "unix", Name: sock})
	pub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// shipped waits for the upstream stream to hold n batches.
	shipped := func(n uint64) {
		t.Helper()
		for {
			_, info, closeConn := openStream(ctx, t, srv.ClientURL(), "SLUICE")
			closeConn()
			if info.State.Msgs >= n {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("the stream holds %d batches, want %d", info.State.Msgs, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := pub.Publish("in.a", []byte(`{"id":"n1","type":"alert"}`)); err != nil {
		t.Fatal(err)
	}
	pub.Flush()
	shipped(1)

	routed := base + "ingest:\n  routes:\n    - {field: type, equals: [alert], class: critical}\n"
	if err := os.WriteFile(cfg, []byte(routed), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := admin.Post("http://sluice-admin/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("reload: %s %s", res.Status, body)
	}
	pub.Publish("in.a", []byte(`{"id":"n2","type":"alert"}`))
	pub.Flush()
	shipped(2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	s, info, closeConn := openStream(ctx, t, srv.ClientURL(), "SLUICE")
	defer closeConn()
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(streamDictionaries(t, srv.ClientURL(), "SLUICE")))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	got := map[string]string{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := dec.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range b.Events {
			var e struct {
				ID         string
				SluiceNode string `json:"sluiceNode"`
				ReceivedAt string `json:"receivedAt"`
			}
			if err := json.Unmarshal(ev, &e); err != nil {
				t.Fatal(err)
			}
			if e.SluiceNode != "edge-9" || !strings.HasSuffix(e.ReceivedAt, "Z") {
				t.Errorf("event %s not stamped: %s", e.ID, ev)
			}
			got[e.ID] = b.Class
		}
	}
	if got["n1"] != "ingest" || got["n2"] != "critical" {
		t.Errorf("classes %v: want n1 in ingest (before the reload), n2 in critical (routed by the reloaded config)", got)
	}
}
