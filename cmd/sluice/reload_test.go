package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/internal/natstest"
)

// TestReloadUnderLoad rewrites the config file while producers post: a
// new write key and a new ceiling apply without a restart, by POST
// /-/reload on the admin socket and by SIGHUP, an invalid file and a
// change that needs a restart are refused with the old config kept, and
// every acknowledged event reaches the stream once.
func TestReloadUnderLoad(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(socketDir(t), "admin.sock")
	base := "admin:\n  listen: unix:" + sock + "\ningest:\n  keys:\n    - {key: ${SLUICE_TEST_KEY_A}, source: a}\n"
	t.Setenv("SLUICE_TEST_KEY_A", "key-a")
	write(base)
	addr, stop := startNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	admin := adminClient(&net.UnixAddr{Net: "unix", Name: sock})

	client := &http.Client{Timeout: 10 * time.Second}
	send := func(key string, body []byte) (int, postResult) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/events", bytes.NewReader(body))
		req.Header.Set("X-Sluice-Key", key)
		res, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return 0, postResult{}
		}
		defer res.Body.Close()
		var r postResult
		json.NewDecoder(res.Body).Decode(&r)
		return res.StatusCode, r
	}
	reload := func() (int, string) {
		res, err := admin.Post("http://sluice-admin/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	// Producers post with key a throughout.
	var mu sync.Mutex
	want := map[int]bool{}
	var next atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				first := int(next.Add(20)) - 20
				if status, r := send("key-a", events(first, 20)); status == 200 && r.Accepted == 20 {
					mu.Lock()
					for i := first; i < first+20; i++ {
						want[i] = true
					}
					mu.Unlock()
				} else if status != 200 {
					t.Errorf("post under reloads: %d %+v", status, r)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)

	if status, _ := send("key-b", events(1_000_000, 1)); status != 401 {
		t.Fatalf("key b before the reload: %d", status)
	}
	write(base + "    - {key: key-b, source: b}\nclasses:\n  - name: critical\n  - name: ingest\n    ceil: 5MiB/s\n  - name: replication\n  - name: backfill\n")
	if res, err := client.Post("http://"+addr+"/-/reload", "", nil); err != nil || res.StatusCode != 404 {
		t.Fatalf("reload on the ingest listener: %v %v; want 404", res, err)
	} else {
		res.Body.Close()
	}
	if status, body := reload(); status != 200 {
		t.Fatalf("reload: %d %s", status, body)
	}
	if status, r := send("key-b", events(2_000_000, 1)); status != 200 {
		t.Errorf("key b after the reload: %d %+v", status, r)
	} else {
		mu.Lock()
		want[2_000_000] = true
		mu.Unlock()
	}
	time.Sleep(200 * time.Millisecond)

	for _, tc := range []struct{ file, want string }{
		{"ingest:\n  keys: [{key: x}]\n  colour: red\n", "field colour not found"},
		{"subject: elsewhere\n" + base, "changed keys need a restart: [subject]"},
		{base[:strings.Index(base, "ingest:")] + "classes:\n  - name: ingest\n    compression: best\n", "needs a restart"},
		{"admin:\n  listen: unix:" + sock + ".2\n" + base[strings.Index(base, "ingest:"):], "changed keys need a restart: [admin]"},
	} {
		write(tc.file)
		if status, body := reload(); status != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("reload of %q: %d %s, want 400 with %q", tc.file, status, body, tc.want)
		}
	}
	if status, _ := send("key-b", events(3_000_000, 1)); status != 200 {
		t.Errorf("key b after refused reloads: %d (the good config must stay)", status)
	} else {
		mu.Lock()
		want[3_000_000] = true
		mu.Unlock()
	}

	// SIGHUP does the same.
	write(base + "    - {key: key-c, source: c}\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hangGuard)
	for {
		status, _ := send("key-c", events(4_000_000, 1))
		if status == 200 {
			mu.Lock()
			want[4_000_000] = true
			mu.Unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: key c not accepted %v after SIGHUP: %d", hangGuard, status)
		}
		time.Sleep(20 * time.Millisecond)
	}

	close(done)
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, _ := streamIDs(t, srv.ClientURL(), "SLUICE")
	checkExactlyOnce(t, got, want)
	if len(want) < 100 {
		t.Errorf("only %d events acknowledged under load", len(want))
	}
}

// TestRunHTTPS: with tls in the config, sluice run serves ingest over
// HTTPS only.
func TestRunHTTPS(t *testing.T) {
	srv := natstest.Start(t)
	ca := newTestCA(t, "run-ca")
	cert := ca.issue("127.0.0.1", true)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("tls:\n  cert_file: "+cert.certFile+"\n  key_file: "+cert.keyFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, stop := startNode(t, "--config", cfg, "--upstream", srv.ClientURL(), "--data-dir", filepath.Join(dir, "data"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	res, err := client.Post("https://"+addr+"/v1/events", "application/x-ndjson", bytes.NewReader(events(0, 3)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), `"accepted":3`) {
		t.Fatalf("https post: %d %s", res.StatusCode, b)
	}
	if res, err := http.Post("http://"+addr+"/v1/events", "application/x-ndjson", bytes.NewReader(events(3, 1))); err == nil && res.StatusCode == 200 {
		t.Errorf("plain http accepted on a TLS listener")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got, _ := streamIDs(t, srv.ClientURL(), "SLUICE")
	checkExactlyOnce(t, got, map[int]bool{0: true, 1: true, 2: true})
}

// TestDrain503: once SIGTERM (here: the context) stops intake, producers
// get 503 with Retry-After while the spool drains, and /readyz fails; the
// drain ends when what was acknowledged is delivered, and the refused
// event is not. Each state is waited for with the hang guard, never timed:
// the upstream answers only once the test has seen the 503s, so the drain
// cannot end first however slow the machine (its timeout, far above, is
// the hang guard: the drain's timeout itself has tests of its own).
func TestDrain503(t *testing.T) {
	// An upstream that never answers until the test says so: the drain
	// cannot finish before.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	addr, stop := startNode(t, "--upstream", "nats://"+ln.Addr().String(), "--data-dir", t.TempDir(), "--drain-timeout", hangGuard.String())
	client := &http.Client{Timeout: hangGuard}
	if status, _, err := post(t.Context(), client, addr, "ingest", events(0, 5)); err != nil || status != 200 {
		t.Fatalf("before the stop: %d %v", status, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The stop reaches the node some time after the goroutine starts: an
	// event may still be accepted before it. Each attempt carries its own
	// id; what must hold is that the first 503 is never followed by a 200,
	// and that every event answered 200 is delivered.
	accepted := map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true}
	refused := -1
	deadline := time.Now().Add(hangGuard)
	for id := 10; ; id++ {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/events", bytes.NewReader(events(id, 1)))
		res, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 503 {
				if ra := res.Header.Get("Retry-After"); ra == "" {
					t.Error("503 without Retry-After")
				}
				refused = id
				break
			}
			if res.StatusCode == 200 {
				accepted[id] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: no 503 %v after the stop: %v", hangGuard, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for id := refused + 1; id < refused+4; id++ {
		res, err := client.Post("http://"+addr+"/v1/events", "application/x-ndjson", bytes.NewReader(events(id, 1)))
		if err != nil {
			continue
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 503 {
			t.Errorf("event %d answered %d after a 503: the drain reopened intake", id, res.StatusCode)
		}
	}
	if res, err := client.Get("http://" + addr + "/readyz"); err != nil || res.StatusCode != 503 {
		t.Errorf("readyz while draining: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	select {
	case err := <-stopped:
		t.Fatalf("the drain ended before the upstream answered: %v", err)
	default:
	}
	// The upstream comes: the drain delivers the five events and ends.
	ln.Close()
	srv := natstest.StartWith(t, embednats.Options{Dir: t.TempDir(), Port: port})
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangGuard + time.Minute):
		t.Fatalf("hang guard: sluice run still draining %v after the upstream came", hangGuard+time.Minute)
	}
	got, _ := streamIDs(t, srv.ClientURL(), "SLUICE")
	checkExactlyOnce(t, got, accepted)
	if got[refused] != 0 {
		t.Errorf("the event refused with 503 is in the stream %d times", got[refused])
	}
}
