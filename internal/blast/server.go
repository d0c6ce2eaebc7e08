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
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/embednats"
)

// serverEnv names the environment variable that turns a re-executed bench
// binary into a NATS server process (see ServeIfChild).
const serverEnv = "SLUICE_BENCH_NATS_DIR"

// ServeIfChild runs an embedded NATS server with JetStream and returns
// true if this process was started by StartServer; call it first thing
// in TestMain. The server prints its URL on stdout and stops when stdin
// closes, so it never outlives its parent.
func ServeIfChild() bool {
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

// Server is a NATS server in a child process.
type Server struct {
	URL   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// StartServer re-executes the running binary (which must call
// ServeIfChild first thing: a test binary in TestMain, a command in main)
// as a NATS server storing in dir, on a free port.
func StartServer(dir string) (*Server, error) { return StartServerAt(dir, 0) }

// StartServerAt is StartServer on the given port.
func StartServerAt(dir string, port int) (*Server, error) {
	var args []string
	if flag.Lookup("test.run") != nil {
		// A test binary (the testing package registered its flags): run
		// no tests should TestMain not serve first.
		args = []string{"-test.run=^$"}
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), serverEnv+"="+dir, fmt.Sprintf("%s_PORT=%d", serverEnv, port))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "READY ")
	if err != nil || !ok {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("bench: nats server child: %q: %v", line, err)
	}
	go io.Copy(io.Discard, out)
	return &Server{URL: url, cmd: cmd, stdin: stdin}, nil
}

// Stop stops the server and waits for it.
func (s *Server) Stop() error {
	s.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		return <-done
	}
}

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// CPUTime is the server process's user and system CPU time so far, from
// /proc (0 where there is none), to the nearest 10 ms.
func (s *Server) CPUTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
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
func (s *Server) Pid() int { return s.cmd.Process.Pid }
