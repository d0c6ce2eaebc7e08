//go:build sluicebench

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// planBenchInventory's flows offer about 1.3× the link's target after
// compression, so the shaper has to hold the link hop under its headroom;
// the lan hop carries all of them too.
const planBenchInventory = `headroom: 0.8
link: wan
hops:
  - name: wan
    bandwidth: 10Mbit
  - name: lan
    bandwidth: 50Mbit
    packets_per_sec: 2000
flows:
  - name: orders
    class: critical
    events_per_sec: 50
    payload: {mean: 400, p99: 800}
    compression_ratio: 3
    hops: [lan, wan]
  - name: clicks
    class: ingest
    events_per_sec: 1500
    payload: {mean: 800, p99: 2000}
    compression_ratio: 4
    hops: [lan, wan]
  - name: history
    class: backfill
    events_per_sec: 2000
    payload: {mean: 1000, p99: 1000}
    compression_ratio: 2
    hops: [lan, wan]
`

// TestPlanBench feeds the plan's recommended config and its inventory to
// the bench: the node (configured as `sluice run --config` would be) keeps
// every hop under its headroom, and every acknowledged event arrives once.
func TestPlanBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the inventory's flows for 15 s over a link emulator")
	}
	dir := t.TempDir()
	flows := filepath.Join(dir, "flows.yaml")
	os.WriteFile(flows, []byte(planBenchInventory), 0o644)
	pb, err := newPlanBench(flows, "", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The classes are the recommended config's, as sluice run loads them.
	for _, c := range pb.Classes {
		for _, cp := range pb.Plan.Classes {
			if c.Name == cp.Name && (c.Rate.BytesPerSec != cp.RateBytesPerSec || c.Ceil.BytesPerSec != cp.CeilBytesPerSec) {
				t.Errorf("class %s: rate %d ceil %d, plan recommends %d / %d", c.Name, c.Rate.BytesPerSec, c.Ceil.BytesPerSec, cp.RateBytesPerSec, cp.CeilBytesPerSec)
			}
		}
	}
	var out, errs bytes.Buffer
	nodeLog := filepath.Join(dir, "node.log")
	err = runPlanBench(context.Background(), flows, "", 15*time.Second, nodeLog, &out, &errs)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errs.String())
	if err != nil {
		if log, _ := os.ReadFile(nodeLog); len(log) > 0 {
			t.Logf("node log:\n%s", log)
		}
		t.Fatal(err)
	}
	for _, h := range []string{"wan", "lan"} {
		if !strings.Contains(out.String(), h+" ") {
			t.Errorf("no row for hop %s", h)
		}
	}
	if strings.Contains(out.String(), "OVER") {
		t.Error("a hop over its headroom")
	}
}

func TestPlanBenchUsage(t *testing.T) {
	var out, errs bytes.Buffer
	if err := run(context.Background(), []string{"bench", "--plan", "x.yaml", "--duration", "5s"}, &out, &errs); err != errUsage {
		t.Errorf("short duration: %v", err)
	}
	if err := run(context.Background(), []string{"bench", "--config", "x.yaml"}, &out, &errs); err != errUsage {
		t.Errorf("--config without --plan: %v", err)
	}
	if err := run(context.Background(), []string{"bench", "--plan", filepath.Join(t.TempDir(), "missing.yaml")}, &out, &errs); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing inventory: %v", err)
	}
}
