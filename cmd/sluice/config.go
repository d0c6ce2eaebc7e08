package main

import (
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/aggregator"
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
	Admin        adminConfig
	Limits       limitsConfig
	// The stream's settings.
	UpstreamStream upstreamStreamConfig
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
	Admin        adminConfig      `yaml:"admin"`
	Limits       limitsConfig     `yaml:"limits"`
	// UpstreamStream would be upstream.stream, but upstream is the URL.
	UpstreamStream upstreamStreamConfig `yaml:"upstream_stream"`

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

// upstreamStreamConfig is the "upstream_stream" section: the settings of
// the JetStream stream, those it is created with when missing and the
// promises an existing one is checked against (aggregator.StreamOptions).
type upstreamStreamConfig struct {
	Replicas  int `yaml:"replicas"`
	Placement struct {
		Cluster string   `yaml:"cluster"`
		Tags    []string `yaml:"tags"`
	} `yaml:"placement"`
	MaxAge          time.Duration `yaml:"max_age"`
	MaxBytes        string        `yaml:"max_bytes"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	OnMismatch      string        `yaml:"on_mismatch"`
}

// options returns the stream options of c, or an error naming the key
// under upstream_stream.
func (c upstreamStreamConfig) options() (aggregator.StreamOptions, string, error) {
	o := aggregator.StreamOptions{Replicas: c.Replicas, Cluster: c.Placement.Cluster, Tags: c.Placement.Tags,
		MaxAge: c.MaxAge, DuplicateWindow: c.DuplicateWindow}
	var err error
	if c.MaxBytes != "" {
		if o.MaxBytes, err = parseSize(c.MaxBytes); err != nil {
			return o, "max_bytes", err
		}
	}
	if c.OnMismatch != "" {
		if o.OnMismatch, err = aggregator.ParseMismatch(c.OnMismatch); err != nil {
			return o, "on_mismatch", err
		}
	}
	window := cmp.Or(c.DuplicateWindow, 10*time.Minute)
	switch {
	case c.Replicas < 0 || c.Replicas > 5:
		return o, "replicas", fmt.Errorf("%d: want 1 to 5 (0 = 1)", c.Replicas)
	case c.DuplicateWindow < 0 || c.DuplicateWindow > 0 && c.DuplicateWindow < 100*time.Millisecond:
		return o, "duplicate_window", fmt.Errorf("%v: want at least 100ms (0 = 10m)", c.DuplicateWindow)
	case c.MaxAge < 0:
		return o, "max_age", fmt.Errorf("%v: want ≥ 0 (0 = forever)", c.MaxAge)
	case c.MaxAge > 0 && c.MaxAge < window:
		return o, "max_age", fmt.Errorf("%v is shorter than duplicate_window %v: JetStream keeps ids no longer than batches", c.MaxAge, window)
	case slices.Contains(c.Placement.Tags, ""):
		return o, "placement.tags", errors.New("an empty tag")
	}
	if err := o.Validate(); err != nil {
		return o, "", err
	}
	return o, "", nil
}

// options returns the spool options of c.
func (c spoolConfig) options(fsync spool.Fsync) (aggregator.SpoolOptions, error) {
	o := aggregator.SpoolOptions{Fsync: fsync, FsyncInterval: c.FsyncInterval}
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
	c.TLS, c.UpstreamAuth, c.UpstreamStream, c.lines = f.TLS, f.UpstreamAuth, f.UpstreamStream, f.lines
	c.Spool, c.Classes, c.Ingest, c.NATSIngest, c.Admin, c.Limits = f.Spool, f.Classes, f.Ingest, f.NATSIngest, f.Admin, f.Limits
	if err := c.validate(); err != nil {
		return fmt.Errorf("config %s: %w", c.Config, err)
	}
	return nil
}

// Bounds of a config file. A config is written by people: these are far
// above any real one (the default file is 7 KiB and 350 nodes) and far
// below what would hurt the node. Parsing costs up to about 90 bytes of
// memory per byte of YAML before any node can be counted, so the size cap
// keeps a reload inside a small pod's memory; the node budget stops
// anchors and aliases from fanning a small file out into gigabytes.
const (
	maxConfigBytes = 1 << 20 // the file, in bytes
	maxConfigNodes = 100_000 // YAML nodes, with every alias expanded where it is used
)

// readConfigFile decodes a config file strictly: unknown keys, wrong types
// and more than one document are errors naming the file and line.
func readConfigFile(path string) (fileConfig, error) {
	var f fileConfig
	file, err := os.Open(path)
	if err != nil {
		return f, fmt.Errorf("config: %w", err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxConfigBytes+1))
	if err != nil {
		return f, fmt.Errorf("config: %w", err)
	}
	f, err = parseConfig(data)
	if err != nil {
		return f, fmt.Errorf("config %s: %w", path, err)
	}
	return f, nil
}

// parseConfig decodes a config file's text with the process's environment.
func parseConfig(data []byte) (fileConfig, error) {
	return parseConfigEnv(data, os.LookupEnv)
}

// parseConfigEnv decodes a config file's text: within the size cap, one
// YAML document, within the node budget, environment references expanded
// in values (expandEnvTree), every key known, every value of its type.
func parseConfigEnv(data []byte, lookup func(string) (string, bool)) (fileConfig, error) {
	var f fileConfig
	if len(data) > maxConfigBytes {
		return f, fmt.Errorf("larger than %d bytes (1 MiB), the limit of a config file", maxConfigBytes)
	}
	data, refs := protectEnvRefs(data)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // an empty file is an empty config
			return f, nil
		}
		return f, withLine(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return f, withLine(data, err)
		}
		return f, fmt.Errorf("line %d: a second YAML document; want one", extra.Line)
	}
	if err := checkNodeBudget(&doc, maxConfigNodes); err != nil {
		return f, err
	}
	var errs lineErrors
	if expandEnvTree(&doc, refs, lookup, &errs); len(errs) > 0 {
		return f, errs.err() // the values are not what the file means
	}
	values := map[int][]keyedNode{}
	checkKeys(&doc, reflect.TypeFor[fileConfig](), "", &errs, values)
	if err := doc.Decode(&f); err != nil {
		te, ok := errors.AsType[*yaml.TypeError](err)
		if !ok {
			return fileConfig{}, withLine(data, err)
		}
		said := map[int]bool{} // lines checkKeys has an error for
		for _, e := range errs {
			said[e.line] = true
		}
		for _, m := range te.Errors {
			if line, msg := typeErrorMessage(strings.ReplaceAll(m, "\n", `\n`), values); !said[line] {
				errs.addMsg(line, msg)
			}
		}
	}
	if err := errs.err(); err != nil {
		return fileConfig{}, err
	}
	// The line of every key, for errors about their values.
	if len(doc.Content) == 1 {
		f.lines = map[string]int{}
		keyLines(doc.Content[0], "", f.lines)
		for j := range f.Classes {
			f.Classes[j].line = f.lines[fmt.Sprintf("classes[%d]", j)]
		}
	}
	return f, nil
}

// checkNodeBudget counts the nodes of root as decoding would visit them,
// each alias expanded where it is used, and fails past limit, naming the
// line of the alias whose expansion crossed it. It refuses an alias inside
// the node it refers to. It stops at the limit, so it costs no more than
// limit steps whatever the file.
func checkNodeBudget(root *yaml.Node, limit int) error {
	left := limit
	var outer *yaml.Node               // the alias in the file's own tree being expanded
	expanding := map[*yaml.Node]bool{} // anchors being expanded
	var count func(n *yaml.Node) error
	count = func(n *yaml.Node) error {
		if left--; left < 0 {
			if outer != nil {
				return fmt.Errorf("line %d: alias *%s: the config expands past %d YAML nodes, the limit (each use of an alias counts its anchor's nodes again)", outer.Line, outer.Value, limit)
			}
			return fmt.Errorf("line %d: the config has more than %d YAML nodes, the limit", n.Line, limit)
		}
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil {
				return fmt.Errorf("line %d: alias *%s refers to no anchor", n.Line, n.Value)
			}
			if expanding[n.Alias] {
				return fmt.Errorf("line %d: alias *%s is inside the node it refers to", n.Line, n.Value)
			}
			expanding[n.Alias] = true
			if outer == nil {
				outer = n
				defer func() { outer = nil }()
			}
			err := count(n.Alias)
			delete(expanding, n.Alias)
			return err
		}
		for _, c := range n.Content {
			if err := count(c); err != nil {
				return err
			}
		}
		return nil
	}
	return count(root)
}

// keyedNode is a value node of the config and its key path.
type keyedNode struct {
	path string
	node *yaml.Node
}

// checkKeys reports the mapping keys under n that typ has no field for,
// as yaml's KnownFields would (yaml.Node.Decode has no such option), and
// what a value of typ must be when n cannot be one. values receives every
// value node by line, for naming the key of a decoding error.
func checkKeys(n *yaml.Node, typ reflect.Type, path string, errs *lineErrors, values map[int][]keyedNode) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			checkKeys(c, typ, path, errs, values)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		checkKeys(n.Alias, typ, path, errs, values) // bounded by checkNodeBudget
		return
	}
	values[n.Line] = append(values[n.Line], keyedNode{path, n})
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the zero value of anything
	}
	where := path
	if where == "" {
		where = "the config"
	}
	switch typ.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			errs.add(n.Line, "%s: want a mapping of keys, got %s", where, nodeKind(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" { // <<: *base, or <<: [*a, *b]
				if v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						checkKeys(m, typ, path, errs, values)
					}
				} else {
					checkKeys(v, typ, path, errs, values)
				}
				continue
			}
			f, ok := yamlField(typ, k.Value)
			if !ok {
				msg := "field " + k.Value + " not found"
				if path != "" {
					msg += " in " + path
				}
				errs.add(k.Line, "%s", msg)
				continue
			}
			checkKeys(v, f.Type, joinKey(path, k.Value), errs, values)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			errs.add(n.Line, "%s: want a list, got %s", where, nodeKind(n))
			return
		}
		for i, c := range n.Content {
			checkKeys(c, typ.Elem(), fmt.Sprintf("%s[%d]", path, i), errs, values)
		}
	case reflect.Map, reflect.Interface:
		// None in the config; the decoder checks them.
	default:
		if n.Kind != yaml.ScalarNode {
			errs.add(n.Line, "%s: want %s, got %s", where, wantOf(typ.String()), nodeKind(n))
		}
	}
}

// yamlField returns the field of struct typ that YAML key name decodes into.
func yamlField(typ reflect.Type, name string) (reflect.StructField, bool) {
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "-" {
			continue
		}
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			if f, ok := yamlField(f.Type, name); ok {
				return f, true
			}
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		if tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// nodeKind names what n is, for errors.
func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

// typeError matches the decoder's "line 3: cannot unmarshal !!str `soon`
// into time.Duration" (a value of more than 10 bytes is cut to 7 and "...").
var typeError = regexp.MustCompile("^line ([0-9]+): cannot unmarshal (!\\S*)(?: `(.*)`)? into (.+)$")

// yamlGoType is a Go type in a YAML error that typeError did not match.
var yamlGoType = regexp.MustCompile(` (?:into|in type) [*\[\]]*(?:main|time|map|struct)[^ ]*`)

// typeErrorMessage rewrites one of the decoder's type errors for people:
// the key instead of a Go type, what the key wants and what it got.
func typeErrorMessage(m string, values map[int][]keyedNode) (int, string) {
	sm := typeError.FindStringSubmatch(m)
	if sm == nil {
		// Whatever else yaml says, never a Go type's name.
		return 0, yamlGoType.ReplaceAllString(m, "")
	}
	line, _ := strconv.Atoi(sm[1])
	tag, value, goType := sm[2], sm[3], sm[4]
	got := map[string]string{"!!seq": "a list", "!!map": "a mapping"}[tag]
	switch {
	case got != "":
	case !strings.HasPrefix(tag, "!!"):
		got = "a value with the YAML tag " + tag
	default:
		got = "`" + value + "`"
	}
	key := ""
	for _, v := range values[line] {
		cut, short := strings.CutSuffix(value, "...")
		if v.path != "" && (v.node.Value == value || short && strings.HasPrefix(v.node.Value, cut) ||
			tag == "!!seq" && v.node.Kind == yaml.SequenceNode || tag == "!!map" && v.node.Kind == yaml.MappingNode) {
			key = v.path
			break
		}
	}
	if key == "" {
		return line, fmt.Sprintf("want %s, got %s", wantOf(goType), got)
	}
	return line, fmt.Sprintf("%s: want %s, got %s", key, wantOf(goType), got)
}

// wantOf says what a value of the Go type named t is, in the config's
// words.
func wantOf(t string) string {
	t = strings.TrimLeft(t, "*")
	switch {
	case t == "time.Duration":
		return "a duration such as 250ms, 30s or 1m30s"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case strings.HasPrefix(t, "main."), strings.HasPrefix(t, "struct"):
		return "a mapping of keys"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	}
	return "another kind of value"
}

// lineErrors collects a config's errors, reported in file order.
type lineErrors []lineError

type lineError struct {
	line int // 0: none
	msg  string
}

func (e *lineErrors) add(line int, format string, args ...any) {
	*e = append(*e, lineError{line, fmt.Sprintf(format, args...)})
}

func (e *lineErrors) addMsg(line int, msg string) {
	*e = append(*e, lineError{line, msg})
}

// err returns the errors as one, by line, the first maxShown of them.
func (e lineErrors) err() error {
	const maxShown = 10
	if len(e) == 0 {
		return nil
	}
	slices.SortStableFunc(e, func(a, b lineError) int { return a.line - b.line })
	msgs := make([]string, 0, min(len(e), maxShown)+1)
	for _, le := range e[:min(len(e), maxShown)] {
		m := strings.ReplaceAll(le.msg, "\n", `\n`)
		if le.line > 0 {
			m = fmt.Sprintf("line %d: %s", le.line, m)
		}
		msgs = append(msgs, m)
	}
	if len(e) > maxShown {
		msgs = append(msgs, fmt.Sprintf("and %d more", len(e)-maxShown))
	}
	return errors.New(strings.Join(msgs, "; "))
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
	for i, k := range c.Ingest.Keys {
		if k.PinClass && k.Class == "" {
			return c.keyErr(fmt.Sprintf("ingest.keys[%d].pin_class", i),
				fmt.Errorf("true without a class (source %q): set class to the class every event of the key goes to", k.Source))
		}
	}
	if key, err := c.Admin.check(c.Listen); err != nil {
		return c.keyErr(key, err)
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
	dicts    map[string]aggregator.DictMode // by class; auto if not named
	spool    aggregator.SpoolOptions
	ingest   ingest.Options
	nats     ingest.NATSOptions
	hasNATS  bool
	tls      *tlsReloader  // nil without tls.cert_file
	natsOpts []nats.Option // upstream TLS and credentials
	stream   aggregator.StreamOptions
	admin    []byte // the admin token; nil without admin.token_file
	// inflightFrom says where ingest.MaxInflightBytes came from, for the
	// log: the config, or the memory limit it was derived from.
	inflightFrom string
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
	r.dicts = dictModes(c.Classes)
	if r.spool, err = c.Spool.options(fsync); err != nil {
		return nil, c.fileErr(c.keyErr("spool", err))
	}
	if r.ingest, err = c.Ingest.options(c.Node, r.classes); err != nil {
		if ke, ok := errors.AsType[*keyPathError](err); ok {
			return nil, c.fileErr(c.keyErr("ingest."+ke.key, ke.err))
		}
		return nil, c.fileErr(c.keyErr("ingest", err))
	}
	mem, memFrom := memoryLimit()
	if r.ingest.MaxInflightBytes, r.inflightFrom, err = c.Limits.inflightBudget(mem, memFrom, r.ingest); err != nil {
		return nil, c.fileErr(c.keyErr("limits", err))
	}
	if err := c.Limits.check(r.ingest); err != nil {
		return nil, c.fileErr(c.keyErr("limits", err))
	}
	r.ingest.MaxExpansion = c.Limits.MaxExpansion
	if _, err := ingest.NewPipeline(nil, r.ingest); err != nil {
		return nil, c.fileErr(c.keyErr("ingest.keys", err))
	}
	r.nats, r.hasNATS = c.NATSIngest.natsOptions(c.Subject)
	if r.tls, err = c.TLS.reloader(); err != nil {
		return nil, c.fileErr(c.keyErr("tls", err))
	}
	if r.natsOpts, err = c.UpstreamAuth.options(); err != nil {
		return nil, c.fileErr(c.keyErr("upstream_auth", err))
	}
	var key string
	if r.stream, key, err = c.UpstreamStream.options(); err != nil {
		return nil, c.fileErr(c.keyErr(strings.TrimSuffix("upstream_stream."+key, "."), err))
	}
	if r.admin, err = c.Admin.token(); err != nil {
		return nil, c.fileErr(c.keyErr("admin.token_file", err))
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
