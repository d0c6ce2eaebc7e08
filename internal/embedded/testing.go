package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartTest starts a server for a test on a free loopback port with its
// store in t.TempDir(), and shuts it down in t.Cleanup.
func StartTest(t testing.TB) *server.Server {
	t.Helper()
	return StartTestIn(t, t.TempDir())
}

// StartTestIn is StartTest with the store in dir, so a test can restart a
// server on the same data.
func StartTestIn(t testing.TB, dir string) *server.Server {
	t.Helper()
	s, err := Start(Options{Dir: dir, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := Shutdown(ctx, s); err != nil {
			t.Error(err)
		}
	})
	return s
}
