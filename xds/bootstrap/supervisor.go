package bootstrap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Restart backoff of the supervised Envoy.
const (
	minRestartDelay = 500 * time.Millisecond
	maxRestartDelay = 30 * time.Second
	stopTimeout     = 5 * time.Second
	// stableAfter resets the backoff: an Envoy that ran this long was not crash-looping.
	stableAfter = 30 * time.Second
)

// Supervisor runs Envoy with a bootstrap, restarts it with backoff when it exits, and stops it
// cleanly (SIGTERM, then SIGKILL after 5s) when its context ends.
type Supervisor struct {
	// EnvoyPath is the Envoy binary.
	EnvoyPath string
	// Bootstrap is the bootstrap JSON (see JSON).
	Bootstrap []byte
	// Dir holds the bootstrap file and the admin address file; it must exist.
	Dir string
	// Args are extra Envoy arguments (e.g. --concurrency 1).
	Args   []string
	Logger *slog.Logger
	// Output receives Envoy's log (nil: discarded).
	Output io.Writer

	mu        sync.Mutex
	adminURL  string
	cmd       *exec.Cmd
	restarts  int
	lastStart time.Time
}

// Run supervises Envoy until ctx ends.
func (s *Supervisor) Run(ctx context.Context) error {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := filepath.Join(s.Dir, "envoy-bootstrap.json")
	if err := os.WriteFile(cfg, s.Bootstrap, 0o600); err != nil {
		return fmt.Errorf("bootstrap: writing %s: %w", cfg, err)
	}
	backoff := minRestartDelay
	for {
		exited, err := s.start(cfg)
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			s.stop(exited)
			return nil
		case err := <-exited:
			ran := time.Since(s.lastStart)
			if ran > stableAfter {
				backoff = minRestartDelay
			}
			s.Logger.Error("envoy exited; restarting", "err", err, "ran", ran.Round(time.Millisecond), "restart_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxRestartDelay)
		}
	}
}

func (s *Supervisor) start(cfg string) (<-chan error, error) {
	adminPath := filepath.Join(s.Dir, "envoy-admin-address")
	_ = os.Remove(adminPath) // a stale address must not be mistaken for the new process's
	// The supervisor restarts Envoy as a new process, never hot: without hot restart Envoy makes
	// no shared memory (an envoy_shared_memory_* file in /dev/shm per run, left behind) and no
	// base id to clash with other Envoys on the machine.
	args := append([]string{"-c", cfg, "--admin-address-path", adminPath, "--disable-hot-restart"}, s.Args...)
	cmd := exec.Command(s.EnvoyPath, args...)
	out := s.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Envoy dies with the agent even if the agent is killed without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bootstrap: starting envoy %s: %w", s.EnvoyPath, err)
	}
	s.mu.Lock()
	s.cmd, s.adminURL, s.lastStart = cmd, "", time.Now()
	s.restarts++
	s.mu.Unlock()
	s.Logger.Info("envoy started", "pid", cmd.Process.Pid, "path", s.EnvoyPath)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return exited, nil
}

func (s *Supervisor) stop(exited <-chan error) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-exited:
	case <-time.After(stopTimeout):
		s.Logger.Warn("envoy did not stop after SIGTERM; killing it", "pid", cmd.Process.Pid)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-exited
	}
	s.Logger.Info("envoy stopped", "exit", fmt.Sprint(err))
}

// Signal forwards a signal to Envoy (e.g. SIGUSR1 to reopen its logs).
func (s *Supervisor) Signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("bootstrap: envoy not running")
	}
	return s.cmd.Process.Signal(sig)
}

// AdminURL returns http://host:port of the running Envoy's admin interface, once known.
func (s *Supervisor) AdminURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.adminURL == "" {
		if b, err := os.ReadFile(filepath.Join(s.Dir, "envoy-admin-address")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			s.adminURL = "http://" + strings.TrimSpace(string(b))
		}
	}
	return s.adminURL
}

// Ready returns nil when Envoy reports LIVE on its admin /ready: it has its certificates and its
// first listeners and clusters.
func (s *Supervisor) Ready(ctx context.Context) error {
	u := s.AdminURL()
	if u == "" {
		return errors.New("envoy has not started")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("envoy admin: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("envoy is %s", strings.TrimSpace(string(body)))
	}
	return nil
}

// Restarts returns how many times Envoy was started.
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Counters returns Envoy's counters whose names contain filter, from its admin /stats.
func (s *Supervisor) Counters(ctx context.Context, filter string) (map[string]uint64, error) {
	u := s.AdminURL()
	if u == "" {
		return nil, errors.New("envoy has not started")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/stats?usedonly&type=Counters&filter="+url.QueryEscape(filter), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("envoy admin: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(value, 10, 64); err == nil {
			out[name] = n
		}
	}
	return out, sc.Err()
}
