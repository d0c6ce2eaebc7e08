//go:build sluicebench

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/blast"
)

// This file and benchplan.go are `sluice bench`, in a build with the
// sluicebench tag only (nobench.go is the production build's stand-in): the
// suite re-executes the binary as its NATS server (serveBenchChild), which
// the production binary must never become.

// benchUsage is the bench line of `sluice help`.
const benchUsage = "  sluice bench [flags]         blast-radius scenarios against unshaped and naive baselines; HTML report\n"

// serveBenchChild runs the bench's NATS server and returns true if this
// process is one that the suite started (see blast.ServeIfChild).
func serveBenchChild() bool { return blast.ServeIfChild() }

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "sluice-bench", "write report.html, summary.md and the runs' JSON timelines (timelines/) here")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios to run (default all: "+strings.Join(suiteNames(), ", ")+")")
	modes := fs.String("modes", "", "comma-separated modes (default all: sluice, unshaped, naive)")
	scale := fs.Float64("scale", 1, "multiply every duration of the suite (1: about 36 minutes; 0.2 for a quick look)")
	events := fs.String("events", "auto", "ingest events: auto (the real SDK events of $SLUICE_DATA or ../shared/data if present, else synthetic), synthetic, or an NDJSON file")
	results := fs.String("results", "", "also replace the suite section of this Markdown file (bench/RESULTS.md) with the summary")
	planPath := fs.String("plan", "", "instead of the suite: run the flows of this `FLOWS.yaml` inventory at their peak through its link hop and measure every hop against its headroom")
	config := fs.String("config", "", "with --plan: the node's config `file` (default: the config the plan recommends)")
	duration := fs.Duration("duration", 30*time.Second, "with --plan: how long the flows run")
	nodeLog := fs.String("node-log", "", "write the node's debug log (every level change and estimator state) to this `file`; in the suite, one file per run beside it")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice bench [flags]\n\n"+
			"Runs the blast-radius suite: each scenario (steady, launch spike, backfill interference,\n"+
			"replication storm, link step, outage, retry storm, CPU contention, overload after an idle\n"+
			"minute) over an emulated link (most at 20 Mbit/s) to a real NATS server, once with\n"+
			"sluice, once with its shaper off and once as a naive\n"+
			"one-publish-per-event client. Writes an HTML report with plots and a Markdown summary.\n"+
			"With --plan, runs an inventory's flows instead (see docs/plan.md).\n"+
			"Run it on an otherwise idle machine.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *planPath != "" {
		if *duration < 10*time.Second {
			fmt.Fprintln(stderr, "sluice bench: --duration must be at least 10s (5 s of warm-up are not measured)")
			return errUsage
		}
		return runPlanBench(ctx, *planPath, *config, *duration, *nodeLog, stdout, stderr)
	}
	if *config != "" {
		fmt.Fprintln(stderr, "sluice bench: --config needs --plan")
		return errUsage
	}
	o := blast.SuiteOptions{Scale: *scale}
	if *scale <= 0 {
		fmt.Fprintln(stderr, "sluice bench: --scale must be positive")
		return errUsage
	}
	if *scenarios != "" {
		o.Scenarios = strings.Split(*scenarios, ",")
		for _, s := range o.Scenarios {
			if !slices.Contains(suiteNames(), s) {
				fmt.Fprintf(stderr, "sluice bench: unknown scenario %q (have %s)\n", s, strings.Join(suiteNames(), ", "))
				return errUsage
			}
		}
	}
	if *modes != "" {
		for _, m := range strings.Split(*modes, ",") {
			if !slices.Contains(blast.Modes, blast.Mode(m)) {
				fmt.Fprintf(stderr, "sluice bench: unknown mode %q (have sluice, unshaped, naive)\n", m)
				return errUsage
			}
			o.Modes = append(o.Modes, blast.Mode(m))
		}
	}
	var source string
	switch *events {
	case "auto":
		o.Events, source = blast.SuiteEvents()
	case "synthetic":
		source = "synthetic events"
	default:
		evs, err := blast.ReadNDJSON(*events)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return fmt.Errorf("--events %s: no events", *events)
		}
		o.Events, source = evs, *events
	}
	tmp, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o.Dir = tmp
	o.Progress = func(line string) { fmt.Fprintln(stderr, line) }
	o.NodeLog = *nodeLog

	meta := blast.ReportMeta{Command: strings.Join(append([]string{"sluice", "bench"}, args...), " "), Commit: gitCommit(), Started: time.Now(),
		Machine: fmt.Sprintf("%d cores, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version()),
		Events:  source}
	fmt.Fprintf(stderr, "sluice bench: %s; ingest events: %s\n", meta.Machine, source)
	res, err := blast.RunSuite(ctx, o)
	if err != nil {
		return err
	}
	meta.Took = time.Since(meta.Started)

	if err := blast.WriteTimelines(filepath.Join(*out, "timelines"), res); err != nil {
		return err
	}
	var md bytes.Buffer
	if err := blast.WriteMarkdown(&md, res, meta); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "summary.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	var page bytes.Buffer
	if err := blast.WriteHTML(&page, res, meta); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "report.html"), page.Bytes(), 0o644); err != nil {
		return err
	}
	if *results != "" {
		rel, err := filepath.Rel(filepath.Dir(*results), filepath.Join(*out, "report.html"))
		if err != nil {
			rel = filepath.Join(*out, "report.html")
		}
		var sec bytes.Buffer
		fmt.Fprintf(&sec, "```sh\n%s\n```\n\n", meta.Command)
		fmt.Fprintf(&sec, "Generated by that command at commit %s, %s, in %s on %s. Plots of every run: [%s](%s).\n\n",
			meta.Commit, meta.Started.UTC().Format("2006-01-02 15:04 MST"), meta.Took.Round(time.Second), meta.Machine, rel, rel)
		sec.Write(md.Bytes())
		if err := blast.UpdateResults(*results, sec.Bytes()); err != nil {
			return err
		}
	}
	stdout.Write(md.Bytes())
	fmt.Fprintf(stdout, "\nreport: %s\n", filepath.Join(*out, "report.html"))

	var failed []string
	for _, r := range res {
		for _, m := range blast.Modes {
			if f := r.Figures(m); f != nil && (f.Lost > 0 || f.Duplicates > 0) {
				failed = append(failed, r.Spec.Name+"/"+string(m)+": "+f.Verdict())
			}
		}
	}
	if len(failed) > 0 {
		return errors.New("exactly-once violated: " + strings.Join(failed, "; "))
	}
	return nil
}

func suiteNames() []string {
	var names []string
	for _, s := range blast.SuiteScenarios(1, nil) {
		names = append(names, s.Name)
	}
	return names
}

// gitCommit names the working tree's commit, "+dirty" if it has changes,
// or "unknown" outside a git checkout.
func gitCommit() string {
	rev, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(rev))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += "+dirty"
	}
	return c
}
