//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	authzserver "github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/model"
	xdsserver "github.com/portcullis/portcullis/xds/server"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/source/kube"
)

// Default control-plane addresses (README.md and docs/architecture.md list them too).
const (
	defaultAuthzAddr = "127.0.0.1:15011"
	defaultAdminAddr = "127.0.0.1:15014"
)

type controlPlaneFlags struct {
	configDir    string
	dataDir      string
	adminAddr    string
	xdsAddr      string
	authzAddr    string
	extAuthz     string
	extAuthzID   string
	decisionLog  string
	otlpEndpoint string
	jaegerQuery  string
	ca           caFlags
	kube         kubeFlags
}

func newControlPlaneCommand(g *globals) *cobra.Command {
	f := &controlPlaneFlags{}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane: documents, xDS, CA, authorization and the admin port",
		Long: `Run the control plane. It loads the mesh documents in --config (every *.yaml and *.yml
file, re-read when they change; an invalid edit is reported and the last good configuration
stays live) and serves the admin HTTP port:

  /healthz               the process is up
  /readyz                a valid mesh is loaded and every server is up
  /metrics               Prometheus metrics
  /debug/mesh            the live mesh and the problems of the last load
  /debug/proxies         each proxy's ACKed and NACKed versions (portcullis proxy status)
  /debug/proxies/config  a proxy's resources, ?node=<id> (portcullis proxy config)
  /debug/authz           policies, JWT providers and their health
  /traces                a trace browser over Jaeger's API (with --jaeger-query-url)

Once the first valid mesh is loaded it starts the CA for the mesh's trust domain (created in
--data-dir on first start, or from --ca-cert/--ca-key) and serves, with the control plane's own
SVID:
  --xds-addr    the certificate service and ADS (state of the world and delta) to proxies;
  --authz-addr  the ext_authz service, mTLS from proxies only.
A later mesh with another trust domain is refused and the last good mesh stays live. See
docs/identity.md, docs/xds.md and docs/policies.md.

With --kubernetes the mesh comes from the cluster instead of --config: the portcullis.dev
custom resources, Kubernetes Services and their EndpointSlices (docs/kubernetes.md). The
replicas share the root CA in a Secret, accept pods' service-account tokens, serve the injection
webhook on --webhook-addr, and the elected leader writes each resource's Accepted and Programmed
conditions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runControlPlane(cmd.Context(), g, f, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configDir, "config", "", "directory of mesh documents (required unless --kubernetes)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the control plane's state: CA keys, used tokens, proxy registrations (required; created 0700)")
	fl.StringVar(&f.adminAddr, "admin-addr", defaultAdminAddr, "admin HTTP address (health, readiness, metrics, debug)")
	fl.StringVar(&f.xdsAddr, "xds-addr", defaultXDSAddr, "gRPC TLS address of ADS and the certificate service")
	fl.StringVar(&f.authzAddr, "authz-addr", defaultAuthzAddr, "gRPC mTLS address of the ext_authz service")
	fl.StringVar(&f.extAuthz, "external-authz", "", "host:port of a separate ext_authz service (portcullis authz replicas) for proxies to call instead of this control plane's; then --authz-addr is not served")
	fl.StringVar(&f.extAuthzID, "external-authz-id", "", "the SPIFFE ID proxies require of --external-authz (required with it)")
	fl.StringVar(&f.decisionLog, "decision-log", "-", "where authorization decisions are logged as JSON lines: a file (0600), or - for stdout")
	fl.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "OTLP gRPC collector for the control plane's spans (default: the Mesh's spec.tracing.collector when tracing is enabled)")
	fl.StringVar(&f.jaegerQuery, "jaeger-query-url", "", "Jaeger's query API (http://host:port): the admin port then serves a trace browser on /traces")
	f.ca.register(fl)
	f.kube.register(fl)
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func runControlPlane(ctx context.Context, g *globals, f *controlPlaneFlags, stdout io.Writer) error {
	log := g.log.With("component", "controlplane")
	if err := ensurePrivateDir(log, f.dataDir); err != nil {
		return err
	}
	if err := f.ca.validate(); err != nil {
		return err
	}
	if err := f.kube.validate(); err != nil {
		return err
	}
	if (f.configDir == "") != f.kube.enabled {
		return errors.New("give --config (mesh documents in files) or --kubernetes (from the cluster), one of them")
	}
	if (f.extAuthz == "") != (f.extAuthzID == "") {
		return errors.New("--external-authz and --external-authz-id go together")
	}
	// Single use of join tokens needs one control plane per data directory: this lock says so.
	used, err := attest.OpenUsedTokens(f.dataDir, nil, g.log.With("component", "attest"))
	if err != nil {
		return err
	}
	defer func() { _ = used.Close() }() // the lock also goes with the process
	metrics, err := telemetry.NewMetrics("portcullis-controlplane", g.version)
	if err != nil {
		return err
	}
	tdCheck, err := newTrustDomainCheck(f.dataDir)
	if err != nil {
		return err
	}
	// One compiler for the source's check and the authorization server: Rego compiles once.
	compiler := policy.NewCompiler(policy.Options{})
	checks := []source.Checker{tdCheck.check, compiler.Check, jwt.Check}
	// The exporter is known once the first mesh names the collector; the source traces from
	// its first load on.
	tracer := &telemetry.DeferredProvider{}
	var docs meshSource
	var kenv *kubeEnv
	if f.kube.enabled {
		if kenv, err = newKubeEnv(&f.kube, g.log, metrics, checks); err != nil {
			return err
		}
		docs = kubeMeshSource{kenv.src}
	} else {
		dir, err := source.NewDir(f.configDir, source.DirOptions{
			Logger: g.log.With("component", "source"), Meter: metrics.Meter("xds/source"), Checks: checks,
			TracerProvider: tracer,
		})
		if err != nil {
			return err
		}
		// An invalid set at start-up is not fatal: the process serves /debug/mesh saying what is
		// wrong and becomes ready as soon as the files are fixed.
		_ = dir.Load()
		docs = dirMeshSource{dir}
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

	// Bound now, so a busy port fails the start; served once the CA runs.
	var lns listeners
	defer lns.close()
	xdsLn, err := lns.listen("xds", f.xdsAddr)
	if err != nil {
		return err
	}
	var authzLn net.Listener
	if f.extAuthz == "" {
		if authzLn, err = lns.listen("authz", f.authzAddr); err != nil {
			return err
		}
	}
	adminLn, err := lns.listen("admin", f.adminAddr)
	if err != nil {
		return err
	}
	var webhookLn net.Listener
	if kenv != nil {
		if webhookLn, err = lns.listen("webhook", f.kube.webhookAddr); err != nil {
			return err
		}
	}

	admin := telemetry.NewAdmin(log, metrics)
	admin.AddReadiness("mesh", func() error {
		if m, _ := docs.Current(); m == nil {
			return errors.New("no valid mesh loaded yet (see /debug/mesh)")
		}
		return nil
	})
	admin.Handle("/debug/mesh", telemetry.JSONHandler(func() any {
		m, _ := docs.Current()
		return struct {
			Status any `json:"status"`
			Mesh   any `json:"mesh"`
		}{docs.status(), m}
	}))
	if f.jaegerQuery != "" {
		admin.Handle("/traces", telemetry.TraceViewer(f.jaegerQuery))
		admin.Handle("/traces/", telemetry.TraceViewer(f.jaegerQuery))
	}
	planes := &meshPlanes{
		g: g, f: f, log: log, metrics: metrics, docs: docs, compiler: compiler, decisions: decisions, admin: admin,
		identity: identityConfig{log: g.log, metrics: metrics, dataDir: f.dataDir, ca: f.ca, used: used, tdCheck: tdCheck, kube: kenv, tracer: tracer},
		tracer:   tracer,
		xdsLn:    xdsLn, authzLn: authzLn, kube: kenv, webhookLn: webhookLn,
	}
	admin.AddReadiness("servers", planes.ready)

	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return docs.Run(gctx) })
	group.Go(func() error { return admin.Serve(gctx, adminLn) })
	group.Go(func() error { return planes.run(gctx) })
	return waitWithGrace(ctx, log, group, planes.shutdownTracing, metrics.Shutdown)
}

// meshPlanes are the servers that need the mesh's trust domain, so they start with the first
// valid mesh: the CA, ADS and the certificate service on --xds-addr, ext_authz on --authz-addr.
type meshPlanes struct {
	g         *globals
	f         *controlPlaneFlags
	log       *slog.Logger
	metrics   *telemetry.Metrics
	docs      meshSource
	compiler  *policy.Compiler
	decisions io.Writer
	admin     *telemetry.Admin
	identity  identityConfig
	xdsLn     net.Listener
	authzLn   net.Listener
	kube      *kubeEnv // nil in local mode
	webhookLn net.Listener

	tracer  *telemetry.DeferredProvider
	running atomic.Bool
	tracing atomic.Pointer[telemetry.Tracing]
}

func (p *meshPlanes) ready() error {
	if !p.running.Load() {
		return errors.New("CA, xDS and authorization start with the first valid mesh (its trust domain)")
	}
	return nil
}

func (p *meshPlanes) shutdownTracing(ctx context.Context) error {
	if t := p.tracing.Load(); t != nil {
		return t.Shutdown(ctx)
	}
	return nil
}

func (p *meshPlanes) run(ctx context.Context) error {
	mesh, err := waitForMesh(ctx, p.docs)
	if err != nil || mesh == nil {
		return err
	}
	tracing, err := p.setupTracing(ctx, mesh)
	if err != nil {
		return err
	}
	id, err := openIdentity(ctx, p.identity, mesh)
	if err != nil {
		return err
	}
	// Proxies call this control plane's ext_authz service, or the external one.
	authzAddr, authzID := "", id.self.ID()
	if p.f.extAuthz != "" {
		if authzID, err = spiffeid.FromString(p.f.extAuthzID); err != nil {
			return fmt.Errorf("--external-authz-id: %w", err)
		}
		authzAddr = p.f.extAuthz
	} else {
		authzAddr = p.authzLn.Addr().String()
	}
	xds, err := newXDSPlane(ctx, p.g, p.metrics, xdsConfig{
		mesh: p.docs, dataDir: p.f.dataDir, authzAddr: authzAddr, authzID: authzID,
		tracer: tracing.Provider, revoked: id.authority.RevokedCert,
	})
	if p.kube != nil {
		xds.endpoints(p.kube.src)
	}
	if err != nil {
		return err
	}
	// The xDS port: certificate service and ADS, one gRPC server with keepalive.
	xdsGRPC := grpc.NewServer(append(xdsserver.GRPCOptions(), grpc.Creds(id.serverTLS()))...)
	id.certs.Register(xdsGRPC)
	xds.register(xdsGRPC)
	xds.handle(p.admin)

	group, gctx := errgroup.WithContext(ctx)
	id.run(gctx, group)
	xds.run(gctx, group)
	group.Go(func() error { return serveGRPC(gctx, "xds", xdsGRPC, p.xdsLn) })
	if p.authzLn != nil {
		if err := p.serveAuthz(gctx, group, id, tracing); err != nil {
			return err
		}
	}
	if p.kube != nil {
		if err := p.kube.run(gctx, group, id, xds.ledger, p.webhookLn); err != nil {
			return err
		}
	}
	p.log.Info("control plane serving", "trust_domain", id.td.Name(), "spiffe_id", id.self.ID().String(),
		"xds_addr", p.xdsLn.Addr().String(), "authz_addr", authzAddr, "authz_id", authzID.String())
	p.running.Store(true)
	defer p.running.Store(false)
	return group.Wait()
}

// serveAuthz serves the ext_authz service on --authz-addr: mTLS, any workload of the trust
// domain (proxies call it).
func (p *meshPlanes) serveAuthz(ctx context.Context, group *errgroup.Group, id *identity, tracing *telemetry.Tracing) error {
	authz, err := authzserver.New(authzserver.Options{
		Logger: p.g.log.With("component", "authz"), TracerProvider: tracing.Provider, Meter: p.metrics.Meter("authz/server"),
		Source: p.docs, Compiler: p.compiler, DecisionLog: p.decisions,
	})
	if err != nil {
		return err
	}
	creds := credentials.NewTLS(tlsconfig.MTLSServerConfig(id.self, id.self, tlsconfig.AuthorizeMemberOf(id.td)))
	srv := grpc.NewServer(append(authzserver.GRPCServerOptions(), grpc.Creds(creds))...)
	authz.Register(srv)
	p.admin.Handle("/debug/authz", authz.DebugHandler())
	p.admin.AddReadiness("authz", authz.Ready)
	group.Go(func() error { return authz.Run(ctx) })
	group.Go(func() error { return serveGRPC(ctx, "authz", srv, p.authzLn) })
	return nil
}

// setupTracing exports the control plane's spans to --otlp-endpoint, or to the Mesh's collector
// when tracing is enabled there, at the Mesh's sampling rate.
func (p *meshPlanes) setupTracing(ctx context.Context, mesh *model.Mesh) (*telemetry.Tracing, error) {
	tr := mesh.Config.Spec.Tracing
	endpoint := p.f.otlpEndpoint
	if endpoint == "" && tr.Enabled {
		endpoint = tr.Collector
	}
	t, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{
		Endpoint: endpoint, Insecure: telemetry.LoopbackEndpoint(endpoint), SamplingRatio: *tr.SamplingPercent / 100,
		ServiceName: "portcullis-controlplane", ServiceVersion: p.g.version, InstanceID: telemetry.InstanceID(),
	}, p.metrics.Meter("telemetry"))
	if err != nil {
		return nil, err
	}
	p.tracing.Store(t)
	p.tracer.Set(t.Provider)
	return t, nil
}

// meshSource is where the control plane's mesh comes from: files or the Kubernetes API.
type meshSource interface {
	source.Source
	Run(ctx context.Context) error
	status() any
}

type dirMeshSource struct{ *source.Dir }

func (d dirMeshSource) status() any { return d.Status() }

type kubeMeshSource struct{ *kube.Source }

func (k kubeMeshSource) status() any { return k.Status() }

// serveGRPC serves until ctx ends, then stops gracefully.
func serveGRPC(ctx context.Context, name string, srv *grpc.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: gRPC: %w", name, err)
	case <-ctx.Done():
		stopGRPC(srv)
		return nil
	}
}

// listeners binds the control plane's ports and closes those not handed to a server.
type listeners []net.Listener

func (l *listeners) listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	*l = append(*l, ln)
	return ln, nil
}

// close closes every listener; closing one a server already closed is harmless.
func (l listeners) close() {
	for _, ln := range l {
		_ = ln.Close()
	}
}
