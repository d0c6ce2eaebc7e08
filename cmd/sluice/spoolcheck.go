package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/spool"
)

const spoolUsage = `Usage: sluice spool check [--json] DIR

Reports a spool directory without changing it: per class the segments,
bytes, acknowledged cursor, events pending and claimed batches; every
damaged file (truncated, a bad bbolt page, a bad record, an unreadable
meta.db or ID) with the reason and what the node does with it when it
starts; and the files already in DIR/quarantine/. DIR is the spool itself
or a node's data_dir (then DATA_DIR/spool is checked). It reads every
record, so it takes about as long as reading the backlog from disk.

Exit status: 0 nothing damaged (files already in quarantine/ do not count),
1 damage found or the check could not be done (a running node holds the
spool: stop it first), 2 usage error.

Flags:
`

// runSpool runs `sluice spool SUBCOMMAND`.
func runSpool(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprint(stderr, spoolUsage)
		return errUsage
	}
	return runSpoolCheck(args[1:], stdout, stderr)
}

func runSpoolCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice spool check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON (the fields of spool.Report)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), spoolUsage)
		fs.PrintDefaults()
	}
	// Flags may come before or after DIR.
	var dirs []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		dirs = append(dirs, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(dirs) != 1 || dirs[0] == "" {
		fmt.Fprintln(stderr, "sluice spool check: want one spool directory")
		fs.Usage()
		return errUsage
	}
	dir := dirs[0]
	if _, err := os.Stat(filepath.Join(dir, "meta.db")); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, "spool", "meta.db")); err == nil {
			dir = filepath.Join(dir, "spool") // a node's data_dir
		}
	}
	rep, err := spool.Check(dir)
	switch {
	case errors.Is(err, spool.ErrInUse):
		return fmt.Errorf("spool check %s: a running node holds the spool's lock; stop it (or check a copy) and retry: %w", dir, err)
	case err != nil:
		return fmt.Errorf("spool check: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := printSpoolReport(stdout, rep); err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("spool check %s: %d damaged %s", dir, len(rep.Damaged), plural(len(rep.Damaged), "file", "files"))
	}
	return nil
}

// printSpoolReport writes rep for people: a table of classes, then the
// damaged files with what the node will do, then quarantine/.
func printSpoolReport(w io.Writer, rep *spool.Report) error {
	var b strings.Builder
	id := rep.ID
	if id == "" {
		id = "(damaged)"
	}
	fmt.Fprintf(&b, "spool %s  id %s  %s in segments\n\n", rep.Dir, id, fmtBytes(float64(rep.Bytes)))
	if len(rep.Classes) == 0 {
		b.WriteString("no classes\n")
	} else {
		tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "CLASS\tSEGMENTS\tBYTES\tSEQS\tACKED\tPENDING\tCLAIMS\tDAMAGED\tLOST\t")
		for _, c := range rep.Classes {
			seqs := "-"
			if c.Last > 0 {
				seqs = fmt.Sprintf("%d-%d", c.First, c.Last)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n",
				c.Name, c.Segments, fmtBytes(float64(c.Bytes)), seqs, c.Acked, c.Pending, len(c.Claims), c.Damaged, c.Lost)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Damaged) > 0 {
		fmt.Fprintf(&b, "\nDAMAGED: %d %s; what the node does with %s\n", len(rep.Damaged),
			plural(len(rep.Damaged), "file", "files"), plural(len(rep.Damaged), "it", "them"))
		for _, d := range rep.Damaged {
			fmt.Fprintf(&b, "  %s (%s)\n    reason: %s\n    %s: %s\n", d.File, fmtBytes(float64(d.Bytes)), d.Reason, d.Action, d.Effect)
		}
	}
	if len(rep.Quarantined) > 0 {
		fmt.Fprintf(&b, "\nQUARANTINED: %d %s in %s, kept for inspection; the node no longer uses them\n",
			len(rep.Quarantined), plural(len(rep.Quarantined), "file", "files"), filepath.Join(rep.Dir, "quarantine"))
		tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
		for _, q := range rep.Quarantined {
			when := "-"
			if !q.Time.IsZero() {
				when = q.Time.Format(time.RFC3339)
			}
			class := q.Class
			if class == "" {
				class = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", q.File, class, fmtBytes(float64(q.Bytes)), when)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if rep.OK() {
		b.WriteString("\nok: no damaged file\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
