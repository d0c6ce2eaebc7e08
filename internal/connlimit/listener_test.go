package connlimit

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// At the limit with every connection serving a request, nothing can be
// evicted: a new connection gets a 503 with Retry-After, whether it has
// sent its request yet or not, and the requests in flight finish.
func TestRefuseAtLimitWhenAllActive(t *testing.T) {
	b := newBlocker()
	l, addr := serve(t, Options{Max: 2, RejectHTTP: true, EvictAfter: time.Nanosecond}, b)

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + addr + "/block")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("blocked request: %d", resp.StatusCode)
			}
		}()
	}
	<-b.entered
	<-b.entered

	// A client that sends its request gets the refusal as the answer, also
	// with a body it is still sending (no reset).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: patience}
	for _, body := range []io.Reader{nil, bytes.NewReader(make([]byte, 4<<20))} {
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("refused client: %v (want a 503, not an error)", err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantRefusal(t, reply{resp, string(got)}, http.StatusServiceUnavailable)
	}

	// A connection that sends nothing gets the refusal unasked, after a
	// while, and a clean close.
	c := dial(t, addr, "")
	br := bufio.NewReader(c)
	wantRefusal(t, read(t, br), http.StatusServiceUnavailable)
	wantEOF(t, br)

	close(b.release)
	wg.Wait()
	s := l.Stats()
	if s.Refused != 3 || s.RefusedPerIP != 0 || s.Evicted != 0 || s.Accepted != 5 {
		t.Errorf("stats %+v: want 3 refused of 5 accepted, none evicted", s)
	}
	eventually(t, "refusals done", func() bool { return l.Stats().Refusing == 0 })
}

// Without RejectHTTP a refused connection is closed cleanly, without a
// word and without a reset.
func TestRefuseSilentlyWithoutRejectHTTP(t *testing.T) {
	b := newBlocker()
	l, addr := serve(t, Options{Max: 1}, b)
	first := dial(t, addr, "")
	eventually(t, "first admitted", func() bool { return l.Stats().Open == 1 })

	wantEOF(t, bufio.NewReader(dial(t, addr, "")))
	if s := l.Stats(); s.Refused != 1 {
		t.Errorf("refused %d, want 1", s.Refused)
	}
	wantOK(t, get(t, first, bufio.NewReader(first)))
}

// At the limit, the connection idle the longest is closed (cleanly) to
// make room for a new client, and the others keep working.
func TestEvictOldestIdleForNewClient(t *testing.T) {
	l, addr := serve(t, Options{Max: 2, RejectHTTP: true, EvictAfter: time.Nanosecond}, newBlocker())

	a := dial(t, addr, "")
	abr := bufio.NewReader(a)
	wantOK(t, get(t, a, abr))
	eventually(t, "a idle", func() bool { return l.Stats().Idle == 1 })
	b := dial(t, addr, "")
	bbr := bufio.NewReader(b)
	wantOK(t, get(t, b, bbr))
	eventually(t, "b idle", func() bool { return l.Stats().Idle == 2 })

	c := dial(t, addr, "")
	wantOK(t, get(t, c, bufio.NewReader(c)))

	wantEOF(t, abr) // a, the oldest idle, was closed with a FIN
	wantOK(t, get(t, b, bbr))
	s := l.Stats()
	if s.Evicted != 1 || s.Refused != 0 || s.Open != 2 {
		t.Errorf("stats %+v: want 1 evicted, none refused, 2 open", s)
	}
	if err := l.check(); err != nil {
		t.Error(err)
	}
}

// An idle connection younger than EvictAfter is not evicted: the new
// client is refused and the idle one keeps working.
func TestFreshIdleIsNotEvicted(t *testing.T) {
	l, addr := serve(t, Options{Max: 1, RejectHTTP: true, EvictAfter: time.Hour}, newBlocker())
	a := dial(t, addr, "")
	abr := bufio.NewReader(a)
	wantOK(t, get(t, a, abr))
	eventually(t, "a idle", func() bool { return l.Stats().Idle == 1 })

	b := dial(t, addr, "")
	wantRefusal(t, get(t, b, bufio.NewReader(b)), http.StatusServiceUnavailable)
	wantOK(t, get(t, a, abr))
	if s := l.Stats(); s.Evicted != 0 || s.Refused != 1 {
		t.Errorf("stats %+v: want none evicted, 1 refused", s)
	}
}

// Over its cap a client is refused with a 429 while others are admitted;
// once it has an idle connection, that one makes room for its next.
func TestPerIPCap(t *testing.T) {
	l, addr := serve(t, Options{Max: 10, PerIP: 2, RejectHTTP: true, EvictAfter: time.Nanosecond}, newBlocker())

	a := dial(t, addr, "127.0.0.1")
	dial(t, addr, "127.0.0.1") // silent: never idle, never evicted
	eventually(t, "two admitted", func() bool { return l.Stats().Open == 2 })

	c := dial(t, addr, "127.0.0.1")
	wantRefusal(t, get(t, c, bufio.NewReader(c)), http.StatusTooManyRequests)
	if s := l.Stats(); s.Refused != 1 || s.RefusedPerIP != 1 {
		t.Fatalf("stats %+v: want 1 refused per IP", s)
	}

	// Another client is not affected (Linux routes all of 127/8 to lo).
	var other net.Conn
	if d, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: patience}).Dial("tcp", addr); err == nil {
		other = d
		t.Cleanup(func() { _ = d.Close() })
		_ = d.SetDeadline(time.Now().Add(patience))
	} else {
		t.Logf("no second loopback address (%v): skipping the other client", err)
	}
	var obr *bufio.Reader
	if other != nil {
		obr = bufio.NewReader(other)
		wantOK(t, get(t, other, obr))
		eventually(t, "other idle", func() bool { return l.Stats().Idle == 1 })
	}
	idle := l.Stats().Idle

	abr := bufio.NewReader(a)
	wantOK(t, get(t, a, abr))
	eventually(t, "a idle", func() bool { return l.Stats().Idle == idle+1 })

	e := dial(t, addr, "127.0.0.1")
	wantOK(t, get(t, e, bufio.NewReader(e)))
	wantEOF(t, abr) // its own idle conn made room
	if other != nil {
		wantOK(t, get(t, other, obr)) // the other client's idle conn, older, was spared
	}
	if s := l.Stats(); s.Evicted != 1 || s.RefusedPerIP != 1 {
		t.Errorf("stats %+v: want 1 evicted, 1 refused per IP", s)
	}
	if err := l.check(); err != nil {
		t.Error(err)
	}
}

// acceptLoop accepts from l until it fails, sending the conns on the
// returned channel.
func acceptLoop(t *testing.T, l *Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	return ch
}

// A slot is held until the conn's first Close and freed exactly once.
func TestSlotFreedOnCloseOnce(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(inner, Options{Max: 1, PerIP: 1, RejectHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	conns := acceptLoop(t, l)
	addr := inner.Addr().String()

	dial(t, addr, "")
	s1 := <-conns
	if s := l.Stats(); s.Open != 1 {
		t.Fatalf("open %d, want 1", s.Open)
	}
	c2 := dial(t, addr, "")
	wantRefusal(t, get(t, c2, bufio.NewReader(c2)), http.StatusTooManyRequests) // per IP first

	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if s := l.Stats(); s.Open != 0 {
		t.Fatalf("open %d after Close, want 0", s.Open)
	}
	if err := l.check(); err != nil {
		t.Fatal(err)
	}

	dial(t, addr, "")
	s3 := <-conns
	if s := l.Stats(); s.Open != 1 || s.Accepted != 3 || s.Refused != 1 {
		t.Fatalf("stats %+v: want 1 open, 3 accepted, 1 refused", s)
	}
	_ = s3.Close()
	_ = s1.Close() // a stale Close frees nothing more
	if s := l.Stats(); s.Open != 0 {
		t.Fatalf("open %d, want 0", s.Open)
	}
	if err := l.check(); err != nil {
		t.Fatal(err)
	}
}

// A hijacked connection keeps its slot until the handler closes it.
func TestHijackedConnHoldsSlot(t *testing.T) {
	hijacked := make(chan net.Conn, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		hijacked <- c
	})
	l, addr := serve(t, Options{Max: 4}, h)
	c := dial(t, addr, "")
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: sluice\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	hc := <-hijacked
	if l.find(hc) == nil {
		t.Fatal("Hijack did not return the Listener's conn")
	}
	if s := l.Stats(); s.Open != 1 || s.Idle != 0 {
		t.Fatalf("stats %+v: want 1 open, 0 idle while hijacked", s)
	}
	_ = hc.Close()
	_ = hc.Close()
	if s := l.Stats(); s.Open != 0 {
		t.Fatalf("open %d after closing the hijacked conn, want 0", s.Open)
	}
}

// Behind tls.NewListener (http.Server.ServeTLS), ConnState still finds
// the Listener's conns inside *tls.Conn, for HTTP/1.1 and HTTP/2, so idle
// ones are evicted for a new client.
func TestEvictThroughTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, h2 := range []bool{false, true} {
		name := "http1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l, err := New(inner, Options{Max: 1, EvictAfter: time.Nanosecond})
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: newBlocker(), ConnState: l.ConnState,
				TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
			served := make(chan error, 1)
			go func() { served <- srv.ServeTLS(l, "", "") }()
			t.Cleanup(func() {
				_ = srv.Close()
				<-served
				eventually(t, "every slot freed", func() bool { return l.Stats().Open == 0 })
				if err := l.check(); err != nil {
					t.Error(err)
				}
			})
			client := func() *http.Client {
				return &http.Client{Timeout: patience, Transport: &http.Transport{
					TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}}
			}
			url := "https://" + inner.Addr().String() + "/"
			for i, c := range []*http.Client{client(), client()} {
				resp, err := c.Get(url)
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				wantOK(t, reply{resp, string(body)})
				if got := resp.ProtoMajor == 2; got != h2 {
					t.Fatalf("client %d spoke %s", i, resp.Proto)
				}
				eventually(t, "idle", func() bool { return l.Stats().Idle == 1 })
				defer c.CloseIdleConnections()
			}
			if s := l.Stats(); s.Evicted != 1 || s.Refused != 0 {
				t.Errorf("stats %+v: want 1 evicted, none refused", s)
			}
		})
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "connlimit test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// Many clients churning against a small limit: every request gets a 200 or
// a refusal with Retry-After, never an error; the limit is never exceeded;
// every slot comes back.
func TestChurn(t *testing.T) {
	const max = 4
	var l *Listener
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open := l.Stats().Open; open > max {
			t.Errorf("open %d > max %d", open, max)
		}
		_, _ = io.WriteString(w, "ok")
	})
	l, addr := serve(t, Options{Max: max, PerIP: 3, RejectHTTP: true, EvictAfter: time.Nanosecond}, h)
	// Two clients when 127.0.0.2 works (Linux), so that both limits bite.
	froms := []string{"127.0.0.1"}
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).Dial("tcp", addr); err == nil {
		_ = c.Close()
		froms = append(froms, "127.0.0.2")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	var errs []error
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(froms[i%len(froms)])}}
			tr := &http.Transport{DisableKeepAlives: i%4 == 0, DialContext: d.DialContext}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: patience}
			for range 25 {
				resp, err := c.Get("http://" + addr + "/")
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					codes[resp.StatusCode]++
					if resp.StatusCode != http.StatusOK && resp.Header.Get("Retry-After") != "1" {
						t.Errorf("%d without Retry-After", resp.StatusCode)
					}
				}
				mu.Unlock()
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	for code := range codes {
		switch code {
		case http.StatusOK, http.StatusServiceUnavailable, http.StatusTooManyRequests:
		default:
			t.Errorf("status %d", code)
		}
	}
	s := l.Stats()
	t.Logf("answers %v, stats %+v", codes, s)
	// Evicting a reused connection is retried by Go's client (GET is
	// idempotent); refusals answer requests: so no request fails.
	for i, err := range errs {
		if i < 5 {
			t.Errorf("client error %d of %d: %v", i+1, len(errs), err)
		}
	}
	if codes[http.StatusOK] == 0 {
		t.Error("nothing served")
	}
	if err := l.check(); err != nil {
		t.Error(err)
	}
}

// Past maxRefusing waiting refusals, a refused connection is answered at
// once; Close closes the waiting ones and waits for their goroutines.
func TestRefusalOverflowAndClose(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(inner, Options{Max: 1, RejectHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	l.maxRefusing = 1
	conns := acceptLoop(t, l)
	addr := inner.Addr().String()
	dial(t, addr, "")
	<-conns // holds the only slot

	waiting := dial(t, addr, "") // silent: its refusal waits for a request
	eventually(t, "a waiting refusal", func() bool { return l.Stats().Refusing == 1 })
	unasked := dial(t, addr, "") // answered at once, though it sent nothing
	wantRefusal(t, read(t, bufio.NewReader(unasked)), http.StatusServiceUnavailable)
	if s := l.Stats(); s.Refusing != 1 || s.Refused != 2 {
		t.Fatalf("stats %+v: want 1 refusing, 2 refused", s)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Refusing != 0 {
		t.Fatalf("refusing %d after Close, want 0", s.Refusing)
	}
	if n, err := waiting.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("waiting refusal: read %d, %v; want it closed", n, err)
	}
}
