package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/priority"
)

// ingestConfig is the "ingest" section of the config file: the keys, the
// routing, the stamp and the limits of the ingest pipeline, which both
// doors (the HTTP endpoints and nats_ingest) share.
type ingestConfig struct {
	// DefaultClass is the class of events nothing else places; default
	// "ingest".
	DefaultClass string `yaml:"default_class"`
	// Keys are the write keys; with none, every request is accepted.
	Keys []keyConfig `yaml:"keys"`
	// Routes pick a class by an event's field values or source endpoint,
	// first match wins.
	Routes []routeConfig `yaml:"routes"`
	// DedupWindow is how long event ids are remembered to drop client
	// retries (default 10m; a negative value turns dedup off), and
	// DedupEntries how many at most (default 1,000,000).
	DedupWindow  time.Duration `yaml:"dedup_window"`
	DedupEntries int           `yaml:"dedup_entries"`
	// MaxBodyBytes, MaxEventBytes and MaxEvents bound a request body, one
	// event, and the events of one request.
	MaxBodyBytes  int64 `yaml:"max_body_bytes"`
	MaxEventBytes int   `yaml:"max_event_bytes"`
	MaxEvents     int   `yaml:"max_events"`
	// Stamp adds "receivedAt" and "sluiceNode" to every event; default true.
	Stamp *bool `yaml:"stamp"`
}

type keyConfig struct {
	Key     string `yaml:"key"`
	KeyFile string `yaml:"key_file"` // a file holding the key, trimmed of surrounding white space
	Source  string `yaml:"source"`
	// Class is the class of the key's events when the request names none;
	// with PinClass, of every event sent with the key (a request naming
	// another class gets 403). Pin the keys that browsers and phones carry.
	Class    string `yaml:"class"`
	PinClass bool   `yaml:"pin_class"`
}

type routeConfig struct {
	Field  string   `yaml:"field"`
	Equals []string `yaml:"equals"`
	Source string   `yaml:"source"`
	Class  string   `yaml:"class"`
}

// natsIngestConfig is the "nats_ingest" section: subjects to ingest from.
type natsIngestConfig struct {
	// URL of the NATS server to subscribe on; default the node's own
	// connection (the embedded server, or --upstream).
	URL           string               `yaml:"url"`
	Subscriptions []subscriptionConfig `yaml:"subscriptions"`
}

type subscriptionConfig struct {
	Subject string `yaml:"subject"`
	Queue   string `yaml:"queue"`
	Class   string `yaml:"class"`
	Stream  string `yaml:"stream"`
	Durable string `yaml:"durable"`
}

// router builds the routing rules of c over classes.
func (c ingestConfig) router(classes []priority.Class) (*priority.Router, error) {
	def := c.DefaultClass
	if def == "" {
		def = ingest.DefaultClass
	}
	names := make([]string, len(classes))
	for i, cl := range classes {
		names[i] = cl.Name
	}
	// A class that is not configured is named where it is written, with a
	// hint: the router's own error said "rule #0" and came after others.
	known := func(key, class string) error {
		if class == "" || slices.Contains(names, class) {
			return nil
		}
		return &keyPathError{key, fmt.Errorf("unknown class %q: %sthe classes are %s", class, hintFor(class, names...), strings.Join(names, ", "))}
	}
	if err := known("default_class", c.DefaultClass); err != nil {
		return nil, err
	}
	rules := make([]priority.Rule, len(c.Routes))
	for i, r := range c.Routes {
		if err := known(fmt.Sprintf("routes[%d].class", i), r.Class); err != nil {
			return nil, err
		}
		rules[i] = priority.Rule{Field: r.Field, Equals: r.Equals, Source: r.Source, Class: r.Class}
	}
	for i, k := range c.Keys {
		if err := known(fmt.Sprintf("keys[%d].class", i), k.Class); err != nil {
			return nil, err
		}
	}
	rt, err := priority.NewRouter(classes, rules, def)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	return rt, nil
}

// keyPathError is an error about the value of one key, named by its path
// under the section ("routes[0].class"), so that the caller can give the
// line it is on.
type keyPathError struct {
	key string
	err error
}

func (e *keyPathError) Error() string { return e.key + ": " + e.err.Error() }
func (e *keyPathError) Unwrap() error { return e.err }

// keys reads the write keys of c, from the file or from key_file.
func (c ingestConfig) keys() ([]ingest.Key, error) {
	keys := make([]ingest.Key, 0, len(c.Keys))
	for i, k := range c.Keys {
		secret := k.Key
		switch {
		case k.Key != "" && k.KeyFile != "":
			return nil, fmt.Errorf("keys[%d] (source %q): both key and key_file; want one", i, k.Source)
		case k.KeyFile != "":
			b, err := os.ReadFile(k.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("keys[%d] (source %q): %w", i, k.Source, err)
			}
			secret = strings.TrimSpace(string(b))
		}
		keys = append(keys, ingest.Key{Key: secret, Source: k.Source, Class: k.Class, PinClass: k.PinClass})
	}
	return keys, nil
}

// options returns the handler's options for node, with the file's section
// over the defaults.
func (c ingestConfig) options(node string, classes []priority.Class) (ingest.Options, error) {
	rt, err := c.router(classes)
	if err != nil {
		return ingest.Options{}, err
	}
	keys, err := c.keys()
	if err != nil {
		return ingest.Options{}, err
	}
	return ingest.Options{
		DefaultClass:  rt.Default(),
		Router:        rt,
		Keys:          keys,
		Node:          node,
		NoStamp:       c.Stamp != nil && !*c.Stamp,
		DedupWindow:   c.DedupWindow,
		DedupEntries:  c.DedupEntries,
		MaxBodyBytes:  c.MaxBodyBytes,
		MaxEventBytes: c.MaxEventBytes,
		MaxEvents:     c.MaxEvents,
	}, nil
}

// natsOptions returns the NATS source's options, or false when no subject
// is configured. Routing, stamps and event limits are the ingest
// pipeline's, which the source shares with the HTTP endpoints.
func (c natsIngestConfig) natsOptions(subject string) (ingest.NATSOptions, bool) {
	if len(c.Subscriptions) == 0 {
		return ingest.NATSOptions{}, false
	}
	subs := make([]ingest.Subscription, len(c.Subscriptions))
	for i, s := range c.Subscriptions {
		subs[i] = ingest.Subscription{Subject: s.Subject, Queue: s.Queue, Class: s.Class, Stream: s.Stream, Durable: s.Durable}
	}
	return ingest.NATSOptions{
		Subscriptions: subs,
		// The node publishes to SUBJECT.<class>: never ingest that.
		ExcludeSubjects: []string{subject + ".>"},
	}, true
}
