package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/connlimit"
	"github.com/sluicehq/sluice/internal/embedded"
	"github.com/sluicehq/sluice/spool"
)

// nodeHooks let tests observe a running node. Nil fields are skipped.
type nodeHooks struct {
	// listening is called with the HTTP address once it accepts connections.
	listening func(net.Addr)
	// adminListening is called with the admin address (admin.listen), if
	// any, before listening.
	adminListening func(net.Addr)
}

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer, hooks *nodeHooks) error {
	if hooks == nil {
		hooks = &nodeHooks{}
	}
	fs := flag.NewFlagSet("sluice run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c nodeConfig
	c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice run [flags]\n\n"+
			"Serves POST /v1/events (NDJSON) and GET /healthz on --listen, makes events durable in\n"+
			"DATA_DIR/spool and ships them to the JetStream stream on --upstream, or on an embedded\n"+
			"NATS server storing in DATA_DIR/nats when --upstream is empty.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	flagged := c // before the file: what a reload starts from
	if err := c.load(fs); err != nil {
		return err
	}
	fsync, _ := spool.ParseFsync(c.Fsync) // validated by load
	if c.Node == "" {
		// The node's name is stamped on events and batch headers alike.
		c.Node = "sluice"
		if h, err := os.Hostname(); err == nil && h != "" {
			c.Node = h
		}
	}
	log, natsLog := newLogger(c.LogFormat, c.LogLevel, stderr)
	r, err := c.resolve()
	if err != nil {
		return err
	}
	if gc := setMemoryLimit(r.ingest.MaxInflightBytes); gc > 0 {
		log.Info("Go memory limit set: the requests' budget plus 32 MiB, at most 80% of the cgroup's (GOMEMLIMIT overrides)", "bytes", gc)
	}
	classes, spoolOpts, iopts := r.classes, r.spool, r.ingest
	iopts.Logger = log

	upstream := c.Upstream
	if upstream == "" {
		host, port, err := splitHostPort(c.NATSListen)
		if err != nil {
			return fmt.Errorf("nats listen address: %w", err)
		}
		if port == 0 {
			port = -1 // any free port, as net.Listen does
		}
		dir := filepath.Join(c.DataDir, "nats")
		srv, err := embedded.Start(embedded.Options{Dir: dir, Host: host, Port: port, Logger: natsLog})
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := embedded.Shutdown(sctx, srv); err != nil {
				log.Warn("embedded nats-server shutdown", "err", err)
			}
			log.Info("embedded nats-server stopped")
		}()
		upstream = srv.ClientURL()
		log.Info("embedded nats-server started", "url", upstream, "store", dir)
	}

	shown := redactURL(upstream)
	nopts := append([]nats.Option{
		nats.Name("sluice " + c.Node),
		nats.MaxReconnects(-1),          // the node outlives any outage of the upstream
		nats.RetryOnFailedConnect(true), // and may start before it
		nats.ReconnectWait(250 * time.Millisecond),
		// No outbound buffer while disconnected: publishes fail at once and
		// the lanes retry them from the spool, which is the buffer.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // our own Close
			}
			log.Warn("upstream disconnected", "url", shown, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("upstream connected", "url", nc.ConnectedUrlRedacted())
		}),
		// With RetryOnFailedConnect a wrong credential or certificate
		// never fails Connect: say why each attempt fails.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("upstream connect failed", "url", shown, "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("upstream error", "url", shown, "err", err)
		}),
	}, r.natsOpts...)
	nc, err := nats.Connect(upstream, nopts...)
	if err != nil {
		return fmt.Errorf("upstream %s: %w", shown, err)
	}
	defer nc.Close()

	node, err := aggregator.New(aggregator.Options{
		Classes: classes,
		Node:    c.Node,
		Dir:     filepath.Join(c.DataDir, "spool"),
		Conn:    nc,
		Stream:  c.Stream,
		Subject: c.Subject,
		Spool:   spoolOpts,
		Link: aggregator.Link{
			Ceil:     int64(c.LinkMbit * 1e6 / 8),
			Headroom: c.Headroom,
			Unshaped: c.Unshaped,
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	nodeDown := false
	defer func() {
		if !nodeDown {
			node.Close()
		}
	}()

	handler, err := ingest.NewHandler(node, iopts)
	if err != nil {
		return err
	}
	var natsIn *natsIngest
	if r.hasNATS {
		if natsIn, err = startNATSIngest(ctx, c.NATSIngest.URL, nc, node, r.nats, log); err != nil {
			return err
		}
		defer natsIn.stop(context.Background()) // idempotent; on early returns
	}

	tcp, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w (is another sluice or server on that port? set --listen)", c.Listen, err)
	}
	// Connections are bounded before they exhaust the descriptors the
	// spool needs; idle ones give way, and a client refused gets 503 with
	// Retry-After (plain HTTP) or a clean close (TLS).
	ln, err := connlimit.New(tcp, connlimit.Options{
		Max: c.Limits.MaxConnections, PerIP: c.Limits.MaxConnectionsPerIP,
		RejectHTTP: r.tls == nil, Logger: log,
	})
	if err != nil {
		tcp.Close()
		return fmt.Errorf("limits: %w", err)
	}
	cst := ln.Stats()
	log.Info("limits", "max_inflight_bytes", iopts.MaxInflightBytes, "max_inflight_from", r.inflightFrom,
		"max_connections", cst.Max, "max_connections_per_ip", cst.PerIP, "max_body_bytes", iopts.MaxBodyBytes)
	rl := &reloader{flagged: flagged, fs: fs, running: c, node: node, handler: handler, log: log}
	var natsSrc *ingest.NATSSource
	if natsIn != nil {
		natsSrc = natsIn.src
	}
	mux, stopOps, err := nodeMux(c.Node, node, handler, natsSrc, ln, log)
	if err != nil {
		return err
	}
	defer stopOps()
	// Admin actions are on admin.listen only: producers reach this one.
	mux.HandleFunc("/-/reload", reloadElsewhere)
	serveErr := make(chan error, 2)
	var admin *adminServer
	if c.Admin.Listen != "" {
		if admin, err = listenAdmin(c.Admin, r.admin, rl.reload, log); err != nil {
			ln.Close()
			return err
		}
		defer admin.close(context.Background()) // on early returns; idempotent
		rl.hooks = append(rl.hooks, func(c *nodeConfig) error {
			tok, err := c.Admin.token()
			if err != nil {
				return fmt.Errorf("admin.token_file: %w", err)
			}
			admin.setToken(tok)
			return nil
		})
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := rl.reload(); err != nil {
					log.Error("config reload refused", "err", err)
				}
			}
		}
	}()
	srv := &http.Server{
		Handler:           mux,
		ConnState:         ln.ConnState,
		ReadHeaderTimeout: 5 * time.Second,
		// A body slower than this is cut off; an ack waits for the spool's
		// fsync, milliseconds.
		ReadTimeout: time.Minute,
		// Past ReadTimeout: the write deadline counts from the end of the
		// headers, so an equal one leaves no time to answer a slow body.
		WriteTimeout: time.Minute + 10*time.Second,
		IdleTimeout:  2 * time.Minute,
	}
	scheme := "http"
	if r.tls != nil {
		srv.TLSConfig = r.tls.config()
		scheme = "https"
		rl.hooks = append(rl.hooks, func(*nodeConfig) error { return r.tls.reload() })
		go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	if admin != nil { // once rl.hooks are all set
		go func() {
			if err := admin.serve(); err != nil {
				serveErr <- fmt.Errorf("admin: %w", err)
			}
		}()
		log.Info("admin listening", "addr", admin.addr().String(), "token", c.Admin.TokenFile != "")
		if hooks.adminListening != nil {
			hooks.adminListening(admin.addr())
		}
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "upstream", shown,
		"stream", c.Stream, "subject", c.Subject+".<class>", "spool", node.SpoolID(),
		"data_dir", c.DataDir, "fsync", fsync.String())
	if hooks.listening != nil {
		hooks.listening(ln.Addr())
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_timeout", c.DrainTimeout)
	case err := <-serveErr:
		runErr = fmt.Errorf("http: %w", err)
	}

	// Intake stops first: the NATS source, then the node, whose Ingest
	// answers ErrClosed at once, so HTTP producers get 503 with
	// Retry-After (and /readyz fails) while the spool drains. The server
	// closes after the drain.
	sctx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer cancel()
	if natsIn != nil {
		natsIn.stop(sctx)
	}
	nodeDown = true
	start := time.Now()
	err = node.Shutdown(sctx)
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	if herr := srv.Shutdown(hctx); herr != nil {
		log.Warn("http shutdown", "err", herr)
	}
	if admin != nil {
		// After the drain: a reload can still raise a ceiling meanwhile.
		admin.close(hctx)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("drain timed out: the rest stays in the spool and is sent after the next start",
			"drain_timeout", c.DrainTimeout)
	case err != nil:
		log.Error("node shutdown", "err", err)
		runErr = errors.Join(runErr, err)
	default:
		log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	}
	return runErr
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// natsIngest is the node's NATS source and the connection it owns, if any.
type natsIngest struct {
	src  *ingest.NATSSource
	own  *nats.Conn // nil when the source shares the node's connection
	log  *slog.Logger
	once sync.Once
}

// startNATSIngest subscribes to the configured subjects, on url or, when
// it is empty, on the node's own connection.
func startNATSIngest(ctx context.Context, url string, nc *nats.Conn, node *aggregator.Node, opts ingest.NATSOptions, log *slog.Logger) (*natsIngest, error) {
	opts.Logger = log
	in := &natsIngest{log: log}
	if url != "" {
		own, err := nats.Connect(url, nats.Name("sluice ingest"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
		if err != nil {
			return nil, fmt.Errorf("nats ingest %s: %w", url, err)
		}
		in.own, nc = own, own
	}
	src, err := ingest.StartNATS(ctx, nc, node, opts)
	if err != nil {
		if in.own != nil {
			in.own.Close()
		}
		return nil, fmt.Errorf("config: nats_ingest: %w", err)
	}
	in.src = src
	log.Info("nats ingest started", "subscriptions", len(opts.Subscriptions))
	return in, nil
}

// stop shuts the source down (what it already took finishes) and closes
// its own connection.
func (in *natsIngest) stop(ctx context.Context) {
	in.once.Do(func() {
		if err := in.src.Shutdown(ctx); err != nil {
			in.log.Warn("nats ingest shutdown", "err", err)
		}
		if in.own != nil {
			in.own.Close()
		}
	})
}

// redactURL hides a password or token in a NATS URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
	} else {
		u.User = url.User("REDACTED")
	}
	return u.String()
}
