package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// nodeConfig is the configuration of `sluice run`: defaults, then the
// --config file, then the flags given on the command line.
type nodeConfig struct {
	Config       string
	Node         string
	DataDir      string
	Listen       string
	Upstream     string
	NATSListen   string
	Stream       string
	Subject      string
	Fsync        string
	DrainTimeout time.Duration
	LogFormat    string
	LogLevel     string
	LinkMbit     float64
	Headroom     float64
	Unshaped     bool

	lines map[string]int // line of each key path in the file ("spool.max_bytes", "classes[0]")

	// From the file only.
	TLS          serverTLS
	UpstreamAuth natsAuth
	Spool        spoolConfig
	Classes      []classConfig
	Ingest       ingestConfig
	NATSIngest   natsIngestConfig
}

// fileConfig is the YAML file of --config. Its keys mirror the flags; a
// key left out keeps the default. The full configuration (classes, caps,
// shaping) is a later issue.
type fileConfig struct {
	Node         string        `yaml:"node"`
	DataDir      string        `yaml:"data_dir"`
	Listen       string        `yaml:"listen"`
	Upstream     string        `yaml:"upstream"`
	NATSListen   string        `yaml:"nats_listen"`
	Stream       string        `yaml:"stream"`
	Subject      string        `yaml:"subject"`
	Fsync        string        `yaml:"fsync"`
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	LogFormat    string        `yaml:"log_format"`
	LogLevel     string        `yaml:"log_level"`
	LinkMbit     float64       `yaml:"link_mbit"`
	Headroom     float64       `yaml:"headroom"`
	Unshaped     bool          `yaml:"unshaped"`

	TLS          serverTLS        `yaml:"tls"`
	UpstreamAuth natsAuth         `yaml:"upstream_auth"`
	Spool        spoolConfig      `yaml:"spool"`
	Classes      []classConfig    `yaml:"classes"`
	Ingest       ingestConfig     `yaml:"ingest"`
	NATSIngest   natsIngestConfig `yaml:"nats_ingest"`

	lines map[string]int // line of each key path ("spool.max_bytes", "classes[0]")
}

// spoolConfig is the "spool" section: disk caps and fsync timing.
type spoolConfig struct {
	// MaxBytes caps all classes' segments together: "50GiB" or bytes; 0
	// (default) is unlimited. A class's own cap is classes[].max_bytes.
	MaxBytes string `yaml:"max_bytes"`
	// FsyncInterval is the longest time between fsyncs under fsync:
	// interval; default 1s.
	FsyncInterval time.Duration `yaml:"fsync_interval"`
	// SegmentBytes is the size of one segment file; default 64MiB.
	SegmentBytes string `yaml:"segment_bytes"`
}

// options returns the spool options of c.
func (c spoolConfig) options(fsync spool.Fsync) (spool.Options, error) {
	o := spool.Options{Fsync: fsync, FsyncInterval: c.FsyncInterval}
	var err error
	if c.MaxBytes != "" {
		if o.MaxBytes, err = parseSize(c.MaxBytes); err != nil {
			return o, fmt.Errorf("spool.max_bytes: %w", err)
		}
	}
	if c.SegmentBytes != "" {
		if o.SegmentBytes, err = parseSize(c.SegmentBytes); err != nil {
			return o, fmt.Errorf("spool.segment_bytes: %w", err)
		}
	}
	if c.FsyncInterval < 0 {
		return o, fmt.Errorf("spool.fsync_interval %v: want > 0", c.FsyncInterval)
	}
	return o, nil
}

func (c *nodeConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Config, "config", "", "YAML `file` with keys mirroring these flags (node, data_dir, listen, …); flags override it")
	fs.StringVar(&c.Node, "node", "", "node `name` in batch headers (default: the host name)")
	fs.StringVar(&c.DataDir, "data-dir", "./sluice-data", "`dir`ectory of the spool (and of the embedded NATS server's store)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "HTTP ingest `address`")
	fs.StringVar(&c.Upstream, "upstream", "", "NATS `URL` of the upstream; empty starts an embedded NATS server with JetStream")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4222", "client `address` of the embedded NATS server (without --upstream)")
	fs.StringVar(&c.Stream, "stream", "SLUICE", "JetStream `stream`, created if missing")
	fs.StringVar(&c.Subject, "subject", "sluice", "subject `prefix`: a batch of class C goes to PREFIX.C")
	fs.StringVar(&c.Fsync, "fsync", "always", "spool fsync `policy`: always, interval or never")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long to keep shipping the spool before exiting; what is left is sent after the next start")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.Float64Var(&c.LinkMbit, "link-mbit", 0, "capacity of the upstream link in `Mbit/s`, if known; 0 = measure it from acks")
	fs.Float64Var(&c.Headroom, "headroom", 0.8, "fraction of the link capacity the shaper plans to use, in (0, 1]")
	fs.BoolVar(&c.Unshaped, "unshaped", false, "turn the shaper off: one FIFO window for all classes, no degradation (for comparison)")
}

// load applies the --config file, if any, under the flags that were set.
func (c *nodeConfig) load(fs *flag.FlagSet) error {
	if c.Config == "" {
		return c.validate()
	}
	f, err := readConfigFile(c.Config)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	str := func(flag string, dst *string, v string) {
		if !set[flag] && v != "" {
			*dst = v
		}
	}
	str("node", &c.Node, f.Node)
	str("data-dir", &c.DataDir, f.DataDir)
	str("listen", &c.Listen, f.Listen)
	str("upstream", &c.Upstream, f.Upstream)
	str("nats-listen", &c.NATSListen, f.NATSListen)
	str("stream", &c.Stream, f.Stream)
	str("subject", &c.Subject, f.Subject)
	str("fsync", &c.Fsync, f.Fsync)
	str("log-format", &c.LogFormat, f.LogFormat)
	str("log-level", &c.LogLevel, f.LogLevel)
	if !set["drain-timeout"] && f.DrainTimeout != 0 {
		c.DrainTimeout = f.DrainTimeout
	}
	if !set["link-mbit"] && f.LinkMbit != 0 {
		c.LinkMbit = f.LinkMbit
	}
	if !set["headroom"] && f.Headroom != 0 {
		c.Headroom = f.Headroom
	}
	if !set["unshaped"] && f.Unshaped {
		c.Unshaped = true
	}
	c.TLS, c.UpstreamAuth, c.lines = f.TLS, f.UpstreamAuth, f.lines
	c.Spool, c.Classes, c.Ingest, c.NATSIngest = f.Spool, f.Classes, f.Ingest, f.NATSIngest
	if err := c.validate(); err != nil {
		return fmt.Errorf("config %s: %w", c.Config, err)
	}
	return nil
}

// readConfigFile decodes a config file strictly: unknown keys, wrong types
// and more than one document are errors naming the file and line.
func readConfigFile(path string) (fileConfig, error) {
	var f fileConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("config: %w", err)
	}
	f, err = parseConfig(data)
	if err != nil {
		return f, fmt.Errorf("config %s: %w", path, err)
	}
	return f, nil
}

func parseConfig(data []byte) (fileConfig, error) {
	var f fileConfig
	data, err := expandEnv(data, nil)
	if err != nil {
		return f, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) { // an empty file is an empty config
			return fileConfig{}, nil
		}
		if te, ok := errors.AsType[*yaml.TypeError](err); ok {
			// "line 2: field x not found in type main.fileConfig", one a line.
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				msgs[i] = strings.TrimSuffix(m, " in type main.fileConfig")
			}
			return f, errors.New(strings.Join(msgs, "; "))
		}
		return f, err
	}
	// The line of every key, for errors about their values.
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) == 1 {
		f.lines = map[string]int{}
		keyLines(doc.Content[0], "", f.lines)
		for j := range f.Classes {
			f.Classes[j].line = f.lines[fmt.Sprintf("classes[%d]", j)]
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return f, err
		}
		return f, fmt.Errorf("line %d: a second YAML document; want one", extra.Line)
	}
	return f, nil
}

func (c *nodeConfig) validate() error {
	switch {
	case c.DataDir == "":
		return c.keyErr("data_dir", errors.New("empty"))
	case c.Listen == "":
		return c.keyErr("listen", errors.New("empty"))
	case c.Upstream == "" && c.NATSListen == "":
		return c.keyErr("nats_listen", errors.New("empty and no upstream is given"))
	case c.DrainTimeout <= 0:
		return c.keyErr("drain_timeout", fmt.Errorf("%v: want > 0", c.DrainTimeout))
	case c.LinkMbit < 0:
		return c.keyErr("link_mbit", fmt.Errorf("%v Mbit/s: want ≥ 0", c.LinkMbit))
	case !(c.Headroom > 0 && c.Headroom <= 1):
		return c.keyErr("headroom", fmt.Errorf("%v: want a fraction in (0, 1]", c.Headroom))
	case c.Stream == "" || strings.ContainsAny(c.Stream, ".*> \t"):
		return c.keyErr("stream", fmt.Errorf("%q: want a non-empty name without '.', '*', '>' or spaces", c.Stream))
	case c.Subject == "" || strings.ContainsAny(c.Subject, "*> \t") || strings.HasPrefix(c.Subject, ".") || strings.HasSuffix(c.Subject, "."):
		return c.keyErr("subject", fmt.Errorf("%q: want tokens without wildcards or spaces", c.Subject))
	}
	if _, err := spool.ParseFsync(c.Fsync); err != nil {
		return c.keyErr("fsync", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c.keyErr("log_format", fmt.Errorf("%q: want text or json", c.LogFormat))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return c.keyErr("log_level", fmt.Errorf("%q: want debug, info, warn or error", c.LogLevel))
	}
	return nil
}

// newLogger returns the logger of c and, for the embedded NATS server, one
// that is at least at warn level unless c asks for debug: the server's
// startup notices would drown sluice's own lines.
func newLogger(format, level string, w io.Writer) (*slog.Logger, *slog.Logger) {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // validated
	mk := func(l slog.Level) *slog.Logger {
		o := &slog.HandlerOptions{Level: l}
		if format == "json" {
			return slog.New(slog.NewJSONHandler(w, o))
		}
		return slog.New(slog.NewTextHandler(w, o))
	}
	nl := l
	if l > slog.LevelDebug {
		nl = max(l, slog.LevelWarn)
	}
	return mk(l), mk(nl).With("component", "nats-server")
}

// resolved is a configuration turned into the options of each part, with
// every value checked: what `sluice validate` reports and `sluice run`
// starts from.
type resolved struct {
	classes  []priority.Class
	spool    spool.Options
	ingest   ingest.Options
	nats     ingest.NATSOptions
	hasNATS  bool
	tls      *tlsReloader  // nil without tls.cert_file
	natsOpts []nats.Option // upstream TLS and credentials
}

// resolve builds and checks the options of c without starting anything.
func (c *nodeConfig) resolve() (*resolved, error) {
	fsync, err := spool.ParseFsync(c.Fsync)
	if err != nil {
		return nil, err
	}
	var r resolved
	if r.classes, err = buildClasses(c.Classes, int64(c.LinkMbit*1e6/8)); err != nil {
		return nil, c.fileErr(err)
	}
	if r.spool, err = c.Spool.options(fsync); err != nil {
		return nil, c.fileErr(c.keyErr("spool", err))
	}
	if r.ingest, err = c.Ingest.options(c.Node, r.classes); err != nil {
		return nil, c.fileErr(c.keyErr("ingest", err))
	}
	if _, err := ingest.NewHandler(nil, r.ingest); err != nil {
		return nil, c.fileErr(c.keyErr("ingest.keys", err))
	}
	r.nats, r.hasNATS = c.NATSIngest.natsOptions(r.ingest.Router, c.Subject)
	if r.tls, err = c.TLS.reloader(); err != nil {
		return nil, c.fileErr(c.keyErr("tls", err))
	}
	if r.natsOpts, err = c.UpstreamAuth.options(); err != nil {
		return nil, c.fileErr(c.keyErr("upstream_auth", err))
	}
	return &r, nil
}

// keyLines records the line of every key path under n.
func keyLines(n *yaml.Node, prefix string, out map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if prefix != "" {
				k = prefix + "." + k
			}
			out[k] = n.Content[i].Line
			keyLines(n.Content[i+1], k, out)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			k := fmt.Sprintf("%s[%d]", prefix, i)
			out[k] = e.Line
			keyLines(e, k, out)
		}
	}
}

// keyErr names key, and its line when the file set it, in err.
func (c *nodeConfig) keyErr(key string, err error) error {
	if line, ok := c.lines[key]; ok {
		return fmt.Errorf("line %d: %s: %w", line, key, err)
	}
	return fmt.Errorf("%s: %w", key, err)
}

// fileErr names the config file in err.
func (c *nodeConfig) fileErr(err error) error {
	if c.Config == "" {
		return fmt.Errorf("config: %w", err)
	}
	return fmt.Errorf("config %s: %w", c.Config, err)
}
