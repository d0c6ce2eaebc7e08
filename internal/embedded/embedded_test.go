package embedded_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/embedded"
)

// TestRestartKeepsStream starts a server, stores a message in a stream,
// restarts the server on the same directory and finds the message again.
func TestRestartKeepsStream(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s, err := embedded.Start(embedded.Options{Dir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
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
	if err := embedded.Shutdown(ctx, s); err != nil {
		t.Fatal(err)
	}

	s = embedded.StartTestIn(t, dir)
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

func TestStartErrors(t *testing.T) {
	if _, err := embedded.Start(embedded.Options{}); err == nil {
		t.Error("no error without Dir")
	}
	s := embedded.StartTest(t)
	// The same port twice: the second server cannot listen.
	port := s.Addr().(*net.TCPAddr).Port
	if _, err := embedded.Start(embedded.Options{Dir: t.TempDir(), Port: port, ReadyTimeout: 2 * time.Second}); err == nil {
		t.Error("second server on a used port started")
	}
}
