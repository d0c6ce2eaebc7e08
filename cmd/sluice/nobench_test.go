//go:build !sluicebench

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestProductionBuildHasNoBench: without the sluicebench tag, `sluice
// bench` says where the bench is instead of running, help does not list
// it, and the binary never turns into the bench's NATS server.
func TestProductionBuildHasNoBench(t *testing.T) {
	var out, errs bytes.Buffer
	if err := run(context.Background(), []string{"bench", "--scale", "0.1"}, &out, &errs); err != errUsage {
		t.Errorf("sluice bench: err %v, want usage", err)
	}
	if !strings.Contains(errs.String(), "go run -tags sluicebench ./cmd/sluice bench") {
		t.Errorf("sluice bench does not say how to run the bench:\n%s", errs.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"help"}, &out, &out); err != nil || strings.Contains(out.String(), "sluice bench") {
		t.Errorf("sluice help (%v) lists bench:\n%s", err, out.String())
	}
	t.Setenv("SLUICE_BENCH_NATS_DIR", t.TempDir())
	if serveBenchChild() {
		t.Error("the production build served as the bench's NATS server")
	}
}
