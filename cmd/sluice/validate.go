package main

import (
	_ "embed"
	"flag"
	"fmt"
	"io"
)

// defaultConfig is `sluice config default`: every key with its default.
//
//go:embed default.yaml
var defaultConfig []byte

// runValidate checks a config file as `sluice run --config FILE` would,
// building every part's options, without starting anything.
func runValidate(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || args[0] == "" || args[0][0] == '-' {
		fmt.Fprintln(stderr, "usage: sluice validate FILE")
		return errUsage
	}
	fs := flag.NewFlagSet("sluice validate", flag.ContinueOnError)
	var c nodeConfig
	c.flags(fs)
	c.Config = args[0]
	if err := c.load(fs); err != nil {
		return err
	}
	r, err := c.resolve()
	if err != nil {
		return err
	}
	names := make([]string, len(r.classes))
	for i, cl := range r.classes {
		names[i] = cl.Name
	}
	fmt.Fprintf(stdout, "%s: ok (classes %v, %d write keys, %d routes, %d NATS subscriptions)\n",
		c.Config, names, len(r.ingest.Keys), len(c.Ingest.Routes), len(r.nats.Subscriptions))
	return nil
}
