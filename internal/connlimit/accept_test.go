package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// acceptErr is an accept error as *net.TCPListener returns it.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Temporary errors are waited out inside Accept, never returned, and each
// episode is logged once with its count; other errors are returned.
func TestAcceptBackoff(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name     string
		errs     []error
		min, max time.Duration // 0: the package's
		wantErr  error         // nil: a conn
		wantLogs int
		logged   int64 // errors in the log line
		ongoing  bool
	}{
		{name: "EMFILE", errs: repeat(acceptErr(syscall.EMFILE), 5), wantLogs: 1, logged: 5},
		{name: "ENFILE ENOBUFS ENOMEM", errs: []error{acceptErr(syscall.ENFILE),
			acceptErr(syscall.ENOBUFS), acceptErr(syscall.ENOMEM)}, wantLogs: 1, logged: 3},
		{name: "long episode logs once at the cap", errs: repeat(acceptErr(syscall.EMFILE), 20),
			min: time.Microsecond, max: 64 * time.Microsecond, wantLogs: 1, logged: 7, ongoing: true},
		{name: "other errors are returned", errs: []error{boom}, wantErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			f := newFake(false, tc.errs...)
			l, err := New(f, Options{Logger: slog.New(rec)})
			if err != nil {
				t.Fatal(err)
			}
			if tc.min > 0 {
				l.backoffMin, l.backoffMax = tc.min, tc.max
			}
			client, server := net.Pipe()
			defer client.Close()
			f.conns <- server
			c, err := l.Accept()
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Accept: %v, want %v", err, tc.wantErr)
				}
				if s := l.Stats(); s.AcceptErrors != 0 {
					t.Errorf("accept errors %d, want 0", s.AcceptErrors)
				}
			} else {
				if err != nil {
					t.Fatalf("Accept: %v, want a conn", err)
				}
				_ = c.Close()
				if s := l.Stats(); s.AcceptErrors != int64(len(tc.errs)) || s.Accepted != 1 {
					t.Errorf("stats %+v: want %d accept errors, 1 accepted", s, len(tc.errs))
				}
			}
			recs := rec.records()
			if len(recs) != tc.wantLogs {
				t.Fatalf("%d log records, want %d: %v", len(recs), tc.wantLogs, recs)
			}
			if tc.wantLogs > 0 {
				r := recs[0]
				if r["errors"].Int64() != tc.logged || r["ongoing"].Bool() != tc.ongoing || r["err"].String() == "" {
					t.Errorf("log %v: want errors=%d ongoing=%v", r, tc.logged, tc.ongoing)
				}
			}
			_ = l.Close()
		})
	}
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// Close wakes an Accept sleeping in its backoff: here a sleep of an hour,
// so returning at all proves it.
func TestCloseDuringBackoff(t *testing.T) {
	rec := &recorder{}
	l, err := New(newFake(true, acceptErr(syscall.EMFILE)), Options{Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	l.backoffMin, l.backoffMax = time.Hour, time.Hour
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	eventually(t, "an accept error", func() bool { return l.Stats().AcceptErrors > 0 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept: %v, want net.ErrClosed", err)
		}
	case <-time.After(patience):
		t.Fatal("Accept still sleeping after Close")
	}
	if n := len(rec.records()); n != 1 {
		t.Errorf("%d log records, want 1", n)
	}
	if s := l.Stats(); s.AcceptErrors != 1 {
		t.Errorf("accept errors %d, want 1", s.AcceptErrors)
	}
}

// After Close, Accept returns net.ErrClosed at once; Close is idempotent.
func TestAcceptAfterClose(t *testing.T) {
	f := newFake(false)
	l, err := New(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-f.closed:
	default:
		t.Error("inner listener not closed")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{acceptErr(syscall.EMFILE), true},
		{acceptErr(syscall.ENFILE), true},
		{acceptErr(syscall.ENOBUFS), true},
		{acceptErr(syscall.ENOMEM), true},
		{acceptErr(syscall.ECONNABORTED), true},
		{acceptErr(syscall.EINVAL), false},
		{&net.OpError{Op: "accept", Err: os.ErrDeadlineExceeded}, false},
		{net.ErrClosed, false},
		{errors.New("boom"), false},
	} {
		if got := temporary(tc.err); got != tc.want {
			t.Errorf("temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
