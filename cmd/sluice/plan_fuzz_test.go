package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/priority"
)

// namedErrLine is what every line of a plan error starts with: its line in
// the inventory, or the key it is about.
var namedErrLine = regexp.MustCompile(`^(line \d+: |yaml: line \d+: |(yaml: )?(headroom|cores|link|hops|flows|classes|spool)(\[\d+\])?[.:\[ ]|empty inventory: want hops and flows$|inventory: larger than )`)

// FuzzParseInventory: parseInventory and evaluate never panic on any
// input; every error names a line or a key, in plain words; a plan that
// succeeds has a recommended config that `sluice run --config` loads and
// resolves, with the plan's classes, rates and ceilings, and it encodes as
// JSON and text; the spool model sends no more than the target and no
// class more than its demand.
// The seed corpus is testdata/fuzz/FuzzParseInventory (the testdata
// inventories and tricky cases) plus the testdata inventories themselves.
func FuzzParseInventory(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "plan", "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// The inventory's directory holds a short sample: zstd at level best
	// on all of testdata's would make an execution take 20 ms.
	dir := f.TempDir()
	sample, err := os.ReadFile(filepath.Join("testdata", "plan", "sample.ndjson"))
	if err != nil {
		f.Fatal(err)
	}
	sample = bytes.Join(sampleLines(sample)[:40], []byte("\n"))
	if err := os.WriteFile(filepath.Join(dir, "sample.ndjson"), sample, 0o644); err != nil {
		f.Fatal(err)
	}
	config := filepath.Join(dir, "sluice.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, lines, err := parseInventory(data)
		if err != nil {
			checkNamed(t, err, data)
			return
		}
		// Samples: the testdata's, or one that does not exist; never a
		// path the input chooses (a FIFO or /dev/zero would block or
		// read 64 MiB).
		for i := range inv.Flows {
			if s := inv.Flows[i].Sample; s != "" && s != "sample.ndjson" {
				inv.Flows[i].Sample = "missing.ndjson"
			}
		}
		p, err := evaluate(inv, lines, filepath.Join(dir, "fuzz.yaml"))
		if err != nil {
			checkNamed(t, err, data)
			return
		}
		if p.Spool.SentBytesPerSec > float64(p.TargetBytesPerSec)*(1+1e-9)+1e-6 {
			t.Fatalf("sends %v B/s, target %d\n%s", p.Spool.SentBytesPerSec, p.TargetBytesPerSec, data)
		}
		for _, c := range p.Classes {
			if c.SentBytesPerSec > c.DemandBytesPerSec*(1+1e-9)+1e-6 || c.SentBytesPerSec < 0 || c.SpoolGrowthPerSec < 0 {
				t.Fatalf("class %+v\n%s", c, data)
			}
		}
		if _, err := json.Marshal(p); err != nil {
			t.Fatalf("json: %v\n%s", err, data)
		}
		if err := p.writeText(io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := parseConfig([]byte(p.Config)); err != nil {
			t.Fatalf("parseConfig: %v\ninventory:\n%s\nconfig:\n%s", err, data, p.Config)
		}
		if err := os.WriteFile(config, []byte(p.Config), 0o644); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("sluice run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var c nodeConfig
		c.flags(fs)
		c.Config = config
		if err := c.load(fs); err != nil {
			t.Fatalf("load: %v\ninventory:\n%s\nconfig:\n%s", err, data, p.Config)
		}
		r, err := c.resolve()
		if err != nil {
			t.Fatalf("resolve: %v\ninventory:\n%s\nconfig:\n%s", err, data, p.Config)
		}
		if len(r.classes) != len(p.Classes) {
			t.Fatalf("%d classes, planned %d\n%s", len(r.classes), len(p.Classes), p.Config)
		}
		for i, cl := range r.classes {
			pc := p.Classes[i]
			if cl.Name != pc.Name || cl.Rate.BytesPerSec != pc.RateBytesPerSec || cl.Ceil.BytesPerSec != pc.CeilBytesPerSec {
				t.Fatalf("class %d: %s rate %d ceil %d, planned %+v\n%s", i, cl.Name, cl.Rate.BytesPerSec, cl.Ceil.BytesPerSec, pc, p.Config)
			}
		}
		if err := priority.Validate(r.classes, priority.Rate{BytesPerSec: int64(c.LinkMbit * 1e6 / 8)}); err != nil {
			t.Fatal(err)
		}
	})
}

func checkNamed(t *testing.T, err error, data []byte) {
	t.Helper()
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if !namedErrLine.MatchString(line) {
			t.Fatalf("error names no line or key: %q\nin: %v\ninventory: %q", line, err, data)
		}
		// Go's type names, as the decoder spells them.
		for _, bad := range []string{"main.", "cannot unmarshal", " into float64", " into int", " into string"} {
			if strings.Contains(line, bad) {
				t.Fatalf("error has %q: %q\ninventory: %q", bad, line, data)
			}
		}
	}
}
