// Package embedded runs an in-process nats-server with JetStream, so that
// `sluice run` works on a fresh machine with nothing installed and tests
// exercise a real server.
//
// Only the binary (cmd/sluice) and tests import this package: the library
// packages never depend on nats-server.
//
// # Caveats
//
// A JetStream ack is not an fsync. By default the server syncs its file
// store every two minutes, so a power loss (not a process crash) can lose
// messages it acknowledged, and the sluice spool has already deleted them.
// Set Options.SyncAlways where that matters more than throughput.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultReadyTimeout is how long Start waits for the server to accept
// connections when Options.ReadyTimeout is zero.
const DefaultReadyTimeout = 10 * time.Second

// Options configure an embedded server. Dir is required; the zero value of
// every other field is a working default.
type Options struct {
	// Dir is where JetStream stores its streams. Required.
	Dir string
	// Host is the client listen host. Default "127.0.0.1".
	Host string
	// Port is the client listen port. Default 4222; -1 picks a free port.
	Port int
	// ServerName names the server. Default "sluice-embedded".
	ServerName string
	// SyncAlways makes JetStream fsync every write before acking it, at a
	// large cost in throughput. Default false: the server's own default
	// (fsync every 2 minutes).
	SyncAlways bool
	// MaxPayload is the largest message the server accepts, in bytes.
	// Default 0: the server's default, 1 MB.
	MaxPayload int32
	// ReadyTimeout bounds the wait for the server to accept connections.
	// Default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines (notices at Info, warnings at
	// Warn, errors at Error; debug and trace are off). Nil discards.
	Logger *slog.Logger
}

// Start starts a nats-server with JetStream storing in opts.Dir and returns
// once it accepts client connections. Its URL is (*server.Server).ClientURL.
// The caller stops it with Shutdown and WaitForShutdown.
func Start(opts Options) (*server.Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("embedded: Dir is required")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = 4222
	}
	if opts.ServerName == "" {
		opts.ServerName = "sluice-embedded"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	so := &server.Options{
		ServerName: opts.ServerName,
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   opts.Dir,
		SyncAlways: opts.SyncAlways,
		NoSigs:     true, // the binary owns signal handling
		NoLog:      opts.Logger == nil,
		MaxPayload: opts.MaxPayload,
	}
	s, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if opts.Logger != nil {
		s.SetLoggerV2(slogAdapter{opts.Logger}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(opts.ReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded: server on %s not ready after %v",
			net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)), opts.ReadyTimeout)
	}
	return s, nil
}

// Shutdown stops s and waits for it, or for ctx.
func Shutdown(ctx context.Context, s *server.Server) error {
	done := make(chan struct{})
	go func() {
		s.Shutdown()
		s.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("embedded: shutdown: %w", ctx.Err())
	}
}

// slogAdapter is a server.Logger writing to an slog.Logger.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
