package aggregator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestSubjectMatches(t *testing.T) {
	for _, c := range []struct {
		filter, subject string
		want            bool
	}{
		{"sluice.>", "sluice.critical", true},
		{"sluice.>", "sluice", false},
		{"sluice.*", "sluice.critical", true},
		{"sluice.*", "sluice.critical.x", false},
		{"sluice.critical", "sluice.critical", true},
		{"sluice.critical", "sluice.ingest", false},
		{">", "sluice.ingest", true},
		{"*.ingest", "sluice.ingest", true},
		{"sluice.ingest.>", "sluice.ingest", false},
		{"a.b.c", "a.b", false},
	} {
		if got := subjectMatches(c.filter, c.subject); got != c.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", c.filter, c.subject, got, c.want)
		}
	}
}

// TestCheckStream: each setting that breaks a promise is one finding that
// names the setting, the value found and the value needed; the stream the
// node creates has none.
func TestCheckStream(t *testing.T) {
	o := Options{Stream: "SLUICE", Subject: "sluice", StreamConfig: StreamOptions{Replicas: 3, DuplicateWindow: 10 * time.Minute}}
	subjects := []string{"sluice.critical", "sluice.ingest"}
	good := o.streamConfig()
	if f := checkStream(good, &o.StreamConfig, subjects); f != nil {
		t.Fatalf("the stream the node creates: %q", f)
	}
	for _, c := range []struct {
		name string
		mod  func(*jetstream.StreamConfig)
		want []string // substrings of the one finding
	}{
		{"other subjects", func(c *jetstream.StreamConfig) { c.Subjects = []string{"sluice.critical", "other.>"} },
			[]string{"subjects [sluice.critical other.>]", "do not cover sluice.ingest"}},
		{"no subjects", func(c *jetstream.StreamConfig) { c.Subjects = nil }, []string{"subjects [SLUICE]", "sluice.critical, sluice.ingest"}},
		{"short window", func(c *jetstream.StreamConfig) { c.Duplicates = 2 * time.Minute },
			[]string{"duplicate_window 2m0s", "need at least 10m0s", "9m40s"}},
		{"memory", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, []string{"storage memory", "need file"}},
		{"interest", func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }, []string{"retention interest", "need limits"}},
		{"work queue", func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }, []string{"retention workqueue", "need limits"}},
		{"discard old, max bytes", func(c *jetstream.StreamConfig) { c.Discard, c.MaxBytes = jetstream.DiscardOld, 1<<30 },
			[]string{"discard old with max_bytes 1073741824", "need discard new"}},
		{"discard old, max msgs", func(c *jetstream.StreamConfig) { c.Discard, c.MaxMsgs = jetstream.DiscardOld, 1000 },
			[]string{"max_msgs 1000", "need discard new"}},
		{"per subject", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 100 }, []string{"max_msgs_per_subject 100", "need -1"}},
		{"replicas", func(c *jetstream.StreamConfig) { c.Replicas = 1 }, []string{"replicas 1", "need at least 3"}},
		{"sealed", func(c *jetstream.StreamConfig) { c.Sealed = true }, []string{"sealed true"}},
		{"no ack", func(c *jetstream.StreamConfig) { c.NoAck = true }, []string{"no_ack true"}},
		{"mirror", func(c *jetstream.StreamConfig) { c.Mirror = &jetstream.StreamSource{Name: "UP"} }, []string{`mirror of "UP"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := o.streamConfig()
			c.mod(&cfg)
			f := checkStream(cfg, &o.StreamConfig, subjects)
			if len(f) != 1 {
				t.Fatalf("findings %q, want one", f)
			}
			for _, w := range c.want {
				if !strings.Contains(f[0], w) {
					t.Errorf("finding %q does not say %q", f[0], w)
				}
			}
		})
	}
	// What does not break a promise is no finding.
	for _, c := range []struct {
		name string
		mod  func(*jetstream.StreamConfig)
	}{
		{"longer window", func(c *jetstream.StreamConfig) { c.Duplicates = time.Hour }},
		{"more replicas", func(c *jetstream.StreamConfig) { c.Replicas = 5 }},
		{"discard old, no limit", func(c *jetstream.StreamConfig) { c.Discard, c.MaxBytes = jetstream.DiscardOld, -1 }},
		{"per subject, discard new per subject", func(c *jetstream.StreamConfig) {
			c.MaxMsgsPerSubject, c.Discard, c.DiscardNewPerSubject = 100, jetstream.DiscardNew, true
		}},
		{"max age", func(c *jetstream.StreamConfig) { c.MaxAge = 24 * time.Hour }},
		{"wider subjects", func(c *jetstream.StreamConfig) { c.Subjects = []string{">"} }},
		{"one per class", func(c *jetstream.StreamConfig) { c.Subjects = []string{"sluice.ingest", "sluice.critical"} }},
	} {
		cfg := o.streamConfig()
		c.mod(&cfg)
		if f := checkStream(cfg, &o.StreamConfig, subjects); f != nil {
			t.Errorf("%s: findings %q, want none", c.name, f)
		}
	}
	// Findings add up.
	cfg := o.streamConfig()
	cfg.Duplicates, cfg.Storage, cfg.Replicas = time.Minute, jetstream.MemoryStorage, 1
	if f := checkStream(cfg, &o.StreamConfig, subjects); len(f) != 3 {
		t.Errorf("findings %q, want 3", f)
	}
}

func TestStreamConfigCreated(t *testing.T) {
	o := Options{Stream: "S", Subject: "x.y", StreamConfig: StreamOptions{
		Replicas: 3, Cluster: "east", Tags: []string{"ssd"}, MaxAge: time.Hour, MaxBytes: 1 << 30, DuplicateWindow: time.Minute,
	}}
	c := o.streamConfig()
	if c.Name != "S" || len(c.Subjects) != 1 || c.Subjects[0] != "x.y.>" || c.Replicas != 3 || c.MaxAge != time.Hour ||
		c.MaxBytes != 1<<30 || c.Duplicates != time.Minute || c.Discard != jetstream.DiscardNew ||
		c.Storage != jetstream.FileStorage || c.Retention != jetstream.LimitsPolicy ||
		c.Placement == nil || c.Placement.Cluster != "east" || len(c.Placement.Tags) != 1 || c.Placement.Tags[0] != "ssd" {
		t.Fatalf("%+v", c)
	}
	o.StreamConfig = StreamOptions{DuplicateWindow: time.Minute, Replicas: 1}
	if c := o.streamConfig(); c.Placement != nil || c.MaxBytes != -1 || c.MaxAge != 0 {
		t.Fatalf("no placement and no limits: %+v", c)
	}
}

// TestStreamDefaults: the two names of the duplicate window are one
// setting; the other settings' defaults and bounds.
func TestStreamDefaults(t *testing.T) {
	for _, c := range []struct {
		name   string
		old    time.Duration
		s      StreamOptions
		window time.Duration
		err    string
	}{
		{name: "default", window: 10 * time.Minute},
		{name: "old name", old: time.Minute, window: time.Minute},
		{name: "new name", s: StreamOptions{DuplicateWindow: 2 * time.Minute}, window: 2 * time.Minute},
		{name: "both, equal", old: time.Minute, s: StreamOptions{DuplicateWindow: time.Minute}, window: time.Minute},
		{name: "both, differ", old: time.Minute, s: StreamOptions{DuplicateWindow: 2 * time.Minute}, err: "DuplicateWindow 1m0s and StreamConfig.DuplicateWindow 2m0s differ"},
		{name: "too short", s: StreamOptions{DuplicateWindow: time.Millisecond}, err: "want at least 100ms"},
		{name: "replicas", s: StreamOptions{Replicas: 6}, err: "Replicas 6: want 1 to 5"},
		{name: "max age under window", s: StreamOptions{MaxAge: time.Minute}, err: "MaxAge 1m0s is shorter than the duplicate window 10m0s"},
		{name: "negative", s: StreamOptions{MaxBytes: -1}, err: "negative"},
		{name: "policy", s: StreamOptions{OnMismatch: 7}, err: "OnMismatch Mismatch(7)"},
	} {
		o := Options{DuplicateWindow: c.old, StreamConfig: c.s}
		err := o.setStreamDefaults()
		if c.err != "" {
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want ErrInvalidOptions saying %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || o.DuplicateWindow != c.window || o.StreamConfig.DuplicateWindow != c.window || o.StreamConfig.Replicas != 1 {
			t.Errorf("%s: %v, window %v / %v, replicas %d; want %v, 1", c.name, err, o.DuplicateWindow, o.StreamConfig.DuplicateWindow, o.StreamConfig.Replicas, c.window)
		}
	}
}

func TestParseMismatch(t *testing.T) {
	for s, want := range map[string]Mismatch{"refuse": MismatchRefuse, "warn": MismatchWarn} {
		if m, err := ParseMismatch(s); err != nil || m != want || m.String() != s {
			t.Errorf("%q: %v %v", s, m, err)
		}
	}
	if _, err := ParseMismatch("ignore"); err == nil {
		t.Error("ignore: no error")
	}
}

// TestStreamGate steps the gate through its verdicts; every wait here
// returns without blocking.
func TestStreamGate(t *testing.T) {
	live := t.Context()
	dead, cancel := context.WithCancel(live)
	cancel()
	drain := make(chan struct{})
	close(drain)

	g := newStreamGate()
	if g.wait(dead, nil) {
		t.Fatal("pending gate open")
	}
	if g.wait(dead, drain) {
		t.Fatal("pending gate open on drain")
	}
	g.settle() // the first check could not look
	if !g.wait(live, drain) || g.err() != nil {
		t.Fatal("settled gate closed")
	}
	why := errors.New("bad stream")
	if !g.set(why) || g.set(why) {
		t.Fatal("set: changed wrong")
	}
	if g.wait(live, drain) || g.wait(dead, nil) || !errors.Is(g.err(), why) {
		t.Fatal("refused gate open")
	}
	if !g.set(nil) || !g.wait(live, nil) || g.err() != nil {
		t.Fatal("fixed gate closed")
	}
	g.settle() // no effect once a verdict was had
	g.set(why)
	if g.wait(dead, nil) {
		t.Fatal("settle reopened a refused gate")
	}
	var none *streamGate
	if !none.wait(dead, drain) {
		t.Fatal("nil gate closed")
	}
	if g := newStreamGate(); !g.set(why) || g.wait(live, drain) {
		t.Fatal("first verdict refused: open")
	}
}
