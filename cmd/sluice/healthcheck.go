package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runHealthcheck asks a node's /healthz and succeeds only on 200: the
// container image's HEALTHCHECK, which has no shell or curl to do it.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url, timeout := healthcheckFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice healthcheck [flags]\n\n"+
			"GETs the node's /healthz; exit status 0 when it answers 200, 1 otherwise.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "sluice healthcheck: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", *url, res.Status)
	}
	_, err = fmt.Fprintln(stdout, "ok")
	return err
}

// healthcheckFlags defines sluice healthcheck's flags on fs.
func healthcheckFlags(fs *flag.FlagSet) (url *string, timeout *time.Duration) {
	url = fs.String("url", "http://127.0.0.1:8080/healthz", "the node's health endpoint")
	timeout = fs.Duration("timeout", 3*time.Second, "give up after this long")
	return url, timeout
}
