package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/spool"
)

// TestDiskFullHTTP runs `sluice run` with its data_dir on an 8 MiB tmpfs and
// an upstream that is down (so nothing drains), posts events until the
// filesystem is full, then frees space. A full disk must be an error the
// producer sees and retries (never a silent drop, never a 200 for events
// not kept): 503 with Retry-After, saying the spool's disk is full without
// naming files; /readyz must fail meanwhile. Intake and readiness must
// resume once space returns, and every event answered 200 must be in the
// spool, undamaged.
func TestDiskFullHTTP(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=8m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs for a real full filesystem: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{1}, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	// An upstream that refuses connections: a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "nats://" + ln.Addr().String()
	ln.Close()
	dataDir := filepath.Join(mnt, "data")
	addr, stop := startNode(t, "--upstream", down, "--data-dir", dataDir, "--drain-timeout", "100ms", "--node", "full")

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: time.Minute}
	accepted, id := 0, 0
	var status int
	var res postResult
	for {
		if id > 50000 {
			t.Fatalf("%d events accepted and the disk never filled", accepted)
		}
		status, res, err = post(ctx, client, addr, "ingest", bigEvents(id, 50))
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK {
			break
		}
		accepted += res.Accepted
		id += 50
	}
	t.Logf("after %d events accepted: HTTP %d %q", accepted, status, res.Error)
	if status != http.StatusServiceUnavailable || res.Accepted != 0 || res.Error != "spool disk full" {
		t.Fatalf("full disk: HTTP %d %+v; want 503, spool disk full, nothing accepted", status, res)
	}
	// The same again, for the headers and the raw body.
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/v1/events?class=ingest", bytes.NewReader(bigEvents(id, 50)))
	if err != nil {
		t.Fatal(err)
	}
	hres, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hres.Body)
	hres.Body.Close()
	if want := `{"error":"spool disk full","accepted":0,"rejected":[]}` + "\n"; hres.StatusCode != http.StatusServiceUnavailable ||
		hres.Header.Get("Retry-After") != "5" || string(body) != want {
		t.Fatalf("full disk: HTTP %d, Retry-After %q, body %q; want 503, 5, %q",
			hres.StatusCode, hres.Header.Get("Retry-After"), body, want)
	}
	readyz := func() (int, string) {
		res, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "disk full") || strings.Contains(body, mnt) {
		t.Fatalf("/readyz with the disk full: %d %q", code, body)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		status, res, err := post(ctx, client, addr, "ingest", bigEvents(id, 50))
		if err != nil || status != http.StatusOK || res.Accepted != 50 {
			t.Fatalf("post %d after space returned: HTTP %d %+v %v", i, status, res, err)
		}
		accepted += 50
		id += 50
	}
	// Ready again once space has returned (how soon is not checked here:
	// the hang guard only turns a hang into a failure).
	for deadline := time.Now().Add(hangGuard); ; time.Sleep(100 * time.Millisecond) {
		code, body := readyz()
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: /readyz %v after space returned: %d %q", hangGuard, code, body)
		}
	}
	if err := stop(); err != nil {
		t.Logf("sluice run: %v", err) // the drain cannot finish: upstream is down
	}

	rep, err := spool.Check(filepath.Join(dataDir, "spool"))
	if err != nil || !rep.OK() {
		t.Fatalf("Check: %v %+v", err, rep)
	}
	s, err := spool.Open(filepath.Join(dataDir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var all bytes.Buffer
	for next := uint64(0); ; {
		n := 0
		next, err = s.Read("ingest", next, 5000, 0, func(e spool.Entry) error {
			all.Write(e.Data)
			all.WriteByte('\n')
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	ids := countIDs(t, all.Bytes())
	if len(ids) != accepted || s.Stats().Quarantined != 0 {
		t.Fatalf("spool holds %d distinct ids, %d accepted; quarantined %d", len(ids), accepted, s.Stats().Quarantined)
	}
	for i, n := range ids {
		if n != 1 || i >= id {
			t.Fatalf("id %d spooled %d times", i, n)
		}
	}
}

// bigEvents returns n NDJSON events of about 1 KB with ids first..first+n-1.
func bigEvents(first, n int) []byte {
	var b bytes.Buffer
	pad := strings.Repeat("p", 1000)
	for i := range n {
		fmt.Fprintf(&b, `{"id":%d,"type":"track","pad":%q}`+"\n", first+i, pad)
	}
	return b.Bytes()
}
