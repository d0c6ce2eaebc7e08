package main

import (
	"cmp"
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
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/connlimit"
	"github.com/sluicehq/sluice/spool"
)

// nodeHooks let tests observe a running node. Nil fields are skipped.
type nodeHooks struct {
	// listening is called with the HTTP address once it accepts connections.
	listening func(net.Addr)
	// adminListening is called with the admin address (admin.listen), if
	// any, before listening.
	adminListening func(net.Addr)
	// stopped is called with what the node's shutdown did, before
	// runNode returns; run turns it into the exit status.
	stopped func(aggregator.ShutdownReport)
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
			"NATS server storing in DATA_DIR/nats when --upstream is empty.\n\n"+
			"On SIGINT or SIGTERM it stops intake and ships the spool for up to --drain-timeout, except\n"+
			"the classes the degradation level defers; what it did not ship stays in the spool and is\n"+
			"sent after the next start. Exit status: 0 everything was shipped, 3 events were left in the\n"+
			"spool (the log says per class how many and why), 1 an error, 2 a bad command line.\n\nFlags:\n")
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
	if w := toolchainWarning(runtime.Version()); w != "" {
		log.Warn(w)
	}
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
		port = max(port, 0) // 0 and -1 both pick a free port
		// Another sluice on this data dir would share the NATS store
		// with a second server: refuse before starting one.
		if err := spoolFree(filepath.Join(c.DataDir, "spool")); err != nil {
			return err
		}
		if port > 0 {
			// The server only logs a taken port, and Start then waits
			// for it for 10 s: say it at once, and what to do.
			l, err := net.Listen("tcp", c.NATSListen)
			if err != nil {
				return fmt.Errorf("embedded NATS server: %w (is another sluice or NATS server on that port? set --nats-listen, or --upstream to use a running server)", err)
			}
			l.Close()
		}
		dir := filepath.Join(c.DataDir, "nats")
		srv, err := embednats.Start(embednats.Options{Dir: dir, Host: host, Port: port, Logger: natsLog})
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("embedded nats-server shutdown", "err", err)
			}
			log.Info("embedded nats-server stopped")
		}()
		upstream = srv.ClientURL()
		log.Info("embedded nats-server started", "url", upstream, "store", dir)
	}

	shown := redactURL(upstream)
	ulog := &upstreamLog{log: log, url: shown, retry: upstreamRetry}
	nopts := append([]nats.Option{
		nats.Name("sluice " + c.Node),
		nats.MaxReconnects(-1),          // the node outlives any outage of the upstream
		nats.RetryOnFailedConnect(true), // and may start before it
		nats.ReconnectWait(upstreamRetry),
		// No outbound buffer while disconnected: publishes fail at once and
		// the lanes retry them from the spool, which is the buffer.
		nats.ReconnectBufSize(-1),
		// An outage is logged when it begins and when it ends, not at
		// every attempt (see upstreamLog).
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // our own Close
			}
			ulog.disconnected(err)
		}),
		nats.ConnectHandler(ulog.connected),
		nats.ReconnectHandler(ulog.connected),
		// With RetryOnFailedConnect a wrong credential or certificate
		// never fails Connect: the first failed attempt says why.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { ulog.failed(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("upstream error", "url", shown, "err", err)
		}),
	}, r.natsOpts...)
	nc, err := nats.Connect(upstream, nopts...)
	if err != nil {
		return fmt.Errorf("upstream %s: %w", shown, err)
	}
	defer nc.Close()

	spoolDir := filepath.Join(c.DataDir, "spool")
	node, err := aggregator.New(aggregator.Options{
		Classes: classes,
		Node:    c.Node,
		Dir:     spoolDir,
		Conn:    nc,
		Stream:  c.Stream,
		Subject: c.Subject,
		Spool:   spoolOpts,
		// Per class; the bucket is the stream's (wire.DictBucket).
		Dictionary: aggregator.DictOptions{Classes: r.dicts},
		Link: aggregator.Link{
			Ceil:     int64(c.LinkMbit * 1e6 / 8),
			Headroom: c.Headroom,
			Unshaped: c.Unshaped,
		},
		StreamConfig: r.stream,
		Logger:       log,
	})
	if err != nil {
		return spoolInUse(spoolDir, err)
	}
	nodeDown := false
	defer func() {
		if !nodeDown {
			node.Close()
		}
	}()

	// One pipeline for both doors: the HTTP endpoints and the NATS
	// subjects route, stamp and limit alike, and a reload changes both.
	pipe, err := ingest.NewPipeline(node, iopts)
	if err != nil {
		return err
	}
	handler := pipe.Handler()
	var natsIn *natsIngest
	if r.hasNATS {
		if natsIn, err = startNATSIngest(ctx, c.NATSIngest.URL, nc, pipe, r.nats, log); err != nil {
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
		"max_connections", cst.Max, "max_connections_per_ip", cst.PerIP, "max_body_bytes", cmp.Or(iopts.MaxBodyBytes, ingest.DefaultMaxBodyBytes))
	rl := &reloader{flagged: flagged, fs: fs, running: c, node: node, pipe: pipe, log: log}
	var natsSrc *ingest.NATSSource
	if natsIn != nil {
		natsSrc = natsIn.src
	}
	mux, stopOps, err := nodeMux(c.Node, node, handler, natsSrc, ln, log, newDiskCollector(spoolDir, spoolOpts.MaxBytes))
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
	rep, _ := node.ShutdownReport()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Error("node shutdown", "err", err)
		runErr = errors.Join(runErr, err)
	}
	logShutdown(log, rep, spoolDir, c.DrainTimeout)
	if hooks.stopped != nil {
		hooks.stopped(rep)
	}
	return runErr
}

// logShutdown logs what the node's shutdown did: "drained" when the spool
// is empty; otherwise one line per class left in it, saying why, and a
// summary.
func logShutdown(log *slog.Logger, rep aggregator.ShutdownReport, spoolDir string, drainTimeout time.Duration) {
	took := rep.Took.Round(time.Millisecond)
	if rep.Left() == 0 {
		log.Info("drained", "shipped", rep.Shipped(), "took", took)
		return
	}
	for _, c := range rep.Classes {
		if c.Left == 0 {
			continue
		}
		log.Warn("left in the spool", "class", c.Class, "events", c.Left, "shipped", c.Shipped,
			"reason", c.Reason.String(), "why", leftWhy(c, drainTimeout))
	}
	log.Warn("not drained", "left", rep.Left(), "shipped", rep.Shipped(), "took", took, "spool", spoolDir,
		"hint", "the events left stay in the spool, on disk; a node started on this data dir sends them (exit status 3)")
}

// leftWhy says in words why a class's events were left in the spool.
func leftWhy(c aggregator.ClassDrain, drainTimeout time.Duration) string {
	switch c.Reason {
	case aggregator.LeftDeferred:
		if c.Level == 3 {
			return "deferred at degradation level 3 (the upstream link failed): deferred classes are not drained"
		}
		return fmt.Sprintf("deferred at degradation level %d (the link is degraded): deferred classes are not drained", c.Level)
	case aggregator.LeftUpstreamDown:
		return fmt.Sprintf("the upstream was down or refusing batches until the drain timeout (%v) ended", drainTimeout)
	case aggregator.LeftDeadline:
		return fmt.Sprintf("still shipping when the drain timeout (%v) ended; a longer --drain-timeout ships more", drainTimeout)
	default:
		return "not acknowledged in the spool (see the errors logged before); resent after the next start, and JetStream drops the copies"
	}
}

// upstreamRetry is how often the client tries to reach the upstream while
// it is away.
const upstreamRetry = 250 * time.Millisecond

// upstreamLog logs the upstream connection by outage, not by attempt: the
// client retries every upstreamRetry, and a line per failed attempt said
// the same thing four times a second (24 lines in 7 s). An outage is
// logged when it begins (the disconnection, and the first failed attempt
// with its reason and what to check) and when it ends, with how long it
// lasted and how many attempts failed. The client calls its handlers one
// at a time.
type upstreamLog struct {
	log   *slog.Logger
	url   string // redacted
	retry time.Duration

	mu       sync.Mutex
	since    time.Time // when the outage began; zero while connected
	attempts int       // failed attempts since
}

func (u *upstreamLog) disconnected(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.since.IsZero() {
		u.since, u.attempts = time.Now(), 0
	}
	u.log.Warn("upstream disconnected", "url", u.url, "err", err,
		"hint", fmt.Sprintf("events stay in the spool; reconnecting every %v, logged once connected", u.retry))
}

func (u *upstreamLog) failed(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.since.IsZero() {
		u.since = time.Now() // down from the start: no disconnection came first
	}
	u.attempts++
	if u.attempts > 1 {
		return
	}
	u.log.Warn("upstream connect failed", "url", u.url, "err", err,
		"hint", fmt.Sprintf("events stay in the spool; retrying every %v, logged once connected. "+
			"Check that the NATS server at url is up and reachable from here (--upstream) and that its credentials and TLS settings are right (upstream_auth)", u.retry))
}

func (u *upstreamLog) connected(nc *nats.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.since.IsZero() {
		u.log.Info("upstream connected", "url", nc.ConnectedUrlRedacted())
		return
	}
	u.log.Info("upstream connected", "url", nc.ConnectedUrlRedacted(),
		"down_for", time.Since(u.since).Round(time.Millisecond), "failed_attempts", u.attempts)
	u.since, u.attempts = time.Time{}, 0
}

// spoolFree returns an error saying what to do if another process holds
// the spool in dir, the lock spool.Open would wait a second for and fail
// on (see spoolInUse); nil otherwise, or if dir holds no spool yet.
func spoolFree(dir string) error {
	path := filepath.Join(dir, "meta.db")
	if _, err := os.Stat(path); err != nil {
		return nil // no spool yet, or one spool.Open reports on
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return spoolInUse(dir, fmt.Errorf("lock %s: %w", path, err))
		}
		return nil // anything else is spool.Open's to report
	}
	db.Close()
	return nil
}

// spoolInUse turns the lock timeout of a spool another process holds into
// an error that says so and what to do; other errors pass unchanged.
func spoolInUse(dir string, err error) error {
	if !errors.Is(err, berrors.ErrTimeout) {
		return err
	}
	return fmt.Errorf("spool %s is locked by another process: is another sluice running on this --data-dir? "+
		"Stop it, or give this one its own --data-dir (%w)", dir, err)
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
// it is empty, on the node's own connection, into the pipeline the HTTP
// endpoints use.
func startNATSIngest(ctx context.Context, url string, nc *nats.Conn, pipe *ingest.Pipeline, opts ingest.NATSOptions, log *slog.Logger) (*natsIngest, error) {
	opts.Logger = log
	in := &natsIngest{log: log}
	if url != "" {
		own, err := nats.Connect(url, nats.Name("sluice ingest"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
		if err != nil {
			return nil, fmt.Errorf("nats ingest %s: %w", url, err)
		}
		in.own, nc = own, own
	}
	src, err := ingest.StartNATS(ctx, nc, pipe, opts)
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
