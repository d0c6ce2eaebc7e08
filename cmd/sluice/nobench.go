//go:build !sluicebench

package main

import (
	"context"
	"fmt"
	"io"
)

// The production build has no `sluice bench`: the suite's harness
// re-executes the binary as a NATS server on an environment variable,
// which a production binary must never do. bench.go and benchplan.go are
// built with the sluicebench tag.

// benchUsage is empty: `sluice help` lists no bench.
const benchUsage = ""

// serveBenchChild is false: this binary never turns into the bench's NATS
// server.
func serveBenchChild() bool { return false }

func runBench(_ context.Context, _ []string, _, stderr io.Writer) error {
	fmt.Fprint(stderr, "sluice bench is not in this build: the bench is built with a tag of its own, so that the\n"+
		"production binary carries none of its scaffolding. From a checkout of the repository:\n\n"+
		"  go run -tags sluicebench ./cmd/sluice bench [flags]\n")
	return errUsage
}
