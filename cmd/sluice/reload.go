package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/priority"
)

// reloader re-reads the config file on SIGHUP or POST /-/reload (on the
// admin listener, admin.go) and applies what can change while the node
// runs: the classes' rates, ceilings, priorities, plans, field priorities
// and max ages; the ingest pipeline's write keys (with their class and
// pin_class), routes, default class, stamp and event limits
// (ingest.max_event_bytes, ingest.max_events), for the HTTP endpoints and
// the NATS subjects at once; and through hooks the TLS certificates and
// the admin token.
// Anything else that changed refuses the reload, naming each key; an
// invalid file refuses it too. A refused reload changes nothing: the old
// configuration stays, and the error goes to the log and to the answer of
// /-/reload.
type reloader struct {
	mu      sync.Mutex
	flagged nodeConfig    // the config from the flags alone, before the file
	fs      *flag.FlagSet // which flags were set: they override the file
	running nodeConfig    // the configuration applied now
	node    *aggregator.Node
	pipe    *ingest.Pipeline // both doors' pipeline
	log     *slog.Logger
	hooks   []func(*nodeConfig) error // more things to reload (TLS certificates)
}

// reload re-reads the config file and applies it, or returns why not.
func (r *reloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flagged.Config == "" {
		return errors.New("no --config file to reload")
	}
	c := r.flagged
	if err := c.load(r.fs); err != nil {
		return err
	}
	c.Node = r.running.Node // resolved from the host name at start
	if diff := fixedChanges(&r.running, &c); len(diff) > 0 {
		return fmt.Errorf("config %s: changed keys need a restart: %v (nothing was applied)", c.Config, diff)
	}
	res, err := c.resolve()
	if err != nil {
		return err
	}
	if err := r.node.Reconfigure(res.classes); err != nil {
		return fmt.Errorf("config %s: %w", c.Config, err)
	}
	if err := r.pipe.Reconfigure(res.ingest); err != nil {
		// Checked by resolve; the classes are already applied, so put
		// them back rather than run half of each configuration.
		r.node.Reconfigure(mustClasses(r.running))
		return fmt.Errorf("config %s: %w", c.Config, err)
	}
	for _, h := range r.hooks {
		if err := h(&c); err != nil {
			return fmt.Errorf("config %s: %w (classes, keys and routes were applied)", c.Config, err)
		}
	}
	r.running = c
	r.log.Info("config reloaded", "file", c.Config, "classes", len(res.classes), "keys", len(res.ingest.Keys), "routes", len(c.Ingest.Routes))
	return nil
}

// mustClasses returns the classes of a configuration that was applied
// before, so resolves.
func mustClasses(c nodeConfig) []priority.Class {
	cls, _ := buildClasses(c.Classes, int64(c.LinkMbit*1e6/8))
	return cls
}

// fixedChanges lists the keys that differ between a and b and that a
// running node cannot change.
func fixedChanges(a, b *nodeConfig) []string {
	fixed := []struct {
		key  string
		x, y any
	}{
		{"data_dir", a.DataDir, b.DataDir}, {"listen", a.Listen, b.Listen}, {"upstream", a.Upstream, b.Upstream},
		{"nats_listen", a.NATSListen, b.NATSListen}, {"stream", a.Stream, b.Stream}, {"subject", a.Subject, b.Subject},
		{"fsync", a.Fsync, b.Fsync}, {"spool", a.Spool, b.Spool}, {"link_mbit", a.LinkMbit, b.LinkMbit},
		{"headroom", a.Headroom, b.Headroom}, {"unshaped", a.Unshaped, b.Unshaped}, {"nats_ingest", a.NATSIngest, b.NATSIngest},
		{"log_format", a.LogFormat, b.LogFormat}, {"log_level", a.LogLevel, b.LogLevel}, {"drain_timeout", a.DrainTimeout, b.DrainTimeout},
		{"ingest.dedup_window", a.Ingest.DedupWindow, b.Ingest.DedupWindow}, {"ingest.dedup_entries", a.Ingest.DedupEntries, b.Ingest.DedupEntries},
		{"ingest.max_body_bytes", a.Ingest.MaxBodyBytes, b.Ingest.MaxBodyBytes},
		{"tls", a.TLS, b.TLS}, {"upstream_auth", a.UpstreamAuth, b.UpstreamAuth}, {"admin", a.Admin, b.Admin},
		{"upstream_stream", a.UpstreamStream, b.UpstreamStream},
	}
	var out []string
	for _, f := range fixed {
		if !reflect.DeepEqual(f.x, f.y) {
			out = append(out, f.key)
		}
	}
	sort.Strings(out)
	return out
}
