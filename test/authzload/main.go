// Command authzload measures the ext_authz service over gRPC on loopback, the way Envoy calls it:
// mutual TLS with SPIFFE certificates, a few long-lived HTTP/2 connections, and a request that
// only the last rule of a 50-rule ABAC policy allows, carrying a JWT (verified once, then cached).
//
// The service runs in a child process (this binary again), so the load generator's own work and
// garbage collection do not run inside the measured server, as Envoy's would not. Two phases:
//
//   - fixed rate (-rate, default 5000 checks/s, open loop): latency is measured from the time
//     each request was due, not when it was sent, so a stalled server cannot hide its queue
//     (no coordinated omission); reports p50/p90/p99/p99.9/max;
//   - maximum throughput (closed loop, -concurrency levels): checks per second and latency.
//
// With -runs N both phases repeat N times and the medians are reported.
//
//	go run ./test/authzload -runs 6
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/test/procstat"
)

// childEnv makes this binary serve instead of generating load.
const childEnv = "AUTHZLOAD_SERVE_DIR"

type config struct {
	rate        int
	duration    time.Duration
	warmup      time.Duration
	conns       int
	concurrency []int
	runs        int
	p99Target   time.Duration
	serverProcs int
	serverCPU   string
	baseline    bool
	trace       bool
}

func main() {
	if dir := os.Getenv(childEnv); dir != "" {
		if err := serve(dir); err != nil {
			fmt.Fprintln(os.Stderr, "authzload server:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	var levels string
	flag.IntVar(&cfg.rate, "rate", 5000, "checks per second in the fixed-rate phase")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each measured phase")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before each phase")
	flag.IntVar(&cfg.conns, "conns", 2, "gRPC connections (Envoy keeps one per worker thread)")
	flag.StringVar(&levels, "concurrency", "16,64", "concurrent callers tried in the throughput phase")
	flag.IntVar(&cfg.runs, "runs", 1, "repetitions; medians are reported")
	flag.DurationVar(&cfg.p99Target, "p99-target", time.Millisecond, "p99 target at -rate, for the verdict line")
	flag.IntVar(&cfg.serverProcs, "server-procs", 0, "GOMAXPROCS of the server process (0: all CPUs)")
	flag.BoolVar(&cfg.baseline, "baseline", false, "serve a Check that answers OK without deciding: the transport's own cost, for comparison")
	flag.BoolVar(&cfg.trace, "trace", false, "export every Check's spans (100% sampled) over OTLP to a collector in this process: tracing's cost")
	flag.StringVar(&cfg.serverCPU, "server-cpus", "", "CPU list to pin the server process to (taskset -c), e.g. 0; run the generator with taskset on the others")
	flag.Parse()
	for _, l := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(l))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "authzload: bad -concurrency %q\n", levels)
			os.Exit(2)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "authzload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	dir, err := os.MkdirTemp("", "authzload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mat, err := writeMaterial(dir)
	if err != nil {
		return err
	}
	addr, pid, stopServer, err := startServer(ctx, dir, cfg)
	if err != nil {
		return err
	}
	defer stopServer()
	cpu := cpuMeter{pid: pid}
	cl, err := newClient(addr, mat, cfg.conns)
	if err != nil {
		return err
	}
	defer cl.close()
	if err := cl.checkOnce(ctx); err != nil {
		return fmt.Errorf("first check: %w", err)
	}
	serverProcs := "all CPUs"
	if cfg.serverProcs > 0 {
		serverProcs = strconv.Itoa(cfg.serverProcs)
	}
	if cfg.serverCPU != "" {
		serverProcs += ", pinned to CPU " + cfg.serverCPU
	}
	what := "50-rule ABAC policy, cached JWT"
	if cfg.baseline {
		what = "BASELINE: a Check that answers OK without deciding"
	}
	fmt.Fprintf(out, "authzload: %s, SPIFFE mTLS, %d connections, server in its own process (GOMAXPROCS %s), load generator GOMAXPROCS %s, %d CPUs\n",
		what, cfg.conns, serverProcs, gomaxprocs(), runtime.NumCPU())
	fmt.Fprintf(out, "load average before: %s\n", loadAverage())
	var fixed []fixedResult
	var peaks []peakResult
	for i := 1; i <= cfg.runs; i++ {
		cpu.start()
		f, err := cl.fixedRate(ctx, cfg.rate, cfg.warmup, cfg.duration)
		if err != nil {
			return err
		}
		f.serverCPU, f.clientCPU = cpu.perCheck(int(float64(cfg.rate) * (cfg.warmup + cfg.duration).Seconds()))
		fixed = append(fixed, f)
		fmt.Fprintf(out, "run %d  fixed %d/s: achieved %.0f/s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (sent→answered p50 %s p99 %s)  errors %d  CPU per check: server %s, load generator %s\n",
			i, cfg.rate, f.achieved, us(f.p50), us(f.p90), us(f.p99), us(f.p999), us(f.max), us(f.wireP50), us(f.wireP99), f.errors, us(f.serverCPU), us(f.clientCPU))
		best := peakResult{}
		for _, c := range cfg.concurrency {
			p, err := cl.maxThroughput(ctx, c, cfg.warmup/2, cfg.duration)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "run %d  closed loop, %d callers: %.0f checks/s  p50 %s  p99 %s  errors %d\n", i, c, p.rate, us(p.p50), us(p.p99), p.errors)
			if p.rate > best.rate {
				best = p
			}
		}
		peaks = append(peaks, best)
	}
	mf := func(get func(fixedResult) float64) float64 { return median(fixed, get) }
	mp := func(get func(peakResult) float64) float64 { return median(peaks, get) }
	p99 := time.Duration(mf(func(r fixedResult) float64 { return float64(r.p99) }))
	fmt.Fprintf(out, "\nmedians over %d runs:\n", cfg.runs)
	fmt.Fprintf(out, "  fixed %d/s: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", cfg.rate,
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.p50) }))),
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.p90) }))),
		us(p99),
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.p999) }))),
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.max) }))))
	fmt.Fprintf(out, "  fixed %d/s, from send instead of due time: p50 %s  p99 %s\n", cfg.rate,
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.wireP50) }))),
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.wireP99) }))))
	fmt.Fprintf(out, "  CPU per check: server %s, load generator %s\n",
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.serverCPU) }))),
		us(time.Duration(mf(func(r fixedResult) float64 { return float64(r.clientCPU) }))))
	fmt.Fprintf(out, "  max throughput: %.0f checks/s (p99 %s at that load)\n",
		mp(func(r peakResult) float64 { return r.rate }), us(time.Duration(mp(func(r peakResult) float64 { return float64(r.p99) }))))
	verdict := "MET"
	if p99 > cfg.p99Target {
		verdict = fmt.Sprintf("MISSED by %s", us(p99-cfg.p99Target))
	}
	fmt.Fprintf(out, "  target p99 <= %s at %d/s: %s\n", us(cfg.p99Target), cfg.rate, verdict)
	return nil
}

// startServer runs this binary as the server and returns the address it listens on and its pid.
func startServer(ctx context.Context, dir string, cfg config) (string, int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, self, os.Args[1:]...)
	if cfg.serverCPU != "" {
		// taskset execs the server in place, so the pid is the server's.
		cmd = exec.CommandContext(ctx, "taskset", append([]string{"-c", cfg.serverCPU, self}, os.Args[1:]...)...)
	}
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	if cfg.serverProcs > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", cfg.serverProcs))
	}
	if cfg.baseline {
		cmd.Env = append(cmd.Env, baselineEnv+"=1")
	}
	if cfg.trace {
		addr, stopCollector, err := startDiscardCollector()
		if err != nil {
			return "", 0, nil, err
		}
		go func() { <-ctx.Done(); stopCollector() }()
		cmd.Env = append(cmd.Env, traceEnv+"="+addr)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the server exits on SIGTERM; Wait reports how
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "authzload: server:", err)
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("server did not start: %w", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if !ok {
		stop()
		return "", 0, nil, fmt.Errorf("server said %q", line)
	}
	return addr, cmd.Process.Pid, stop, nil
}

func median[T any](rs []T, get func(T) float64) float64 {
	vals := make([]float64, len(rs))
	for i, r := range rs {
		vals[i] = get(r)
	}
	slices.Sort(vals)
	n := len(vals)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return vals[n/2]
	}
	return (vals[n/2-1] + vals[n/2]) / 2
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func gomaxprocs() string {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		return v
	}
	return "all CPUs"
}

// cpuMeter measures CPU time of the server process (from /proc) and of this process.
type cpuMeter struct {
	pid            int
	server, client time.Duration
}

func (m *cpuMeter) start() { m.server, m.client = m.read() }

func (m *cpuMeter) perCheck(n int) (server, client time.Duration) {
	s, c := m.read()
	if n == 0 {
		return 0, 0
	}
	return (s - m.server) / time.Duration(n), (c - m.client) / time.Duration(n)
}

func (m *cpuMeter) read() (server, client time.Duration) {
	if c, err := procstat.CPUTime(m.pid); err == nil {
		server = c
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return server, client
}

// writeMaterial creates the CA, certificates, signing key, token and mesh in dir.
func writeMaterial(dir string) (*material, error) {
	m, err := newMaterial()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.pem": m.ca.CertPEM, "server.pem": m.server.CertPEM, "server-key.pem": m.server.KeyPEM,
		filepath.Join("mesh", "mesh.yaml"): []byte(m.mesh),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, err
		}
	}
	return m, nil
}
