package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/telemetry/serve"
)

// ReadinessCheck returns nil when its component is ready, or why it is not.
type ReadinessCheck func() error

// Admin is the admin HTTP server: /healthz, /readyz and /metrics for anyone who can reach the
// port (probes, Prometheus), and the debug pages components register for loopback clients only:
// on Kubernetes the port listens on the pod's address for the kubelet and Prometheus, while the
// mesh, every proxy's configuration and the policies are read through kubectl port-forward
// (which connects from inside the pod).
type Admin struct {
	log    *slog.Logger
	mux    *http.ServeMux
	mu     sync.Mutex
	checks []namedCheck
	paths  []string
}

type namedCheck struct {
	name  string
	check ReadinessCheck
}

// NewAdmin returns an admin server serving metrics from m (nil serves none).
func NewAdmin(log *slog.Logger, m *Metrics) *Admin {
	a := &Admin{log: log, mux: http.NewServeMux()}
	a.handle("/healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	a.handle("/readyz", http.HandlerFunc(a.readyz))
	if m != nil {
		a.handle("/metrics", m.Handler())
	}
	a.mux.HandleFunc("/{$}", a.index)
	return a
}

// HandlePublic registers a handler that answers anyone who reaches the port, like /healthz: for
// the probes the kubelet makes, never for pages that show configuration.
func (a *Admin) HandlePublic(path string, h http.Handler) { a.handle(path, h) }

// Handle registers a debug page: it answers loopback clients only.
func (a *Admin) Handle(path string, h http.Handler) { a.handle(path, LoopbackOnly(h)) }

func (a *Admin) handle(path string, h http.Handler) {
	a.mu.Lock()
	a.paths = append(a.paths, path)
	a.mu.Unlock()
	a.mux.Handle(path, h)
}

// LoopbackOnly refuses (403) requests that do not come from a loopback address.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "debug pages answer loopback clients only (on Kubernetes: kubectl port-forward)", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// AddReadiness adds a check that must pass for /readyz to answer 200.
func (a *Admin) AddReadiness(name string, check ReadinessCheck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks = append(a.checks, namedCheck{name, check})
}

// Ready runs the readiness checks and returns every failure.
func (a *Admin) Ready() error {
	a.mu.Lock()
	checks := slices.Clone(a.checks)
	a.mu.Unlock()
	var errs []error
	for _, c := range checks {
		if err := c.check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

func (a *Admin) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := a.Ready(); err != nil {
		http.Error(w, "not ready:\n"+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

func (a *Admin) index(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	paths := slices.Clone(a.paths)
	a.mu.Unlock()
	slices.Sort(paths)
	fmt.Fprintf(w, "Portcullis admin\n\n%s\n", strings.Join(paths, "\n"))
}

// Handler returns the admin mux, for tests.
func (a *Admin) Handler() http.Handler { return a.mux }

// Serve serves on ln until ctx ends, then shuts down, giving requests in flight up to 2s.
func (a *Admin) Serve(ctx context.Context, ln net.Listener) error {
	a.log.Info("admin server listening", "addr", ln.Addr().String())
	return serve.HTTP(ctx, "telemetry: admin server", &http.Server{Handler: a.mux, ReadHeaderTimeout: 5 * time.Second}, ln, serve.DefaultGrace)
}

// JSONHandler serves what get returns as indented JSON.
func JSONHandler(get func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(get()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}
