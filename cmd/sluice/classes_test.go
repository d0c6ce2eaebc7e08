package main

import (
	"bytes"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// The default config file is the defaults: parsed, its classes are
// priority.Defaults for any link, and its keys are the flags' defaults.
func TestDefaultConfig(t *testing.T) {
	f, err := parseConfig(defaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range []int64{0, 100e6 / 8, 2_500_001} {
		got, err := buildClasses(f.Classes, link)
		if err != nil {
			t.Fatalf("link %d: %v", link, err)
		}
		want := priority.Defaults(link)
		for i := range got {
			if len(got[i].Fields) == 0 {
				got[i].Fields = nil
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("link %d B/s: classes of default.yaml\n%+v\nwant priority.Defaults\n%+v", link, got, want)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var flags nodeConfig
	flags.flags(fs)
	checks := []struct {
		key       string
		file, def any
	}{
		{"data_dir", f.DataDir, flags.DataDir}, {"listen", f.Listen, flags.Listen},
		{"nats_listen", f.NATSListen, flags.NATSListen}, {"stream", f.Stream, flags.Stream},
		{"subject", f.Subject, flags.Subject}, {"fsync", f.Fsync, flags.Fsync},
		{"drain_timeout", f.DrainTimeout, flags.DrainTimeout}, {"log_format", f.LogFormat, flags.LogFormat},
		{"log_level", f.LogLevel, flags.LogLevel}, {"headroom", f.Headroom, flags.Headroom},
		{"link_mbit", f.LinkMbit, flags.LinkMbit}, {"unshaped", f.Unshaped, flags.Unshaped},
	}
	for _, c := range checks {
		if c.file != c.def {
			t.Errorf("%s: default.yaml says %v, the flag's default is %v", c.key, c.file, c.def)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"config", "default"}, &out, &out); err != nil || !bytes.Equal(out.Bytes(), defaultConfig) {
		t.Errorf("sluice config default: %v", err)
	}
}

func TestClassConfigErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"classes:\n  - name: ingest\n    rate: 2Mbps\n", `line 2: classes[0] (ingest): rate: "2Mbps": unknown unit "Mbps"`},
		{"classes:\n  - name: a\n  - name: b\n    plan: [none, defer]\n", `line 3: classes[1] (b): plan: 2 actions; want one per level 0..3`},
		{"classes:\n  - name: b\n    plan: [none, drop_fields, defer, defer]\n", `level 1: "drop_fields": want none, drop_fields:N, throttle or defer`},
		{"classes:\n  - name: b\n    max_bytes: lots\n", `max_bytes: "lots": want a size`},
		{"classes:\n  - name: b\n    colour: red\n", "line 3: field colour not found"},
		{"classes:\n  - name: b\n    rate: 150%\n", "want a percentage of the link in [0, 100]"},
		{"link_mbit: 10\nclasses:\n  - name: a\n    rate: 8Mbit\n  - name: b\n    rate: 8Mbit\n", "classes: "},
		{"classes:\n  - name: ''\n", "name is empty"},
		{"classes:\n  - name: critical\n    max_age: 5m\n    expire: delete\n", `line 2: classes[0] (critical): expire: "delete": want demote`},
		{"classes:\n  - name: critical\n    max_age: -5m\n", `line 2: classes[0] (critical): max_age: -5m0s: want a duration ≥ 0`},
	} {
		f, err := parseConfig([]byte(tt.yaml))
		if err == nil {
			_, err = buildClasses(f.Classes, int64(f.LinkMbit*1e6/8))
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v\nwant it to contain %q", tt.yaml, err, tt.want)
		}
	}
}

// TestClassExpiry: no class expires by default; max_age alone demotes (sends
// old events later, labelled), and drop must be asked for.
func TestClassExpiry(t *testing.T) {
	for _, tt := range []struct {
		yaml   string
		maxAge time.Duration
		expire string
	}{
		{"classes:\n  - name: critical\n", 0, priority.ExpireDemote},
		{"classes:\n  - name: ingest\n    max_age: 5m\n", 5 * time.Minute, priority.ExpireDemote},
		{"classes:\n  - name: ingest\n    max_age: 5m\n    expire: drop\n", 5 * time.Minute, priority.ExpireDrop},
		{"classes:\n  - name: mine\n    max_age: 1h\n", time.Hour, ""}, // "" is demote
	} {
		f, err := parseConfig([]byte(tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		cs, err := buildClasses(f.Classes, 0)
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if cs[0].MaxAge != tt.maxAge || cs[0].Expire != tt.expire {
			t.Errorf("%q: max age %v, expire %q; want %v, %q", tt.yaml, cs[0].MaxAge, cs[0].Expire, tt.maxAge, tt.expire)
		}
	}
	for _, c := range priority.Defaults(0) {
		if c.MaxAge != 0 {
			t.Errorf("default class %s expires after %v: a default must not throw acknowledged events away", c.Name, c.MaxAge)
		}
	}
}

func TestParseRateAndSize(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want int64
	}{
		{"2Mbit", 250_000}, {"2Mbit/s", 250_000}, {"500kbit", 62_500}, {"250KB/s", 250_000},
		{"1MiB/s", 1 << 20}, {"1500", 1500}, {"10%", 1_000_000}, {"12.5%", 1_250_000}, {"0", 0},
	} {
		if got, err := parseRate(tt.s, 10_000_000); err != nil || got != tt.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tt.s, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		s    string
		want int64
	}{{"64KiB", 64 << 10}, {"10GB", 10e9}, {"1048576", 1 << 20}, {"0", 0}} {
		if got, err := parseSize(tt.s); err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.s, got, err, tt.want)
		}
	}
}
