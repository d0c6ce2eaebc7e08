package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/blast"
)

// SustainedConfig configures RunSustained.
type SustainedConfig struct {
	Binary     string // the sluice binary to run; required
	Events     int    // events posted, rounded down to whole requests; default 500,000
	PerRequest int    // events per request body; default 200
	Clients    int    // concurrent clients, each with its own keep-alive connection; default 16
	// Config is YAML appended to the node's config file after the keys the
	// run sets (node, data_dir, listen, upstream, fsync: always,
	// log_level: warn); empty keeps every other key at its default.
	Config string
	// Log is the file the node's stdout and stderr go to; default
	// sluice.log in the run's directory.
	Log string
}

func (c *SustainedConfig) setDefaults() {
	if c.Events <= 0 {
		c.Events = 500_000
	}
	if c.PerRequest <= 0 {
		c.PerRequest = 200
	}
	if c.Clients <= 0 {
		c.Clients = 16
	}
}

// SustainedResult is one measured sustained-load run.
type SustainedResult struct {
	Events int // events posted, each answered 200 and each verified once in the stream
	// Accepted is the time from the first request sent to the last answer
	// read; Delivered from the first request sent to the node's metrics
	// counting every event acknowledged by JetStream.
	Accepted, Delivered time.Duration
	NDJSONBytes         int64 // the request bodies posted (NDJSON, uncompressed)
	WireBytes           int64 // the stream messages' payloads (compressed batches)
	Batches             int   // stream messages
	// Mem is the sluice process's memory when the last event was
	// delivered: Peak (VmHWM) is the figure of the run; Anon and File
	// split what is resident then.
	Mem Mem
	// CPU and NATSCPU are the user and system CPU time of the sluice and
	// the NATS server processes from the first request to delivery.
	CPU, NATSCPU time.Duration
	// DiskWrites is the bytes the sluice process caused to be written to
	// storage from the first request to delivery (/proc/PID/io
	// write_bytes): the spool's segments and metadata.
	DiskWrites int64
	MaxLevel   int // highest degradation level a batch was shipped at
	// Degraded counts the batches shipped with fields dropped, and
	// DegradedEvents their events (verified by messageId, not byte for
	// byte).
	Degraded, DegradedEvents int
}

// AcceptedPerSec is the rate of events answered 200 (durable in the spool).
func (r SustainedResult) AcceptedPerSec() float64 {
	return float64(r.Events) / r.Accepted.Seconds()
}

// DeliveredPerSec is the rate of events acknowledged by JetStream, from the
// first request to the last acknowledgement.
func (r SustainedResult) DeliveredPerSec() float64 {
	return float64(r.Events) / r.Delivered.Seconds()
}

// WireRatio is the NDJSON bytes posted per byte stored in the stream.
func (r SustainedResult) WireRatio() float64 {
	return float64(r.NDJSONBytes) / float64(r.WireBytes)
}

// CPUPerEvent is the sluice process's CPU time per event delivered.
func (r SustainedResult) CPUPerEvent() time.Duration { return r.CPU / time.Duration(r.Events) }

// NATSCPUPerEvent is the NATS server's CPU time per event delivered.
func (r SustainedResult) NATSCPUPerEvent() time.Duration {
	return r.NATSCPU / time.Duration(r.Events)
}

// RunSustained measures the shipping half under sustained HTTP load: the
// sluice binary cfg.Binary as a process of its own (`sluice run`, fsync
// always, every other key at its default unless cfg.Config says), storing
// under dir and shipping to srv, and cfg.Clients keep-alive clients in this
// process posting NDJSON bodies of cfg.PerRequest events to /v1/events,
// cycled from events, each event's messageId prefixed with a number unique
// in the run. It polls the node's /metrics until JetStream has
// acknowledged every event, takes the processes' CPU time and the node's
// peak RSS, then reads the whole stream back: every event once, byte for
// byte as sent after the handler's stamp. The node is stopped (SIGTERM)
// before it returns.
func RunSustained(ctx context.Context, srv *blast.Server, dir string, events [][]byte, cfg SustainedConfig) (SustainedResult, error) {
	cfg.setDefaults()
	if cfg.Binary == "" {
		return SustainedResult{}, errors.New("bench: no sluice binary")
	}
	reqs := cfg.Events / cfg.PerRequest
	if reqs == 0 {
		return SustainedResult{}, fmt.Errorf("bench: %d events is less than one request of %d", cfg.Events, cfg.PerRequest)
	}
	pl, err := buildPayload(ModeNDJSON, events, cfg.PerRequest, true)
	if err != nil {
		return SustainedResult{}, err
	}
	node, err := startSluice(ctx, cfg.Binary, dir, srv.URL, cfg.Config, cfg.Log)
	if err != nil {
		return SustainedResult{}, err
	}
	defer node.kill()

	total := reqs * cfg.PerRequest
	gen := newLoadGen("http://"+node.addr+pl.path, pl, cfg.Clients)
	defer gen.close()
	res := SustainedResult{Events: total}
	cpu0, ncpu0, w0 := blast.ProcCPU(node.cmd.Process.Pid), srv.CPUTime(), procWrites(node.cmd.Process.Pid)
	start := time.Now()
	if err := gen.run(ctx, 0, reqs, nil); err != nil {
		return SustainedResult{}, err
	}
	res.Accepted = time.Since(start)
	if err := node.waitAcked(ctx, uint64(total)); err != nil {
		return SustainedResult{}, err
	}
	res.Delivered = time.Since(start)
	res.CPU, res.NATSCPU = blast.ProcCPU(node.cmd.Process.Pid)-cpu0, srv.CPUTime()-ncpu0
	res.DiskWrites = procWrites(node.cmd.Process.Pid) - w0
	if res.Mem = readMem(fmt.Sprintf("/proc/%d/status", node.cmd.Process.Pid)); res.Mem.Peak == 0 {
		return SustainedResult{}, errors.New("bench: no peak RSS of the sluice process")
	}
	for r := range reqs {
		res.NDJSONBytes += int64(len(pl.bodies[r%len(pl.bodies)].data))
	}

	nc, err := Connect(srv.URL)
	if err != nil {
		return SustainedResult{}, err
	}
	defer nc.Close()
	v := newVerifier(pl, reqs, start.Add(-time.Second), time.Now().Add(time.Second))
	if err := v.readStream(ctx, nc, ""); err != nil {
		return SustainedResult{}, err
	}
	if err := v.check(); err != nil {
		return SustainedResult{}, err
	}
	res.WireBytes, res.Batches, res.MaxLevel = v.wireBytes, v.batches, v.maxLevel
	res.Degraded, res.DegradedEvents = v.degraded, v.degradedEvents
	return res, node.stop()
}

// sluiceProc is a `sluice run` process.
type sluiceProc struct {
	cmd    *exec.Cmd
	addr   string // its HTTP listener
	log    *os.File
	waited chan error
}

// startSluice starts `bin run` with a config file in dir and waits until
// its /readyz answers 200.
func startSluice(ctx context.Context, bin, dir, upstream, extra, logPath string) (*sluiceProc, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("node: %s\ndata_dir: %s\nlisten: %s\nupstream: %s\nfsync: always\nlog_level: warn\n%s",
		httpNode, filepath.Join(dir, "data"), addr, upstream, extra)
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if logPath == "" {
		logPath = filepath.Join(dir, "sluice.log")
	}
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", path)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &sluiceProc{cmd: cmd, addr: addr, log: log, waited: make(chan error, 1)}
	go func() { p.waited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case err := <-p.waited:
			p.waited <- err
			return nil, fmt.Errorf("bench: sluice exited before it was ready (%v): %s", err, p.tail())
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("bench: sluice not ready after 30 s: %s", p.tail())
		}
	}
}

// tail is the end of the node's log.
func (p *sluiceProc) tail() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b[max(0, len(b)-2000):])
}

// ackedMetric is the node's counter of events JetStream acknowledged, per
// class; the HTTP ingest of these runs goes to the default class.
const ackedMetric = `sluice_class_acked_events_total{class="ingest"}`

// waitAcked polls the node's metrics until JetStream has acknowledged n
// events. Rendering the metrics costs the node CPU (about 2 ms a scrape on
// the project's machine), so the poll sleeps half the time the remaining
// events should take at the rate seen since the last poll, between 5 ms
// and 250 ms (50 ms after a poll without progress): a few dozen scrapes a
// run, and delivery timed to within about 5 ms while it progresses. It is called once the load is done, so the scrapes do not
// compete with it.
func (p *sluiceProc) waitAcked(ctx context.Context, n uint64) error {
	var last uint64
	lastAt := time.Now()
	for {
		got, err := p.acked()
		if err != nil {
			return err
		}
		if got >= n {
			return nil
		}
		now := time.Now()
		wait := 50 * time.Millisecond // no progress since the last poll
		if rate := float64(got-min(last, got)) / now.Sub(lastAt).Seconds(); rate > 0 {
			wait = min(250*time.Millisecond, time.Duration(float64(n-got)/rate/2*float64(time.Second)))
		}
		wait = max(wait, 5*time.Millisecond)
		last, lastAt = got, now
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: %d of %d events acknowledged: %w", got, n, ctx.Err())
		case err := <-p.waited:
			p.waited <- err
			return fmt.Errorf("bench: sluice exited (%v) with %d of %d events acknowledged: %s", err, got, n, p.tail())
		case <-time.After(wait):
		}
	}
}

// acked reads ackedMetric from /metrics (0 before the class has any).
func (p *sluiceProc) acked() (uint64, error) {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), ackedMetric+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return uint64(f), err
		}
	}
	return 0, sc.Err()
}

// stop sends SIGTERM and waits for a clean exit (everything was shipped,
// so the status is 0).
func (p *sluiceProc) stop() error {
	defer p.log.Close()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-p.waited:
		p.waited <- err
		if err != nil {
			return fmt.Errorf("bench: sluice stopped with %v: %s", err, p.tail())
		}
		return nil
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		return fmt.Errorf("bench: sluice did not stop within a minute of SIGTERM: %s", p.tail())
	}
}

// kill ends the process if it still runs (after stop: nothing).
func (p *sluiceProc) kill() {
	select {
	case err := <-p.waited:
		p.waited <- err
	default:
		p.cmd.Process.Kill()
		p.waited <- <-p.waited
	}
	p.log.Close()
}

// freePort returns a free address on 127.0.0.1.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// procWrites is the bytes process pid caused to be written to storage so
// far (write_bytes of /proc/PID/io; 0 where there is none).
func procWrites(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
