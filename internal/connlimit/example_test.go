package connlimit_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/internal/connlimit"
)

// Wiring with http.Server: Serve the Listener and give it ConnState, so
// it knows which keep-alive connections are idle and may be evicted.
func Example() {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := connlimit.New(inner, connlimit.Options{
		Max:        1000, // 0: derived from RLIMIT_NOFILE
		PerIP:      64,
		RejectHTTP: true, // plain HTTP: refusals get a 503 or 429
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}),
		ConnState:         ln.ConnState,
		ReadHeaderTimeout: 5 * time.Second, // bounds silent connections
		IdleTimeout:       time.Minute,
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s := ln.Stats()
	fmt.Println(resp.Status, s.Max, s.Accepted, s.Refused)
	// Output: 200 OK 1000 1 0
}
