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

// Admin is the admin HTTP server: /healthz, /readyz, /metrics and the debug pages components
// register. It binds where it is told (loopback by default) and serves no secrets.
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
	a.Handle("/healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	a.Handle("/readyz", http.HandlerFunc(a.readyz))
	if m != nil {
		a.Handle("/metrics", m.Handler())
	}
	a.mux.HandleFunc("/{$}", a.index)
	return a
}

// Handle registers a handler, e.g. a component's debug page.
func (a *Admin) Handle(path string, h http.Handler) {
	a.mu.Lock()
	a.paths = append(a.paths, path)
	a.mu.Unlock()
	a.mux.Handle(path, h)
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
