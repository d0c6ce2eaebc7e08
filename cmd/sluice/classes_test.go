package main

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
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
		// A rate without a unit: a forgotten % is not 35 bytes/s.
		{"classes:\n  - name: ingest\n    rate: 35\n", `line 2: classes[0] (ingest): rate: "35": a rate needs a unit: 35% of link_mbit, or 35B/s`},
		{"classes:\n  - name: ingest\n    ceil: 1.5e6\n", `ceil: "1.5e6": a rate needs a unit`},
		{"classes:\n  - name: ingest\n    rate: 35/s\n", `rate: "35/s": a rate needs a unit`},
		{"classes:\n  - name: ingest\n    rate: 2Mbps\n", `unknown unit "Mbps": did you mean Mbit?`},
		{"classes:\n  - name: ingest\n    rate: 2MBps\n", `unknown unit "MBps": did you mean MB/s?`},
		{"classes:\n  - name: ingest\n    rate: 3kb\n", `unknown unit "kb": did you mean KB?`},
		// A misspelt default class: the error is about it, not the routing.
		{"classes:\n  - name: critcal\n  - name: ingest\n", "line 2: classes[0] (critcal): did you mean critical? \"critcal\" is not a default class"},
		{"classes:\n  - name: critcal\n", "line 2: classes[0] (critcal): did you mean critical?"},
		{"classes:\n  - name: ingets\n  - name: critical\n", "classes[0] (ingets): did you mean ingest?"},
		// Every problem of an entry, each in the config's words.
		{"classes:\n  - name: a\n    priority: 9\n    compression: bst\n", "line 2: classes[0] (a): priority: 9: want 0 (served first) to 7\nline 2: classes[0] (a): compression: \"bst\": did you mean best?"},
		{"classes:\n  - name: a\n    overflow: drop_olde\n", `overflow: "drop_olde": did you mean drop_oldest?`},
		{"classes:\n  - name: a\n    dictionary: of\n", `line 2: classes[0] (a): dictionary: "of": did you mean on?`},
		{"classes:\n  - name: a\n    dictionary: yes\n", `dictionary: "yes": want auto, on or off`},
		{"classes:\n  - name: a\n    expire: dorp\n", `expire: "dorp": did you mean drop?`},
		{"classes:\n  - name: a\n    plan: [none, dfer, none, none]\n", `plan: level 1: "dfer": did you mean defer?`},
		{"classes:\n  - name: a\n    batch: {max_events: -1, linger: -1s}\n", "batch.max_events: -1: want ≥ 1 (0 = the default, 1000)\nline 2: classes[0] (a): batch.linger: -1s: want a duration ≥ 0"},
		{"classes:\n  - name: a\n    fields: [{path: a..b, priority: 1}]\n", `line 2: classes[0] (a): fields[0].path: "a..b": empty segment`},
		{"classes:\n  - name: a\n    weight: -1\n    rate_msgs: -2\n", "weight: -1: want ≥ 1 (0 counts as 1)\nline 2: classes[0] (a): rate_msgs: -2: want batches/s ≥ 0"},
		{"classes:\n  - name: ingest\n  - name: ingest\n", "line 3: classes[1] (ingest): the same name as classes[0] (line 2)"},
		{"link_mbit: 1\nclasses:\n  - name: a\n    rate: 2Mbit\n", "line 3: classes[0] (a): rate 250000B/s (2 Mbit/s) is above the link (link_mbit 1, 125000B/s)"},
		{"link_mbit: 1\nclasses:\n  - name: a\n    rate: 60KB/s\n    ceil: 50KB/s\n", "line 3: classes[0] (a): ceil 50000B/s (400 kbit/s) is below rate 60000B/s (480 kbit/s)"},
		{"link_mbit: 1\nclasses:\n  - name: a\n    rate: 70%\n  - name: b\n    rate: 70%\n", "classes: the rates add up to 175000B/s (1.4 Mbit/s), above the link (link_mbit 1, 125000B/s)"},
		{"link_mbit: 10\nclasses:\n  - name: critical\n    ceil: 0\n  - name: ingest\n", "line 3: classes[0] (critical): a critical class needs a ceil (at most 812500B/s (6.5 Mbit/s))"},
		{"link_mbit: 10\nclasses:\n  - name: critical\n    ceil: 9Mbit\n  - name: ingest\n", "line 3: classes[0] (critical): ceil 1125000B/s (9 Mbit/s) plus the other classes' rates 437500B/s (3.5 Mbit/s) is above the link (link_mbit 10, 1250000B/s): a critical ceil may be at most 812500B/s"},
	} {
		f, err := parseConfig([]byte(tt.yaml))
		if err == nil {
			_, err = buildClasses(f.Classes, int64(f.LinkMbit*1e6/8))
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v\nwant it to contain %q", tt.yaml, err, tt.want)
		} else {
			checkPlainWords(t, err)
		}
	}
}

// checkPlainWords fails when a config error speaks Go or YAML: type names
// (main.classConfig, int64, float64), tags (!!str), package prefixes
// (priority: invalid class), struct dumps or fmt's bad verbs.
func checkPlainWords(t *testing.T, err error) {
	t.Helper()
	for _, bad := range []string{"main.", "!!", "int64", "float64", "[]string", "*string", "priority: invalid", "%!", "{MaxEvents", "unmarshal"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("error has %q: %v", bad, err)
		}
	}
}

// TestClassConfigPlainWords: `sluice validate` on files whose classes have
// every kind of wrong value says what is wrong in the config's words.
func TestClassConfigPlainWords(t *testing.T) {
	for _, yml := range []string{
		"classes:\n  - 3\n",
		"classes: x\n",
		"classes:\n  - name: [a]\n",
		"classes:\n  - name: a\n    priority: high\n",
		"classes:\n  - name: a\n    fields: [{path: x, priority: high}]\n",
		"classes:\n  - name: a\n    fields: 3\n",
		"classes:\n  - name: a\n    plan: {a: 1}\n",
		"classes:\n  - name: a\n    rate: [1]\n",
		"classes:\n  - name: a\n    rate: {x: 1}\n",
		"classes:\n  - name: a\n    rate: !!float 3\n",
		"classes:\n  - name: a\n    rate: !!binary aGk=\n",
		"classes:\n  - name: a\n    batch: 3\n",
		"classes:\n  - name: a\n    batch: {linger: 5}\n",
		"classes:\n  - name: a\n    max_age: 5\n",
		"classes:\n  - name: a\n    critical: maybe\n",
		"classes:\n  - name: a\n    rate_msgs: 1.5e40\n",
		"classes:\n  - name: a\n    weight: -3\n    batch: {max_events: -1}\n",
	} {
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"validate", path}, &stdout, &stderr)
		if err == nil {
			t.Errorf("%q: no error", yml)
			continue
		}
		if !strings.Contains(err.Error(), "line ") {
			t.Errorf("%q: no line: %v", yml, err)
		}
		checkPlainWords(t, err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"critical", "critical", 0},
		{"critcal", "critical", 1}, {"ingset", "ingest", 1}, {"crtiical", "critical", 1}, {"critcl", "critical", 2},
		{"digest", "ingest", 2}, {"kitten", "sitting", 3}, {"ca", "abc", 3}, {"żółw", "żólw", 1},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := editDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
	defaults := []string{"critical", "ingest", "replication", "backfill"}
	for _, tt := range []struct{ s, want string }{
		{"critcal", "critical"}, {"Critical", "critical"}, {"crtiical", "critical"}, {"critcl", "critical"}, {"ingets", "ingest"},
		{"replicaton", "replication"}, {"backfil", "backfill"}, {"INGEST", "ingest"},
		{"critical", ""}, {"digest", ""}, {"telemetry", ""}, {"x", ""}, {"", ""}, {"ingest_v2", ""},
	} {
		if got := didYouMean(tt.s, defaults); got != tt.want {
			t.Errorf("didYouMean(%q) = %q, want %q", tt.s, got, tt.want)
		}
	}
}

// TestClassOutKeepsEveryKey: the plan's recommended config writes every
// key of a classes entry the inventory gave (classOut), so a key added to
// classConfig must be added there too, or the written config silently
// loses it (as it once lost expire).
func TestClassOutKeepsEveryKey(t *testing.T) {
	keys := func(typ reflect.Type) []string {
		var out []string
		for f := range typ.Fields() {
			if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag != "" {
				out = append(out, tag)
			}
		}
		return out
	}
	want := slices.DeleteFunc(keys(reflect.TypeFor[classConfig]()), func(k string) bool { return k == "name" || k == "rate" || k == "ceil" })
	if got := keys(reflect.TypeFor[classOut]()); !slices.Equal(got, want) {
		t.Errorf("classOut keys %q\nclassConfig's (but name, rate, ceil) %q", got, want)
	}
	if got, want := keys(reflect.TypeFor[batchOut]()), keys(reflect.TypeFor[batchConfig]()); !slices.Equal(got, want) {
		t.Errorf("batchOut keys %q, batchConfig's %q", got, want)
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
		{"1MiB/s", 1 << 20}, {"1500B/s", 1500}, {"1500B", 1500}, {"10%", 1_000_000}, {"12.5%", 1_250_000},
		{"0", 0}, {"0.0", 0}, {"0/s", 0}, {"0B/s", 0},
	} {
		if got, err := parseRate(tt.s, 10_000_000); err != nil || got != tt.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tt.s, got, err, tt.want)
		}
	}
	// A number without a unit is refused (was bytes/s): 35 for 35% was
	// a guarantee of 35 B/s.
	for _, s := range []string{"35", "1500", "1e3", "35/s", " 7 ", "NaN", "-1B/s", "inf"} {
		if got, err := parseRate(s, 10_000_000); err == nil {
			t.Errorf("parseRate(%q) = %d, want an error", s, got)
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

// TestDictModes: each class's dictionary key reaches the node's options;
// a class without one is left to the node's default (auto).
func TestDictModes(t *testing.T) {
	on, off := "on", "off"
	got := dictModes([]classConfig{{Name: "a", Dictionary: &on}, {Name: "b"}, {Name: "c", Dictionary: &off}})
	want := map[string]aggregator.DictMode{"a": aggregator.DictOn, "c": aggregator.DictOff}
	if !maps.Equal(got, want) {
		t.Fatalf("dictModes = %v, want %v", got, want)
	}
}
