// Package natstest starts in-process NATS servers with JetStream for
// tests, on a free loopback port, stopped in t.Cleanup. Only tests import
// it: it is the one package of the module that imports testing.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/embednats"
)

// Start starts a server for a test with its store in t.TempDir().
func Start(t testing.TB) *embednats.Server {
	t.Helper()
	return StartWith(t, embednats.Options{Dir: t.TempDir()})
}

// StartIn is Start with the store in dir, so a test can restart a server
// on the same data.
func StartIn(t testing.TB, dir string) *embednats.Server {
	t.Helper()
	return StartWith(t, embednats.Options{Dir: dir})
}

// StartWith starts a server with opts (a free port unless opts.Port says
// otherwise) and shuts it down in t.Cleanup; a test may shut it down
// earlier itself.
func StartWith(t testing.TB, opts embednats.Options) *embednats.Server {
	t.Helper()
	s, err := embednats.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}
