package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/source"
)

// serve runs the service as the standalone command does (file source with checks, mTLS, a
// decision log file), prints "LISTEN <addr>" and serves until SIGTERM.
func serve(dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// AUTHZLOAD_CPUPROFILE writes the server's CPU profile, to see where a check's time goes.
	if p := os.Getenv("AUTHZLOAD_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// As `portcullis authz` does (cmd/portcullis/authz.go).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	svid, err := x509svid.Load(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		return err
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "ca.pem"))
	if err != nil {
		return err
	}
	compiler := policy.NewCompiler(policy.Options{})
	docs, err := source.NewDir(filepath.Join(dir, "mesh"), source.DirOptions{Logger: log, Checks: []source.Checker{compiler.Check, jwt.Check}})
	if err != nil {
		return err
	}
	if err := docs.Load(); err != nil {
		return err
	}
	decisions, err := os.Create(filepath.Join(dir, "decisions.log"))
	if err != nil {
		return err
	}
	defer decisions.Close()
	var tp trace.TracerProvider = noop.NewTracerProvider()
	if endpoint := os.Getenv(traceEnv); endpoint != "" {
		tracing, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{Endpoint: endpoint, SamplingRatio: 1, ServiceName: "authzload"}, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tracing.Shutdown(context.Background()) }()
		tp = tracing.Provider
	}
	// Checks from proxies only, as the service refuses anyone else (cmd/internal/authzservice).
	callers := &server.Callers{TrustDomain: td, NotProxies: []spiffeid.ID{svid.ID}}
	srv, err := server.New(server.Options{Logger: log, TracerProvider: tp, Source: docs, Compiler: compiler, DecisionLog: decisions, Callers: callers})
	if err != nil {
		return err
	}
	g := grpc.NewServer(append(server.GRPCServerOptions(), grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(td)))))...)
	if os.Getenv(baselineEnv) != "" {
		authv3.RegisterAuthorizationServer(g, okServer{})
	} else {
		srv.Register(g)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	for srv.Ready() != nil {
		select {
		case err := <-runDone:
			return fmt.Errorf("server stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "LISTEN %s\n", ln.Addr())
	if err := w.Flush(); err != nil {
		return err
	}
	if err := g.Serve(ln); err != nil {
		return err
	}
	return <-runDone
}

// traceEnv names the OTLP collector the server exports every span to.
const traceEnv = "AUTHZLOAD_OTLP"

// baselineEnv makes the server answer every Check with a fixed OK without looking at it: the
// cost of gRPC, TLS and the Go runtime alone, to compare the real service with.
const baselineEnv = "AUTHZLOAD_BASELINE"

type okServer struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{
	Status:       &rpcstatus.Status{},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
}

func (okServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}
