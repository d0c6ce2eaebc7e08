package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/embedded"
	"github.com/sluicehq/sluice/spool"
)

// nodeHooks let tests observe a running node. Nil fields are skipped.
type nodeHooks struct {
	// listening is called with the HTTP address once it accepts connections.
	listening func(net.Addr)
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
	if err := c.load(fs); err != nil {
		return err
	}
	fsync, _ := spool.ParseFsync(c.Fsync) // validated by load
	log, natsLog := newLogger(c.LogFormat, c.LogLevel, stderr)

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

	nc, err := nats.Connect(upstream,
		nats.Name("sluice "+c.Node),
		nats.MaxReconnects(-1),          // the node outlives any outage of the upstream
		nats.RetryOnFailedConnect(true), // and may start before it
		nats.ReconnectWait(250*time.Millisecond),
		// No outbound buffer while disconnected: publishes fail at once and
		// the lanes retry them from the spool, which is the buffer.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // our own Close
			}
			log.Warn("upstream disconnected", "url", upstream, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("upstream connected", "url", nc.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		return fmt.Errorf("upstream %s: %w", upstream, err)
	}
	defer nc.Close()

	node, err := aggregator.New(aggregator.Options{
		Node:    c.Node,
		Dir:     filepath.Join(c.DataDir, "spool"),
		Conn:    nc,
		Stream:  c.Stream,
		Subject: c.Subject,
		Spool:   spool.Options{Fsync: fsync},
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

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           ingest.NewHandler(node, ingest.Options{Logger: log}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "upstream", upstream,
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

	sctx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	nodeDown = true
	start := time.Now()
	err = node.Shutdown(sctx)
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
