package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/wire"
)

// hangGuard is how long a test waits for a state before it calls the wait
// a hang: far above what the slowest honest run needs (under -race on two
// loaded cores), so that it only turns a hang into a failure. The tests
// check which states are reached, never how fast.
const hangGuard = 2 * time.Minute

// events returns n NDJSON events with ids first..first+n-1.
func events(first, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"id":%d,"type":"track","event":"page_view","props":{"path":"/p/%d","ref":"https://example.com/"}}`+"\n", first+i, i)
	}
	return b.Bytes()
}

type postResult struct {
	Accepted int               `json:"accepted"`
	Dropped  int               `json:"dropped"`
	Rejected []json.RawMessage `json:"rejected"`
	Error    string            `json:"error"`
}

// post sends body to addr's /v1/events and decodes the answer.
func post(ctx context.Context, client *http.Client, addr, class string, body []byte) (int, postResult, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/v1/events?class="+class, bytes.NewReader(body))
	if err != nil {
		return 0, postResult{}, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	res, err := client.Do(req)
	if err != nil {
		return 0, postResult{}, err
	}
	defer res.Body.Close()
	var r postResult
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return res.StatusCode, r, fmt.Errorf("status %d: decode answer: %w", res.StatusCode, err)
	}
	return res.StatusCode, r, nil
}

// countIDs counts the "id" of every NDJSON line.
func countIDs(t testing.TB, ndjson []byte) map[int]int {
	t.Helper()
	ids := map[int]int{}
	for _, line := range bytes.Split(ndjson, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev struct {
			ID *int `json:"id"`
		}
		if err := json.Unmarshal(line, &ev); err != nil || ev.ID == nil {
			t.Fatalf("line %q: no id (%v)", line, err)
		}
		ids[*ev.ID]++
	}
	return ids
}

// streamIDs reads every message of stream with a direct get, decodes it as
// a batch and counts the ids of its events.
func streamIDs(t testing.TB, url, stream string) (map[int]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, info, closeConn := openStream(ctx, t, url, stream)
	defer closeConn()
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(streamDictionaries(t, url, stream)))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	ids := map[int]int{}
	batches := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get seq %d: %v", seq, err)
		}
		b, err := dec.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		batches++
		for id, n := range countIDs(t, bytes.Join(b.Events, []byte("\n"))) {
			ids[id] += n
		}
	}
	return ids, batches
}

// checkExactlyOnce reports ids of want missing from got or present more
// than once, and any id of got present more than once.
func checkExactlyOnce(t testing.TB, got map[int]int, want map[int]bool) {
	t.Helper()
	var missing, dup []string
	for id := range want {
		if got[id] == 0 {
			missing = append(missing, fmt.Sprint(id))
		}
	}
	for id, n := range got {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%d×%d", id, n))
		}
	}
	if len(missing) > 0 || len(dup) > 0 {
		t.Errorf("%d of %d acknowledged ids missing: %s\n%d ids duplicated: %s",
			len(missing), len(want), head(missing), len(dup), head(dup))
	}
}

func head(s []string) string {
	if len(s) > 20 {
		return strings.Join(s[:20], " ") + " …"
	}
	return strings.Join(s, " ")
}

// openStream connects to url and returns stream, its info, and the close
// of the connection.
// streamDictionaries is the dictionary source of stream's bucket on the
// server at url, over a connection of its own closed with the test: a
// node adopts trained dictionaries once a class has seen enough events,
// and its batches then need them.
func streamDictionaries(t testing.TB, url, stream string) wire.Dictionaries {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return wire.NewStreamDictionaries(js, stream)
}

func openStream(ctx context.Context, t testing.TB, url, stream string) (jetstream.Stream, *jetstream.StreamInfo, func()) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return s, info, nc.Close
}
