package envoytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the Envoy release the project is built and tested against.
const Version = "1.40"

// ReadyTimeout bounds how long Start waits for Envoy's admin /ready.
const ReadyTimeout = 60 * time.Second

// Find returns the path of the Envoy binary: $ENVOY_BIN, <repo>/.cache/bin/envoy, or envoy on PATH.
func Find() (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("envoytest: ENVOY_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, ".cache", "bin", "envoy")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", errors.New("envoytest: no Envoy binary: run `make envoy`, or set ENVOY_BIN, or put envoy on PATH")
}

// RepoRoot returns the directory holding go.mod, searching up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("envoytest: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Require returns the Envoy binary, or ends the test: skipping it under -short (a test that runs
// Envoy is not a short one, and make test's short pass runs before the tools are installed),
// failing it under CI=true (where Envoy must be installed) and skipping it elsewhere.
func Require(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Envoy (not a -short test)")
	}
	p, err := Find()
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: tests that need Envoy must run)", err)
	}
	t.Skipf("SKIPPING, NO ENVOY: %v", err)
	return ""
}

// Envoy is a running Envoy process.
type Envoy struct {
	// AdminURL is http://127.0.0.1:<port> of Envoy's admin interface.
	AdminURL string
	cmd      *exec.Cmd
	log      *syncBuffer
	exited   chan struct{}
	stopOnce sync.Once
}

// Options adjust how Envoy is started.
type Options struct {
	// Args are extra command-line arguments.
	Args []string
	// LogLevel is Envoy's --log-level; "info" unless set.
	LogLevel string
	// Env adds environment variables.
	Env []string
	// Concurrency is Envoy's number of worker threads; 1 unless set.
	Concurrency int
}

// Start runs Envoy with the given bootstrap (YAML) and waits until it is ready. The bootstrap's
// admin address should use port 0; listeners may too (see ListenerPort). Envoy is stopped when
// the test ends, and its log is printed if the test failed.
func Start(t testing.TB, bootstrap string, opts Options) *Envoy {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bootstrap.yaml")
	adminPath := filepath.Join(dir, "admin-address")
	if err := os.WriteFile(cfg, []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	workers := max(opts.Concurrency, 1)
	args := append([]string{
		"-c", cfg,
		"--admin-address-path", adminPath,
		"--disable-hot-restart", // several Envoys on one machine, and no shared memory left in /dev/shm
		"--concurrency", strconv.Itoa(workers),
		"--log-level", level,
	}, opts.Args...)
	e := &Envoy{log: &syncBuffer{}, exited: make(chan struct{})}
	e.cmd = exec.Command(bin, args...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.Env = append(os.Environ(), opts.Env...)
	// Own process group, so stopping Envoy never signals the test binary.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("envoytest: starting %s: %v", bin, err)
	}
	go func() {
		_ = e.cmd.Wait() // exit status is reported through the log and readiness
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("envoy log (%s):\n%s", bin, e.Log())
		}
	})
	if err := e.waitReady(adminPath); err != nil {
		t.Fatalf("envoytest: %v\nenvoy log:\n%s", err, e.Log())
	}
	return e
}

func (e *Envoy) waitReady(adminPath string) error {
	deadline := time.Now().Add(ReadyTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for ; time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-e.exited:
			return fmt.Errorf("envoy exited before it was ready: %v", e.cmd.ProcessState)
		default:
		}
		if e.AdminURL == "" {
			addr, err := os.ReadFile(adminPath)
			if err != nil || len(bytes.TrimSpace(addr)) == 0 {
				continue
			}
			e.AdminURL = "http://" + strings.TrimSpace(string(addr))
		}
		resp, err := client.Get(e.AdminURL + "/ready")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "LIVE" {
			return nil
		}
	}
	return fmt.Errorf("envoy not ready within %s (admin %q)", ReadyTimeout, e.AdminURL)
}

// Pause stops Envoy (SIGSTOP) until Resume: it keeps its connections open and answers nothing,
// like a proxy whose ACK is late.
func (e *Envoy) Pause() { _ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume continues a paused Envoy.
func (e *Envoy) Resume() { _ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGCONT) }

// Stop terminates Envoy: SIGTERM, then SIGKILL after 5s. Safe to call more than once, and on a
// paused Envoy.
func (e *Envoy) Stop() {
	e.stopOnce.Do(func() {
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGTERM)
		e.Resume()
		select {
		case <-e.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
			<-e.exited
		}
	})
}

// Pid is the Envoy process's ID.
func (e *Envoy) Pid() int { return e.cmd.Process.Pid }

// Log returns what Envoy has printed so far.
func (e *Envoy) Log() string { return e.log.String() }

// Admin GETs path from Envoy's admin interface and returns the body.
func (e *Envoy) Admin(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AdminURL+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("envoytest: admin %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("envoytest: admin %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("envoytest: admin %s: %s: %s", path, resp.Status, body)
	}
	return string(body), nil
}

// AdminJSON GETs path from Envoy's admin interface and decodes the JSON body into v.
func (e *Envoy) AdminJSON(ctx context.Context, path string, v any) error {
	body, err := e.Admin(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		return fmt.Errorf("envoytest: admin %s: %w", path, err)
	}
	return nil
}

// ListenerPort returns the port a named listener is bound to (useful when it asked for port 0).
func (e *Envoy) ListenerPort(ctx context.Context, name string) (int, error) {
	var ls struct {
		ListenerStatuses []struct {
			Name         string `json:"name"`
			LocalAddress struct {
				SocketAddress struct {
					PortValue int `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	if err := e.AdminJSON(ctx, "/listeners?format=json", &ls); err != nil {
		return 0, err
	}
	var have []string
	for _, l := range ls.ListenerStatuses {
		if l.Name == name {
			return l.LocalAddress.SocketAddress.PortValue, nil
		}
		have = append(have, l.Name)
	}
	return 0, fmt.Errorf("envoytest: no listener %q (have %q)", name, have)
}

// syncBuffer is a bytes.Buffer safe for Envoy's stdout and stderr writers and concurrent reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// SumCounters adds up the values of Envoy's /stats text ("name: value" lines), as a filtered
// query returns them.
func SumCounters(stats string) (uint64, error) {
	var n uint64
	for _, line := range strings.Split(strings.TrimSpace(stats), "\n") {
		if _, v, ok := strings.Cut(line, ": "); ok {
			c, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("envoytest: stat %q: %w", line, err)
			}
			n += c
		}
	}
	return n, nil
}
