package authzservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/ratelimit"
	"github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/telemetry/serve"
	"github.com/portcullis/portcullis/xds/source"
)

// Default addresses; the admin port differs from the control plane's so both run on one host.
const (
	DefaultListen    = "127.0.0.1:15011"
	DefaultAdminAddr = "127.0.0.1:15015"
)

const (
	// svidTimeout bounds the wait for the first SVID from the Workload API.
	svidTimeout = 30 * time.Second
	// gcPercent is the GOGC the service runs with unless the environment sets one: its live heap
	// is small (a few MB) and almost all its garbage is gRPC's per-call buffers, so collecting at
	// 5x the live heap instead of 2x cuts GC work (and GC-induced tail latency) for a few MB.
	gcPercent = 400
	// shutdownGrace bounds a clean stop once Run's context ends.
	shutdownGrace = 5 * time.Second
)

// Config is what the service is started with; cmd/portcullis fills it from flags.
type Config struct {
	Version string
	Logger  *slog.Logger
	Stdout  io.Writer // the decision log when DecisionLog is "-" or ""

	ConfigDir         string // mesh documents: policies, JWT providers
	Listen, AdminAddr string
	// WorkloadAPISocket is the SPIFFE Workload API socket ("" reads SPIFFE_ENDPOINT_SOCKET).
	WorkloadAPISocket string
	DecisionLog       string
	OTLPEndpoint      string // "" exports no spans
	OTLP              telemetry.ExportTLS
	SamplingPercent   float64 // of traces the caller (Envoy) has not decided
	// RateLimit is the Redis of the global rate limit service, served next to ext_authz.
	RateLimit ratelimit.Redis
}

// Service is the authorization service, ready to run.
type Service struct {
	cfg             Config
	log             *slog.Logger
	grpcLn, adminLn net.Listener
}

// New checks cfg and binds the ports.
func New(cfg Config) (*Service, error) {
	if cfg.ConfigDir == "" {
		return nil, errors.New("authzservice: a directory of mesh documents is required")
	}
	if cfg.SamplingPercent < 0 || cfg.SamplingPercent > 100 {
		return nil, fmt.Errorf("authzservice: --trace-sampling must be 0-100, not %v", cfg.SamplingPercent)
	}
	if cfg.WorkloadAPISocket == "" && os.Getenv("SPIFFE_ENDPOINT_SOCKET") == "" {
		return nil, errors.New("authzservice: no Workload API socket: set --workload-api-socket or SPIFFE_ENDPOINT_SOCKET")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	grpcLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("authzservice: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("authzservice: admin: %w", err), grpcLn.Close())
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "authz"), grpcLn: grpcLn, adminLn: adminLn}, nil
}

// Run serves until ctx ends, then stops within a grace period and flushes traces and metrics.
func (s *Service) Run(ctx context.Context) (err error) {
	cfg := s.cfg
	defer func() {
		// Closing a listener its server already closed is harmless.
		_ = s.grpcLn.Close()
		_ = s.adminLn.Close()
	}()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	metrics, err := telemetry.NewMetrics("portcullis-authz", cfg.Version)
	if err != nil {
		return err
	}
	tracing, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{
		Endpoint: cfg.OTLPEndpoint, TLS: cfg.OTLP.TLS, CAFile: cfg.OTLP.CAFile, SamplingRatio: cfg.SamplingPercent / 100,
		ServiceName: "portcullis-authz", ServiceVersion: cfg.Version, InstanceID: telemetry.InstanceID(),
	}, metrics.Meter("telemetry"))
	if err != nil {
		return err
	}
	decisions, closeLog, err := server.OpenDecisionLog(cfg.DecisionLog, cfg.Stdout)
	if err != nil {
		return err
	}
	defer func() {
		if err := closeLog(); err != nil {
			s.log.Error("closing the decision log", "err", err)
		}
	}()
	// One compiler for the source's check and the server, so Rego compiles once per change.
	compiler := policy.NewCompiler(policy.Options{})
	docs, err := source.NewDir(cfg.ConfigDir, source.DirOptions{
		Logger: cfg.Logger.With("component", "source"), Meter: metrics.Meter("xds/source"),
		Checks: []source.Checker{compiler.Check, jwt.Check},
	})
	if err != nil {
		return err
	}
	if err := docs.Load(); err != nil {
		s.log.Warn("starting without a valid mesh; requests are denied (503) until the documents are fixed")
	}
	svids, err := x509Source(ctx, cfg.WorkloadAPISocket)
	if err != nil {
		return err
	}
	defer svids.Close()
	svid, err := svids.GetX509SVID()
	if err != nil {
		return fmt.Errorf("authzservice: SVID: %w", err)
	}
	td := svid.ID.TrustDomain()
	// Checks and rate limit calls from proxies only. Revocations live with the CA, which this
	// process does not run: a revoked proxy is refused here once its SVID expires
	// (docs/security.md).
	callers := &server.Callers{TrustDomain: td, NotProxies: []spiffeid.ID{svid.ID, ca.ControlPlaneID(td)}}
	srv, err := server.New(server.Options{
		Logger: s.log, TracerProvider: tracing.Provider, Meter: metrics.Meter("authz/server"),
		Source: docs, Compiler: compiler, DecisionLog: decisions, Callers: callers,
	})
	if err != nil {
		return err
	}
	limits, err := ratelimit.New(ratelimit.Options{
		Logger: cfg.Logger.With("component", "ratelimit"), TracerProvider: tracing.Provider,
		Meter: metrics.Meter("authz/ratelimit"), Redis: cfg.RateLimit, Authorize: callers.Authorize,
	})
	if err != nil {
		return err
	}
	defer limits.Close()
	creds := credentials.NewTLS(tlsconfig.MTLSServerConfig(svids, svids, tlsconfig.AuthorizeMemberOf(td)))
	grpcServer := grpc.NewServer(append(server.GRPCServerOptions(), grpc.Creds(creds))...)
	srv.Register(grpcServer)
	srv.AccessLog().Register(grpcServer)
	limits.Register(grpcServer)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(grpcServer, healthServer)

	admin := telemetry.NewAdmin(s.log, metrics)
	admin.AddReadiness("authz", srv.Ready)
	admin.Handle("/debug/authz", srv.DebugHandler())
	admin.Handle("/debug/mesh", telemetry.JSONHandler(func() any { return docs.Status() }))
	s.log.Info("authz server listening", "addr", s.grpcLn.Addr().String(), "admin_addr", s.adminLn.Addr().String(), "spiffe_id", svid.ID.String(), "trust_domain", td.Name())

	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return docs.Run(gctx) })
	group.Go(func() error { return srv.Run(gctx) })
	group.Go(func() error { return admin.Serve(gctx, s.adminLn) })
	group.Go(func() error { return followReadiness(gctx, srv, healthServer) })
	group.Go(func() error { return serve.GRPC(gctx, "authzservice: gRPC", grpcServer, s.grpcLn, serve.DefaultGrace) })
	return serve.Wait(ctx, s.log, group, shutdownGrace, tracing.Shutdown, metrics.Shutdown)
}

// x509Source connects to the Workload API and waits (bounded) for the first SVID.
func x509Source(ctx context.Context, socket string) (*workloadapi.X509Source, error) {
	var opts []workloadapi.X509SourceOption
	if socket != "" {
		opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	}
	wctx, cancel := context.WithTimeout(ctx, svidTimeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(wctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("authzservice: Workload API: no SVID within %s: %w", svidTimeout, err)
	}
	return src, nil
}

// followReadiness mirrors readiness into the gRPC health service, for Envoy's health checks.
func followReadiness(ctx context.Context, srv *server.Server, hs *health.Server) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st := healthpb.HealthCheckResponse_SERVING
		if srv.Ready() != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		hs.SetServingStatus("", st)
		hs.SetServingStatus("envoy.service.auth.v3.Authorization", st)
		select {
		case <-ctx.Done():
			hs.Shutdown()
			return nil
		case <-t.C:
		}
	}
}
