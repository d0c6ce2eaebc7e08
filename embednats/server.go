package embednats

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is a running in-process NATS server with JetStream.
type Server struct {
	ns   *server.Server
	url  string   // "" with NoListen
	addr net.Addr // nil with NoListen
	once sync.Once
	done chan struct{} // closed once the server has stopped
}

// Start starts a server storing in opts.Dir and returns once it accepts
// client connections. The caller stops it with Shutdown or Close.
func Start(opts Options) (*Server, error) {
	switch {
	case opts.Dir == "":
		return nil, fmt.Errorf("%w: Dir is required", ErrInvalidOptions)
	case opts.Port < 0 || opts.Port > 65535:
		return nil, fmt.Errorf("%w: Port %d: want 0 (a free port) to 65535", ErrInvalidOptions, opts.Port)
	case opts.MaxPayload < 0:
		return nil, fmt.Errorf("%w: MaxPayload %d is negative", ErrInvalidOptions, opts.MaxPayload)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ServerName == "" {
		opts.ServerName = "sluice-embedded"
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("embednats: store: %w", err)
	}
	port := opts.Port
	if port == 0 {
		port = -1 // nats-server's "any free port"; its 0 means 4222
	}
	so := &server.Options{
		ServerName: opts.ServerName,
		Host:       opts.Host,
		Port:       port,
		DontListen: opts.NoListen,
		JetStream:  true,
		StoreDir:   opts.Dir,
		SyncAlways: opts.SyncAlways,
		NoSigs:     true, // the process owns signal handling
		NoLog:      opts.Logger == nil,
		MaxPayload: opts.MaxPayload,
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	if opts.Logger != nil {
		ns.SetLoggerV2(slogAdapter{opts.Logger}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(opts.ReadyTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		where := "in-process"
		if !opts.NoListen {
			where = "on " + net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
		}
		return nil, fmt.Errorf("%w: %s after %v", ErrNotReady, where, opts.ReadyTimeout)
	}
	srv := &Server{ns: ns, done: make(chan struct{})}
	if !opts.NoListen {
		srv.url, srv.addr = ns.ClientURL(), ns.Addr()
	}
	return srv, nil
}

// ClientURL is the URL clients connect to, such as nats://127.0.0.1:4222;
// "" with Options.NoListen.
func (s *Server) ClientURL() string { return s.url }

// Addr is the client listener's address; nil with Options.NoListen.
func (s *Server) Addr() net.Addr { return s.addr }

// Connect connects to the server in-process, without a socket, with the
// given options added. The connection is the caller's to close; it ends
// when the server stops.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append(opts, nats.InProcessServer(s.ns))...)
}

// Shutdown stops the server: it closes its clients' connections and
// listener, flushes JetStream's store, and waits for every goroutine of
// the server, or for ctx (then it returns ctx's error and the server goes
// on stopping). It is idempotent and safe to call concurrently.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		go func() {
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
			close(s.done)
		}()
	})
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("embednats: shutdown: %w", ctx.Err())
	}
}

// Close is Shutdown with a deadline of DefaultShutdownTimeout.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}

// slogAdapter is a server.Logger writing to an slog.Logger.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
