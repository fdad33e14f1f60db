//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/source"
)

// defaultAuthzAdminAddr differs from the control plane's admin port so both can run on one host.
const defaultAuthzAdminAddr = "127.0.0.1:15015"

// svidTimeout bounds the wait for the first SVID from the Workload API.
const svidTimeout = 30 * time.Second

type authzFlags struct {
	configDir    string
	listen       string
	adminAddr    string
	socket       string
	decisionLog  string
	otlpEndpoint string
	sampling     float64
}

func newAuthzCommand(g *globals) *cobra.Command {
	f := &authzFlags{}
	cmd := &cobra.Command{
		Use:   "authz",
		Short: "Run the ext_authz authorization service on its own",
		Long: `Run the authorization service (Envoy ext_authz, gRPC) apart from the control plane, to scale
authorization on its own. It loads the mesh documents in --config (policies, JWT providers;
re-read on change, the last good set stays live) and serves
envoy.service.auth.v3.Authorization/Check on --listen with mutual TLS: its own X.509-SVID and
the trust bundle come from the SPIFFE Workload API (--workload-api-socket), and only workloads
of its trust domain may call it.

Decisions are written as JSON lines to --decision-log ("-" is stdout). The admin port serves:

  /healthz       the process is up
  /readyz        a valid mesh is loaded and compiled
  /metrics       Prometheus metrics
  /debug/authz   live policies, JWT providers' health, token cache`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAuthz(cmd.Context(), g, f, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configDir, "config", "", "directory of mesh documents (required)")
	fl.StringVar(&f.listen, "listen", defaultAuthzAddr, "ext_authz gRPC address (mTLS)")
	fl.StringVar(&f.adminAddr, "admin-addr", defaultAuthzAdminAddr, "admin HTTP address (health, readiness, metrics, debug)")
	fl.StringVar(&f.socket, "workload-api-socket", "", "path of the SPIFFE Workload API unix socket (default: $SPIFFE_ENDPOINT_SOCKET)")
	fl.StringVar(&f.decisionLog, "decision-log", "-", `decision log file (JSON lines, appended, mode 0600); "-" is stdout`)
	fl.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector (host:port) for the service's spans; none when empty")
	fl.Float64Var(&f.sampling, "trace-sampling", 100, "percent of traces sampled when the caller (Envoy) has not decided")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// authzGCPercent is the GOGC the service runs with unless the environment sets one: its live
// heap is small (a few MB) and almost all its garbage is gRPC's per-call buffers, so collecting
// at 5x the live heap instead of 2x cuts GC work (and GC-induced tail latency) for a few MB.
const authzGCPercent = 400

func runAuthz(ctx context.Context, g *globals, f *authzFlags, stdout io.Writer) error {
	log := g.log.With("component", "authz")
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(authzGCPercent)
	}
	if f.sampling < 0 || f.sampling > 100 {
		return fmt.Errorf("--trace-sampling must be 0-100, not %v", f.sampling)
	}
	metrics, err := telemetry.NewMetrics("portcullis-authz", g.version)
	if err != nil {
		return err
	}
	tracing, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{
		Endpoint: f.otlpEndpoint, Insecure: telemetry.LoopbackEndpoint(f.otlpEndpoint), SamplingRatio: f.sampling / 100,
		ServiceName: "portcullis-authz", ServiceVersion: g.version, InstanceID: telemetry.InstanceID(),
	}, metrics.Meter("telemetry"))
	if err != nil {
		return err
	}
	decisions, closeLog, err := openDecisionLog(f.decisionLog, stdout)
	if err != nil {
		return err
	}
	defer func() {
		if err := closeLog(); err != nil {
			log.Error("closing the decision log", "err", err)
		}
	}()

	// One compiler for the source's check and the server, so Rego compiles once per change.
	compiler := policy.NewCompiler(policy.Options{})
	docs, err := source.NewDir(f.configDir, source.DirOptions{
		Logger: g.log.With("component", "source"), Meter: metrics.Meter("xds/source"),
		Checks: []source.Checker{compiler.Check, jwt.Check},
	})
	if err != nil {
		return err
	}
	if err := docs.Load(); err != nil {
		log.Warn("starting without a valid mesh; requests are denied (503) until the documents are fixed")
	}
	srv, err := server.New(server.Options{
		Logger: log, TracerProvider: tracing.Provider, Meter: metrics.Meter("authz/server"),
		Source: docs, Compiler: compiler, DecisionLog: decisions,
	})
	if err != nil {
		return err
	}

	svids, err := x509Source(ctx, f.socket)
	if err != nil {
		return err
	}
	defer svids.Close()
	svid, err := svids.GetX509SVID()
	if err != nil {
		return fmt.Errorf("authz: SVID: %w", err)
	}
	td := svid.ID.TrustDomain()
	creds := credentials.NewTLS(tlsconfig.MTLSServerConfig(svids, svids, tlsconfig.AuthorizeMemberOf(td)))
	grpcServer := grpc.NewServer(append(server.GRPCServerOptions(), grpc.Creds(creds))...)
	srv.Register(grpcServer)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(grpcServer, healthServer)

	admin := telemetry.NewAdmin(log, metrics)
	admin.AddReadiness("authz", srv.Ready)
	admin.Handle("/debug/authz", srv.DebugHandler())
	admin.Handle("/debug/mesh", telemetry.JSONHandler(func() any { return docs.Status() }))

	grpcLn, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("authz: %w", err)
	}
	adminLn, err := net.Listen("tcp", f.adminAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("admin: %w", err)
	}
	log.Info("authz server listening", "addr", grpcLn.Addr().String(), "admin_addr", adminLn.Addr().String(), "spiffe_id", svid.ID.String(), "trust_domain", td.Name())

	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return docs.Run(gctx) })
	group.Go(func() error { return srv.Run(gctx) })
	group.Go(func() error { return admin.Serve(gctx, adminLn) })
	group.Go(func() error { return followReadiness(gctx, srv, healthServer) })
	group.Go(func() error {
		errc := make(chan error, 1)
		go func() { errc <- grpcServer.Serve(grpcLn) }()
		select {
		case err := <-errc:
			return fmt.Errorf("authz: gRPC: %w", err)
		case <-gctx.Done():
			stopGRPC(grpcServer)
			return nil
		}
	})
	return waitWithGrace(ctx, log, group, tracing.Shutdown, metrics.Shutdown)
}

// x509Source connects to the Workload API and waits (bounded) for the first SVID.
func x509Source(ctx context.Context, socket string) (*workloadapi.X509Source, error) {
	var opts []workloadapi.X509SourceOption
	if socket != "" {
		opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	} else if os.Getenv("SPIFFE_ENDPOINT_SOCKET") == "" {
		return nil, errors.New("authz: no Workload API socket: set --workload-api-socket or SPIFFE_ENDPOINT_SOCKET")
	}
	wctx, cancel := context.WithTimeout(ctx, svidTimeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(wctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("authz: Workload API: no SVID within %s: %w", svidTimeout, err)
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

// openDecisionLog opens the decision log: stdout for "-", else a file appended to (0600: the
// log names callers and paths).
func openDecisionLog(path string, stdout io.Writer) (io.Writer, func() error, error) {
	if path == "-" || path == "" {
		return stdout, func() error { return nil }, nil
	}
	file, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("decision log: %w", err)
	}
	return file, file.Close, nil
}
