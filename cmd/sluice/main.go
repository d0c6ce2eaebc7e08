// Command sluice is the sluice edge aggregator.
//
//	sluice run             run a node: HTTP ingest → durable spool → NATS JetStream
//	sluice sink            read batches from the stream and write their events as NDJSON
//	sluice validate FILE   check a config file without starting
//	sluice plan FLOWS      evaluate the bottleneck model on a flow inventory
//	sluice spool check DIR report a spool directory, read-only
//	sluice demo            the whole product in one command over an emulated link
//	sluice bench           blast-radius scenarios with baselines, HTML report
//	                       (only in a build with -tags sluicebench)
//	sluice config default  print the default config, every key commented
//
// Run `sluice help` for the flags.
//
// Exit status: 0 done; 1 an error; 2 a bad command line; 3 `sluice run`
// stopped (on SIGINT or SIGTERM) with events left in its spool, which a
// node started on the same data dir sends (its log says, per class, how
// many and why). `sluice spool check` has its own (see its -h).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/aggregator"
)

func main() {
	if serveBenchChild() { // false unless built with -tags sluicebench (see bench.go)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal gets the default action: exit at once
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errNotDrained):
		os.Exit(3) // the log said what was left, and why
	default:
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

// errUsage is returned for bad command lines, after the problem and the
// usage were printed.
var errUsage = errors.New("usage")

// errNotDrained is returned by `sluice run` that stopped with events left
// in the spool, after the log said how many and why: exit status 3, so
// that a supervisor can tell a node that shipped everything (0) from one
// whose data dir still holds events, and neither from a failure (1). Under
// systemd, SuccessExitStatus=3 counts it as a clean stop.
var errNotDrained = errors.New("stopped with events left in the spool")

const usage = usageHead + benchUsage + usageTail

const usageHead = `sluice is an edge aggregator: events go in over HTTP, are made durable in a
local spool, and are shipped in compressed batches to NATS JetStream.

Usage:
  sluice run [flags]           run a node (embedded NATS server unless --upstream is given)
  sluice sink [flags]          write the events of the stream as NDJSON
  sluice validate FILE         check a config file (every key, class, route and key file) without starting
  sluice plan [flags] FLOWS    per-hop load before/after batching, bottleneck, recommended class config
  sluice spool check DIR       report a spool's classes, damaged files and quarantine, read-only
  sluice demo [flags]          the whole product in one command: a node, a degrading link, live lanes
`

const usageTail = `  sluice config default        print the default config file, every key with its default and a comment
  sluice healthcheck [flags]   exit 0 when a node's /healthz answers 200 (a container's health check)
  sluice version               print the version, commit, build date and Go version (also --version)
  sluice help                  print this help

Run 'sluice COMMAND -h' for the flags of a command.

Exit status: 0 done, 1 error, 2 bad command line; 3 when 'sluice run' stopped with
events left in its spool (sent by the next node on the same data dir).
`

// run runs the command line args (without the program name). Output goes
// to stdout, logs and errors to stderr. It returns when the command is done
// or ctx is cancelled and the command has shut down.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		var left uint64
		err := runNode(ctx, rest, stdout, stderr, &nodeHooks{
			stopped: func(r aggregator.ShutdownReport) { left = r.Left() },
		})
		if err == nil && left > 0 {
			return errNotDrained
		}
		return err
	case "sink":
		return runSink(ctx, rest, stdout, stderr)
	case "validate":
		return runValidate(rest, stdout, stderr)
	case "spool":
		return runSpool(rest, stdout, stderr)
	case "plan":
		return runPlan(rest, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "config":
		if len(rest) != 1 || rest[0] != "default" {
			fmt.Fprintf(stderr, "sluice config: want 'sluice config default'\n")
			return errUsage
		}
		_, err := stdout.Write(defaultConfig)
		return err
	case "healthcheck":
		return runHealthcheck(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		return runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// parseFlags parses args with fs, turning the flag package's errors into
// errUsage (the message and usage were printed to fs.Output()).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}
