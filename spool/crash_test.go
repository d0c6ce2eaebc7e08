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
// append as "first last tag size" until it is killed.
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
	wg.Wait()
}

// TestCrash kills (SIGKILL) a process appending to the spool at a random
// moment, several times, and checks that every acknowledged event is there.
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
		lines := make(chan []ack)
		go func() {
			var got []ack
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var a ack
				if _, err := fmt.Sscanf(sc.Text(), "%d %d %s %d", &a.r.First, &a.r.Last, &a.tag, &a.size); err == nil {
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
		t.Logf("round %d: %d appends acknowledged before kill -9", round, len(got))
		acks = append(acks, got...)

		s, err := Open(dir, Options{SegmentBytes: mib})
		if err != nil {
			t.Fatal(err)
		}
		if q := s.Stats().Quarantined; q != 0 {
			t.Errorf("round %d: %d files quarantined after a process crash", round, q)
		}
		seen := map[uint64]bool{}
		for _, a := range acks {
			i := 0
			_, err := s.Read("crash", a.r.First, int(a.r.Len()), 0, func(e Entry) error {
				if e.Seq != a.r.First+uint64(i) || !bytes.Equal(e.Data, event(a.tag, i, a.size)) || seen[e.Seq] {
					t.Errorf("%s: seq %d (want %d) data %.20q", a.tag, e.Seq, a.r.First+uint64(i), e.Data)
				}
				seen[e.Seq] = true
				i++
				return nil
			})
			if err != nil || uint64(i) != a.r.Len() {
				t.Fatalf("%s %v: read %d events: %v", a.tag, a.r, i, err)
			}
		}
		checkConsistent(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
