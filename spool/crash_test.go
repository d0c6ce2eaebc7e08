package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// crashChild appends in a loop from 4 goroutines and prints each acknowledged
// append as "first last tag size" until it is killed. A fifth goroutine acts
// as the batcher: it acknowledges the claims found at Open (as if
// republished), then claims what was appended, splitting some claims in two
// (the first half replaces the whole), printing "c first last" before each
// Claim and "C first last" once it returned, sometimes claims several
// consecutive ranges in one Claim (printing "g first last" before and
// "G first last" after, for each), and acknowledges claims in order some
// claims behind, so that segments are deleted under the claims.
func crashChild(dir, round string) {
	s, err := Open(dir, Options{SegmentBytes: mib})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for b := 0; ; b++ {
				tag := fmt.Sprintf("r%sg%db%d", round, g, b)
				n, size := 1+rand.IntN(60), 16+rand.IntN(3000)
				r, err := s.Append(context.Background(), "crash", events(tag, n, size))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "%d %d %s %d\n", r.First, r.Last, tag, size)
				out.Flush() // acknowledged: tell the parent before anything else
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		fail := func(err error) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		start := s.Acked("crash")
		for _, r := range s.Claims("crash") {
			if err := s.Ack("crash", r); err != nil {
				fail(err)
			}
			start = max(start, r.Last)
		}
		claim := func(r Range) {
			mu.Lock()
			fmt.Fprintf(out, "c %d %d\n", r.First, r.Last)
			out.Flush()
			mu.Unlock()
			if err := s.Claim("crash", r); err != nil {
				fail(err)
			}
			mu.Lock()
			fmt.Fprintf(out, "C %d %d\n", r.First, r.Last)
			out.Flush()
			mu.Unlock()
		}
		var claimed []Range
		for next := start + 1; ; {
			last := s.Last("crash")
			if last < next {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			if k := 2 + rand.IntN(3); rand.IntN(4) == 0 && last-next+1 >= uint64(k) {
				// Several batches cut while a claim committed: one Claim.
				var rs []Range
				for i := range k {
					r := Range{next, next + (last-next+1)/uint64(k) - 1}
					if i == k-1 {
						r.Last = last
					}
					rs = append(rs, r)
					next = r.Last + 1
				}
				mu.Lock()
				for _, r := range rs {
					fmt.Fprintf(out, "g %d %d\n", r.First, r.Last)
				}
				out.Flush()
				mu.Unlock()
				if err := s.Claim("crash", rs...); err != nil {
					fail(err)
				}
				mu.Lock()
				for _, r := range rs {
					fmt.Fprintf(out, "G %d %d\n", r.First, r.Last)
				}
				out.Flush()
				mu.Unlock()
				claimed = append(claimed, rs...)
				continue
			}
			r := Range{next, min(last, next+uint64(rand.IntN(300)))}
			claim(r)
			if r.Len() > 1 && rand.IntN(3) == 0 {
				mid := r.First + r.Len()/2 - 1
				claim(Range{r.First, mid})
				claim(Range{mid + 1, r.Last})
				claimed = append(claimed, Range{r.First, mid}, Range{mid + 1, r.Last})
			} else {
				claimed = append(claimed, r)
			}
			next = r.Last + 1
			for ; len(claimed) > 5; claimed = claimed[1:] {
				if err := s.Ack("crash", claimed[0]); err != nil {
					fail(err)
				}
			}
		}
	})
	wg.Wait()
}

// TestCrash kills (SIGKILL) a process appending to and claiming in the spool
// at a random moment, several times, and checks that every acknowledged event
// not acknowledged upstream is there, and every claim whose Claim returned,
// and that of the ranges of a Claim of several the kill interrupted, all or
// none are found.
func TestCrash(t *testing.T) {
	if dir := os.Getenv("SPOOL_CRASH_CHILD"); dir != "" {
		crashChild(dir, os.Getenv("SPOOL_CRASH_ROUND"))
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	type ack struct {
		r    Range
		tag  string
		size int
	}
	var acks []ack
	claims := map[uint64]uint64{}   // First -> Last of each returned Claim
	inflight := map[uint64]uint64{} // First -> Last of a Claim not (yet) returned
	nclaims := 0
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
		cmd.Env = append(os.Environ(), "SPOOL_CRASH_CHILD="+dir, fmt.Sprint("SPOOL_CRASH_ROUND=", round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var group []Range // the ranges of a Claim of several not (yet) returned
		lines := make(chan []ack)
		go func() {
			var got []ack
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var a ack
				var r Range
				var kind string
				if _, err := fmt.Sscanf(sc.Text(), "%s %d %d", &kind, &r.First, &r.Last); err == nil && (kind == "g" || kind == "G") {
					if kind == "g" {
						group = append(group, r)
					} else {
						group = nil
						claims[r.First] = r.Last
						nclaims++
					}
				} else if err == nil && (kind == "c" || kind == "C") {
					if kind == "c" {
						inflight[r.First] = r.Last
					} else {
						delete(inflight, r.First)
						claims[r.First] = r.Last
						nclaims++
					}
				} else if _, err := fmt.Sscanf(sc.Text(), "%d %d %s %d", &a.r.First, &a.r.Last, &a.tag, &a.size); err == nil {
					got = append(got, a)
				}
			}
			lines <- got
		}()
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		_ = cmd.Process.Kill()
		got := <-lines
		_ = cmd.Wait()
		if stderr.Len() > 0 {
			t.Fatalf("child: %s", stderr.String())
		}
		t.Logf("round %d: %d appends acknowledged before kill -9; %d claims returned in all", round, len(got), nclaims)
		acks = append(acks, got...)

		s, err := Open(dir, Options{SegmentBytes: mib})
		if err != nil {
			t.Fatal(err)
		}
		if q := s.Stats().Quarantined; q != 0 {
			t.Errorf("round %d: %d files quarantined after a process crash", round, q)
		}
		acked := s.Acked("crash")
		seen := map[uint64]bool{}
		for _, a := range acks {
			if a.r.Last <= acked {
				continue // acknowledged upstream: may be deleted
			}
			from := max(a.r.First, acked+1)
			want := a.r.Last - from + 1
			i := uint64(0)
			_, err := s.Read("crash", from, int(want), 0, func(e Entry) error {
				if e.Seq != from+i || !bytes.Equal(e.Data, event(a.tag, int(e.Seq-a.r.First), a.size)) || seen[e.Seq] {
					t.Errorf("%s: seq %d (want %d) data %.20q", a.tag, e.Seq, from+i, e.Data)
				}
				seen[e.Seq] = true
				i++
				return nil
			})
			if err != nil || i != want {
				t.Fatalf("%s %v: read %d events from %d: %v", a.tag, a.r, i, from, err)
			}
		}
		found := map[uint64]uint64{}
		for _, r := range s.Claims("crash") {
			found[r.First] = r.Last
		}
		for f, l := range claims {
			if l <= acked {
				continue // acknowledged upstream: may be forgotten
			}
			if g, ok := found[f]; !ok || g != l && g != inflight[f] {
				t.Errorf("round %d: claim {%d %d} returned before the kill, after reopen found last %d (%v); acked %d",
					round, f, l, g, ok, acked)
			}
		}
		n := 0
		for _, r := range group {
			if found[r.First] == r.Last {
				n++
			}
		}
		if n != 0 && n != len(group) {
			t.Errorf("round %d: %d of the %d ranges of an interrupted Claim found after reopen: %v", round, n, len(group), group)
		}
		if len(group) > 0 {
			t.Logf("round %d: killed in a Claim of %d ranges; %d found", round, len(group), n)
		}
		checkConsistent(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
