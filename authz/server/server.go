package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/revocation"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/model"
)

// MeshSource is where the server reads the live mesh: source.Source satisfies it.
type MeshSource interface {
	Current() (*model.Mesh, <-chan struct{})
}

// Options configure a Server. Logger, TracerProvider, Meter and Source are required.
type Options struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Meter          metric.Meter
	Source         MeshSource
	// Compiler compiles meshes; pass the one whose Check the source runs, so Rego modules
	// are compiled once per change. A new one unless set.
	Compiler *policy.Compiler
	// DecisionLog receives one JSON line per decision; nil discards them.
	DecisionLog io.Writer
	// JWT configures token verification; its Logger and Meter default to the server's.
	JWT jwt.Options
	// Callers refuses Checks from anyone but proxies (callers.go). Nil leaves who may call to
	// the transport's authorization; every deployment sets it.
	Callers *Callers
	// Now is the clock; time.Now unless set.
	Now func() time.Time
}

// Server is the ext_authz service. Create it with New, run Run, and Register it on a gRPC
// server built with the caller's transport credentials.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	log      *slog.Logger
	tracer   trace.Tracer
	src      MeshSource
	compiler *policy.Compiler
	verifier *jwt.Verifier
	apikeys  *apikey.Verifier
	dlog     *DecisionLog
	metrics  *metrics
	now      func() time.Time
	callers  *Callers
	certs    *peerCerts
	engine   atomic.Pointer[policy.Engine]
	// revocations are the live mesh's, swapped with the engine.
	revocations atomic.Pointer[revocation.Index]
	// lastRefusal is when a refused caller was last logged (UnixNano).
	lastRefusal atomic.Int64
	// metaValues caches dynamic-metadata values by string (see metaValue).
	metaValues sync.Map

	mu        sync.Mutex
	lastError string // why the newest mesh did not compile; "" when it did
	lastTried string // version of the newest mesh seen
}

// New returns a server; it decides nothing until Run has loaded a mesh (503 until then).
func New(opts Options) (*Server, error) {
	switch {
	case opts.Logger == nil:
		return nil, errors.New("server: a logger is required")
	case opts.TracerProvider == nil:
		return nil, errors.New("server: a tracer provider is required")
	case opts.Source == nil:
		return nil, errors.New("server: a mesh source is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Compiler == nil {
		opts.Compiler = policy.NewCompiler(policy.Options{Now: opts.Now})
	}
	jo := opts.JWT
	if jo.Logger == nil {
		jo.Logger = opts.Logger.With("component", "authz/jwt")
	}
	if jo.Meter == nil {
		jo.Meter = opts.Meter
	}
	if jo.Now == nil {
		jo.Now = opts.Now
	}
	v, err := jwt.New(jo)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log: opts.Logger, src: opts.Source, compiler: opts.Compiler, verifier: v, apikeys: apikey.New(), now: opts.Now, callers: opts.Callers, certs: newPeerCerts(),
		tracer: opts.TracerProvider.Tracer("github.com/portcullis/portcullis/authz/server"),
	}
	if s.metrics, err = newMetrics(opts.Meter, s); err != nil {
		v.Close()
		return nil, err
	}
	out := opts.DecisionLog
	if out == nil {
		out = io.Discard
	}
	s.dlog = NewDecisionLog(out, opts.Logger, func() { s.metrics.logErrors.Add(context.Background(), 1) })
	return s, nil
}

// GRPCServerOptions are the gRPC server settings the service is meant to run with, besides the
// caller's credentials: Envoy keeps one HTTP/2 connection per cluster with keepalive pings
// (envoyproxy/gateway#5014 is what a connection per call costs), so pings are permitted and
// dead peers are found; messages are bounded (a CheckRequest carries at most the body bytes
// Mesh.spec.authz.maxRequestBytes allows, 1 MiB, plus headers).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(4 << 20),
		grpc.MaxConcurrentStreams(1024),
		// Reuse goroutines across calls: a fresh goroutine per call grows its stack on every
		// Check (copystack was 7% of the server's CPU under load).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		// Fixed flow-control windows switch off BDP estimation, whose PING frames cost writes
		// and wake-ups on a connection that only carries small messages.
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(1 << 20),
	}
}

// Register registers the Authorization service on a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, s) }

// Run follows the mesh source until ctx ends: each new mesh is compiled and its JWT providers
// updated; a mesh that does not compile is reported and the last good engine stays. On return
// the JWT providers are stopped and the decision log is flushed.
func (s *Server) Run(ctx context.Context) error {
	defer func() {
		s.verifier.Close()
		if err := s.dlog.Close(context.Background()); err != nil {
			s.log.Error("flushing the decision log", "err", err)
		}
	}()
	for {
		m, changed := s.src.Current()
		if m != nil {
			s.apply(m)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (s *Server) apply(m *model.Mesh) {
	if e := s.engine.Load(); e != nil && e.Version() == m.Version {
		return
	}
	s.mu.Lock()
	s.lastTried = m.Version
	s.mu.Unlock()
	e, problems := s.compiler.Compile(m)
	if problems != nil {
		s.mu.Lock()
		s.lastError = problems.Error()
		s.mu.Unlock()
		live := ""
		if old := s.engine.Load(); old != nil {
			live = old.Version()
		}
		s.log.Error("policies do not compile; keeping the last good ones", "version", m.Version, "live_version", live, "err", problems)
		return
	}
	// Providers first: a policy naming a new provider must not meet a verifier without it.
	if err := s.verifier.Update(m); err != nil {
		s.log.Error("some JWT providers could not be started", "version", m.Version, "err", err)
	}
	// Revocations before the engine, as providers: once a request is decided on this mesh, its
	// revocations apply.
	rev := revocation.New(m, s.now())
	s.revocations.Store(rev)
	s.apikeys.Update(m)
	s.engine.Store(e)
	s.metrics.attrs.Clear()
	s.metaValues.Clear()
	s.mu.Lock()
	s.lastError = ""
	s.mu.Unlock()
	s.log.Info("authorization policies loaded", "version", m.Version, "policies", e.Policies(), "jwt_providers", len(m.JWTProviders), "api_key_providers", len(m.APIKeyProviders), "revocations", rev.Len())
}

// Ready reports whether the server decides requests: a mesh has been loaded.
func (s *Server) Ready() error {
	if s.engine.Load() == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.lastError != "" {
			return fmt.Errorf("no policies compiled yet: %s", s.lastError)
		}
		return errors.New("no mesh loaded yet")
	}
	return nil
}

// Status is what /debug/authz shows: the live policies and each JWT provider with its health.
type Status struct {
	Ready       bool                 `json:"ready"`
	MeshVersion string               `json:"meshVersion,omitempty"`
	CompiledAt  time.Time            `json:"compiledAt,omitzero"`
	Policies    []policy.Summary     `json:"policies"`
	LastTried   string               `json:"lastTriedVersion,omitempty"`
	LastError   string               `json:"lastError,omitempty"`
	Providers   []jwt.ProviderStatus `json:"jwtProviders"`
	TokenCache  int                  `json:"verifiedTokensCached"`
	// Revocations counts the JWT revocation entries live when the mesh was loaded.
	Revocations int `json:"revocations"`
	// APIKeyProviders count each provider's keys; no key, hash or secret.
	APIKeyProviders []apikey.ProviderStatus `json:"apiKeyProviders"`
}

// Status returns the server's state.
func (s *Server) Status() Status {
	st := Status{Providers: s.verifier.Status(), APIKeyProviders: s.apikeys.Status(), TokenCache: s.verifier.CacheLen(), Policies: []policy.Summary{}, Revocations: s.revocations.Load().Len()}
	if e := s.engine.Load(); e != nil {
		st.Ready, st.MeshVersion, st.CompiledAt, st.Policies = true, e.Version(), e.CompiledAt(), e.Summaries()
	}
	s.mu.Lock()
	st.LastTried, st.LastError = s.lastTried, s.lastError
	s.mu.Unlock()
	return st
}

// DebugHandler serves Status as JSON, for /debug/authz.
func (s *Server) DebugHandler() http.Handler {
	return telemetry.JSONHandler(func() any { return s.Status() })
}
