package blast

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/embednats"
)

// serverEnv names the environment variable that turns a re-executed bench
// binary into a NATS server process (see ServeIfChild).
const serverEnv = "SLUICE_BENCH_NATS_DIR"

// burnEnv names the environment variable that turns a re-executed bench
// binary into a CPU burner of that many threads (see StartBurner).
const burnEnv = "SLUICE_BENCH_BURN_THREADS"

// ServeIfChild runs an embedded NATS server with JetStream and returns
// true if this process was started by StartServer (or, a CPU burner, by
// StartBurner); call it first thing in TestMain. The server prints its
// URL on stdout and stops when stdin closes, so it never outlives its
// parent; so does the burner.
func ServeIfChild() bool {
	if burn() {
		return true
	}
	dir := os.Getenv(serverEnv)
	if dir == "" {
		return false
	}
	port := 0
	if p, err := strconv.Atoi(os.Getenv(serverEnv + "_PORT")); err == nil {
		port = p
	}
	srv, err := embednats.Start(embednats.Options{Dir: dir, Port: port})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("READY", srv.ClientURL())
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return true
}

// burn spins the threads burnEnv asks for until stdin closes, and reports
// whether it did.
func burn() bool {
	n, err := strconv.Atoi(os.Getenv(burnEnv))
	if err != nil || n <= 0 {
		return false
	}
	runtime.GOMAXPROCS(n)
	var stop atomic.Bool
	var spins atomic.Uint64
	for range n {
		go func() {
			var x uint64
			for !stop.Load() {
				for range 1 << 16 {
					x = x*6364136223846793005 + 1442695040888963407
				}
				spins.Add(x & 1)
			}
		}()
	}
	fmt.Println("READY burning", n)
	io.Copy(io.Discard, os.Stdin)
	stop.Store(true)
	return true
}

// child is a re-execution of the running binary (which must call
// ServeIfChild first thing) that reports on its first line of output and
// runs until its stdin closes.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startChild starts the child with env added and returns its first line
// of output, which must start with ready.
func startChild(env []string, what, ready string) (*child, string, error) {
	var args []string
	if flag.Lookup("test.run") != nil {
		// A test binary (the testing package registered its flags): run
		// no tests should TestMain not serve first.
		args = []string{"-test.run=^$"}
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ready) {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, "", fmt.Errorf("bench: %s child: %q: %v", what, line, err)
	}
	go io.Copy(io.Discard, out)
	return &child{cmd: cmd, stdin: stdin}, strings.TrimSpace(line), nil
}

// stop closes the child's stdin and waits for it, killing it after grace.
func (c *child) stop(grace time.Duration) error {
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(grace):
		c.cmd.Process.Kill()
		return <-done
	}
}

// Burner is a CPU burner in a child process: threads goroutines spinning
// in a process of their own (its own GOMAXPROCS), competing with the node
// for the machine's cores as another program would.
type Burner struct{ c *child }

// StartBurner re-executes the running binary (which must call
// ServeIfChild first thing) as a CPU burner of threads spinning threads.
func StartBurner(threads int) (*Burner, error) {
	c, _, err := startChild([]string{fmt.Sprintf("%s=%d", burnEnv, threads)}, "cpu burner", "READY burning")
	if err != nil {
		return nil, err
	}
	return &Burner{c}, nil
}

// Stop stops the burner and waits for it.
func (b *Burner) Stop() error { return b.c.stop(5 * time.Second) }

// Server is a NATS server in a child process.
type Server struct {
	URL string
	c   *child
}

// StartServer re-executes the running binary (which must call
// ServeIfChild first thing: a test binary in TestMain, a command in main)
// as a NATS server storing in dir, on a free port.
func StartServer(dir string) (*Server, error) { return StartServerAt(dir, 0) }

// StartServerAt is StartServer on the given port.
func StartServerAt(dir string, port int) (*Server, error) {
	c, line, err := startChild([]string{serverEnv + "=" + dir, fmt.Sprintf("%s_PORT=%d", serverEnv, port)}, "nats server", "READY ")
	if err != nil {
		return nil, err
	}
	return &Server{URL: strings.TrimPrefix(line, "READY "), c: c}, nil
}

// Stop stops the server and waits for it.
func (s *Server) Stop() error { return s.c.stop(15 * time.Second) }

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// CPUTime is the server process's user and system CPU time so far, from
// /proc (0 where there is none), to the nearest 10 ms.
func (s *Server) CPUTime() time.Duration { return ProcCPU(s.c.cmd.Process.Pid) }

// ProcCPU is process pid's user and system CPU time so far, from /proc
// (0 where there is none), to the nearest 10 ms.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: state is
	// the first, utime the 12th and stime the 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick
}

// Pid is the server process's id.
func (s *Server) Pid() int { return s.c.cmd.Process.Pid }
