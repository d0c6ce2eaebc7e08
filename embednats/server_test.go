package embednats_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/embednats"
)

// TestRestartKeepsStream stores a message in a stream, restarts the server
// on the same directory (and the same port) and finds the message again.
func TestRestartKeepsStream(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := embednats.Start(embednats.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	port := s.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	s, err = embednats.Start(embednats.Options{Dir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	nc, err = nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "hello" {
		t.Errorf("got %q", m.Data)
	}
}

// TestNoListen: a server without a listener serves in-process clients
// only, and says it has no URL.
func TestNoListen(t *testing.T) {
	s, err := embednats.Start(embednats.Options{Dir: t.TempDir(), NoListen: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.ClientURL() != "" || s.Addr() != nil {
		t.Errorf("NoListen server has URL %q, address %v", s.ClientURL(), s.Addr())
	}
	gone := make(chan struct{}, 1)
	nc, err := s.Connect(nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { gone <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.a", []byte("x"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("publish: %v %+v", err, ack)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select { // the server closes its in-process clients' connections
	case <-gone:
	case <-ctx.Done():
		t.Error("client still connected after Shutdown")
	}
}

func TestShutdownIdempotent(t *testing.T) {
	s, err := embednats.Start(embednats.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- s.Shutdown(ctx) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Error("listener still open after Shutdown")
	}
	// A context that is already done still reports a finished shutdown.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := s.Shutdown(done); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown after stop: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	for _, o := range []embednats.Options{
		{},
		{Dir: t.TempDir(), Port: -1},
		{Dir: t.TempDir(), Port: 70000},
		{Dir: t.TempDir(), MaxPayload: -1},
	} {
		if _, err := embednats.Start(o); !errors.Is(err, embednats.ErrInvalidOptions) {
			t.Errorf("%+v: err %v, want ErrInvalidOptions", o, err)
		}
	}
	s, err := embednats.Start(embednats.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The same port twice: the second server cannot listen.
	port := s.Addr().(*net.TCPAddr).Port
	_, err = embednats.Start(embednats.Options{Dir: t.TempDir(), Port: port, ReadyTimeout: 2 * time.Second})
	if !errors.Is(err, embednats.ErrNotReady) {
		t.Errorf("second server on a used port: err %v, want ErrNotReady", err)
	}
}
