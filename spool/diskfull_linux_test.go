package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts it
// at cleanup (register what uses it afterwards, so that it is closed first).
// It skips the test where mounting is not permitted (not root, no
// CAP_SYS_ADMIN, a restricted container).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("size=%d,mode=0700", size)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		t.Skipf("cannot mount a tmpfs for a real full filesystem: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// writeFiller writes n bytes of data (tmpfs allocates on write) to path.
func writeFiller(t *testing.T, path string, n int) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, n), 0o600); err != nil {
		t.Fatalf("filler: %v", err)
	}
}

// fillDisk appends 20 × 1000-byte events tagged "<prefix>NNNN" to class "a"
// until 20 have failed (those after the first may succeed where the
// failed commits left room); it returns the ranges and tags
// of every acknowledged append and the errors. Every error must be the
// filesystem's ENOSPC, clearly worded, not a cap.
func fillDisk(t *testing.T, s *Spool, prefix string) (acked map[string]Range, errs []error) {
	t.Helper()
	acked = map[string]Range{}
	for i := 0; len(errs) < 20; i++ {
		if i == 2000 {
			t.Fatalf("%d appends acknowledged, %d refused: the disk never filled", len(acked), len(errs))
		}
		tag := fmt.Sprintf("%s%04d", prefix, i)
		r, err := s.Append(context.Background(), "a", events(tag, 20, 1000))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		acked[tag] = r
	}
	for _, err := range errs {
		if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrNoSpace) || errors.Is(err, ErrFull) ||
			!strings.HasPrefix(err.Error(), "spool: append a: ") || !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("append on a full disk: %v; want a spool error wrapping ENOSPC", err)
		}
	}
	return acked, errs
}

// checkAcked reads the whole class and checks that it holds exactly the
// acknowledged appends, in seq order, byte for byte.
func checkAcked(t *testing.T, s *Spool, acked map[string]Range) {
	t.Helper()
	want := map[uint64][]byte{}
	for tag, r := range acked {
		for i := range r.Len() {
			want[r.First+i] = event(tag, int(i), 1000)
		}
	}
	all := readAll(t, s, "a", 1000)
	if len(all) != len(want) {
		t.Fatalf("read %d events, %d acknowledged", len(all), len(want))
	}
	for i, g := range all {
		if i > 0 && g.seq <= all[i-1].seq {
			t.Fatalf("seq %d after %d", g.seq, all[i-1].seq)
		}
		if !bytes.Equal(g.data, want[g.seq]) {
			t.Fatalf("seq %d: %.12q, want %.12q", g.seq, g.data, want[g.seq])
		}
	}
}

// TestDiskFull fills a real filesystem (an 8 MiB tmpfs) through the spool:
// appends fail with a clear error wrapping ENOSPC, no acknowledged event is
// lost or damaged (read back at once and after a reopen, which quarantines
// nothing), and appends resume once space returns: when an operator
// deletes a file, or when upstream acknowledgements delete segments.
func TestDiskFull(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fsync Fsync
		free  func(t *testing.T, s *Spool, filler string)
	}{
		{"operator_frees_space", FsyncAlways, func(t *testing.T, s *Spool, filler string) {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}},
		{"acks_free_segments", FsyncInterval, func(t *testing.T, s *Spool, filler string) {
			if err := s.Ack("a", Range{1, s.Last("a")}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := mountTmpfs(t, 8*mib)
			filler := filepath.Join(mnt, "filler")
			writeFiller(t, filler, 3*mib)
			dir := filepath.Join(mnt, "spool")
			opts := Options{SegmentBytes: mib, Fsync: tc.fsync}
			s := openT(t, dir, opts)

			acked, errs := fillDisk(t, s, "full")
			t.Logf("%d appends acknowledged, then %d refused: %v", len(acked), len(errs), errs[0])
			checkAcked(t, s, acked) // the open spool serves everything acknowledged
			acks := acked
			tc.free(t, s, filler)
			if strings.HasPrefix(tc.name, "acks") {
				acks = map[string]Range{}
			}
			// Space is back: appends resume, across a new segment.
			before := len(segFiles(t, dir, "a"))
			for i := range 60 {
				tag := fmt.Sprintf("more%04d", i)
				r, err := s.Append(context.Background(), "a", events(tag, 20, 1000))
				if err != nil {
					t.Fatalf("append %d after space returned: %v", i, err)
				}
				acks[tag] = r
			}
			if after := len(segFiles(t, dir, "a")); after <= before && !strings.HasPrefix(tc.name, "acks") {
				t.Errorf("%d segments before, %d after 1.2 MB more", before, after)
			}
			checkAcked(t, s, acks)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			rep, err := Check(dir)
			if err != nil || !rep.OK() {
				t.Fatalf("Check after a full disk: %v %+v", err, rep)
			}
			s = openT(t, dir, opts)
			if q := s.Stats().Quarantined; q != 0 {
				t.Fatalf("reopen quarantined %d files", q)
			}
			checkAcked(t, s, acks)
			checkConsistent(t, s)
		})
	}
}

// TestDiskFullAtRoll fills the filesystem just when the tail must roll to a
// new segment, leaving 0 to 64 KiB free, so that each step of a roll meets
// ENOSPC in turn: the reservation in meta.db, the new segment's file, its
// first commit. Each refusal must be clean, and the spool must resume and
// reopen with everything acknowledged and nothing quarantined.
func TestDiskFullAtRoll(t *testing.T) {
	sites := map[string]bool{}
	ran := 0
	for leave := 0; leave <= 64<<10; leave += 4 << 10 {
		t.Run(fmt.Sprintf("free_%dk", leave>>10), func(t *testing.T) {
			mnt := mountTmpfs(t, 8*mib)
			ran++
			dir := filepath.Join(mnt, "spool")
			opts := Options{SegmentBytes: mib}
			s := openT(t, dir, opts)
			acked := map[string]Range{"small": mustAppend(t, s, "a", events("small", 10, 1000))}

			// Take every free byte, then give back leave.
			filler := filepath.Join(mnt, "filler")
			f, err := os.Create(filler)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := f.ReadFrom(bytes.NewReader(make([]byte, 8*mib)))
			if cerr := f.Close(); cerr != nil || n == 8*mib {
				t.Fatalf("filler took %d bytes: %v", n, cerr)
			}
			if err := os.Truncate(filler, n-int64(leave)); err != nil {
				t.Fatal(err)
			}

			// An event too large for the tail's room: the append rolls.
			big := make([]byte, s.maxRecord-8192)
			copy(big, "big")
			r, err := s.Append(context.Background(), "a", [][]byte{big})
			switch {
			case err == nil:
				sites["none"] = true
			case !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrNoSpace) || !strings.HasPrefix(err.Error(), "spool: append a: "):
				t.Fatalf("append on a full disk: %v; want a spool error wrapping ENOSPC", err)
			case strings.Contains(err.Error(), "meta.db"):
				sites["meta.db"] = true
			case strings.Contains(err.Error(), ".db.tmp"):
				sites["new segment"] = true
			default:
				sites["commit"] = true
			}
			// A failed roll leaves no half-made segment taking space.
			if tmp, _ := filepath.Glob(filepath.Join(dir, "a", "*.tmp")); len(tmp) > 0 {
				t.Fatalf("after %v: left %v", err, tmp)
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			acked["after"] = mustAppend(t, s, "a", events("after", 10, 1000))
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s = openT(t, dir, opts)
			if q := s.Stats().Quarantined; q != 0 {
				t.Fatalf("reopen quarantined %d files", q)
			}
			all := readAll(t, s, "a", 1000)
			want := 20
			if err == nil {
				want++
			}
			if len(all) != want || !bytes.Equal(all[0].data, event("small", 0, 1000)) ||
				!bytes.Equal(all[len(all)-1].data, event("after", 9, 1000)) || err == nil && all[10].seq != r.First {
				t.Fatalf("read back %d events; want %d", len(all), want)
			}
			checkConsistent(t, s)
		})
	}
	if ran < 17 {
		return // skipped (no tmpfs) or filtered by -run
	}
	for _, site := range []string{"meta.db", "new segment", "commit"} {
		if !sites[site] {
			t.Errorf("no free space from 0 to 64 KiB made the %s step fail (saw %v)", site, sites)
		}
	}
}

// TestDiskFullState checks what the spool makes of a full disk beyond each
// refused append: NoSpace reports it, from the first refusal until room is
// seen again (by a commit, or by NoSpace's own probe when nobody appends),
// and the log hears of it once each way, not per append. Time is synctest's,
// so the one-second hold and probe interval pass at once.
func TestDiskFullState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mnt := mountTmpfs(t, 8*mib)
		filler := filepath.Join(mnt, "filler")
		writeFiller(t, filler, 3*mib)
		dir := filepath.Join(mnt, "spool")
		var logs bytes.Buffer // the spool starts no goroutines: one writer at a time
		s := openT(t, dir, Options{SegmentBytes: mib, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if s.NoSpace() {
			t.Fatal("NoSpace before the disk filled")
		}
		count := func(msg string) int { return strings.Count(logs.String(), msg) }
		const full, room = `msg="spool: disk full`, `msg="spool: disk has room again`

		fillDisk(t, s, "full") // 20 refusals
		if !s.NoSpace() || count(full) != 1 || count(room) != 0 {
			t.Fatalf("full disk: NoSpace %v, log:\n%s", s.NoSpace(), logs.String())
		}
		// A second later NoSpace probes, finds no room, and says so quietly.
		time.Sleep(spaceHold)
		if !s.NoSpace() || count(full) != 1 || count(room) != 0 {
			t.Fatalf("still full: NoSpace %v, log:\n%s", s.NoSpace(), logs.String())
		}
		// An operator frees space while nobody appends: the next probe,
		// a second after the last, sees it.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if !s.NoSpace() {
			t.Fatal("NoSpace probed again within a second")
		}
		time.Sleep(spaceHold)
		if s.NoSpace() || count(full) != 1 || count(room) != 1 {
			t.Fatalf("room again: NoSpace %v, log:\n%s", s.NoSpace(), logs.String())
		}
		if _, err := os.Stat(filepath.Join(dir, probeName)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("probe file left: %v", err)
		}

		// Full again; then room comes back and appends find it: the first
		// commit a second after the last refusal clears the state.
		writeFiller(t, filler, 2*mib)
		fillDisk(t, s, "again")
		if !s.NoSpace() || count(full) != 2 {
			t.Fatalf("full again: NoSpace %v, log:\n%s", s.NoSpace(), logs.String())
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, "a", events("soon", 1, 1000))
		if s.fullAt.Load() == 0 {
			t.Fatal("a commit right after a refusal cleared the state")
		}
		time.Sleep(spaceHold)
		mustAppend(t, s, "a", events("later", 1, 1000))
		if s.fullAt.Load() != 0 || count(full) != 2 || count(room) != 2 {
			t.Fatalf("after a commit: full since %d, log:\n%s", s.fullAt.Load(), logs.String())
		}
		checkConsistent(t, s)
	})
}
