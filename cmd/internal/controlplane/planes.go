package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/ratelimit"
	authzserver "github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/telemetry/serve"
	"github.com/portcullis/portcullis/xds/model"
	xdsserver "github.com/portcullis/portcullis/xds/server"
	"github.com/portcullis/portcullis/xds/translate"
)

// meshPlanes are the servers that need the mesh's trust domain, so they start with the first
// valid mesh: the CA, ADS and the certificate service on the xDS port, ext_authz on the authz
// port, and on Kubernetes the webhook and the leader's writers.
type meshPlanes struct {
	cfg       Config
	log       *slog.Logger
	metrics   *telemetry.Metrics
	docs      meshSource
	compiler  *policy.Compiler
	decisions io.Writer
	admin     *telemetry.Admin
	tracer    *telemetry.DeferredProvider
	used      *attest.UsedTokens
	tdCheck   *trustDomainCheck
	kube      *kubeEnv // nil in local mode
	ports     ports

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
	mesh := firstMesh(ctx, p.docs)
	if mesh == nil {
		return nil // stopped before any valid mesh
	}
	tracing, err := p.setupTracing(ctx, mesh)
	if err != nil {
		return err
	}
	id, err := openIdentity(ctx, identityConfig{
		log: p.cfg.Logger, metrics: p.metrics, dataDir: p.cfg.DataDir, ca: p.cfg.CA, used: p.used,
		tdCheck: p.tdCheck, kube: p.kube, tracer: tracing.Provider,
	}, mesh)
	if err != nil {
		return err
	}
	// Proxies call this control plane's ext_authz service, or the external one.
	authzID := p.cfg.ExternalAuthzID
	var authzAddr string
	if p.ports.authz != nil {
		authzID = id.self.ID()
		if authzAddr, err = p.cfg.authzTarget(p.ports.authz.Addr()); err != nil {
			return err
		}
	} else {
		authzAddr = p.cfg.ExternalAuthz
	}
	plane, err := xdsserver.NewPlane(ctx, xdsserver.PlaneConfig{
		Mesh: p.docs, Endpoints: p.kube.endpoints(), DataDir: p.cfg.DataDir,
		Translate: translate.Options{AuthzAddress: authzAddr, AuthzID: authzID, JWKS: jwt.EnvoyJWKS},
		Revoked:   id.authority.RevokedCert,
		Logger:    p.cfg.Logger.With("component", "xds"), Meter: p.metrics.Meter("xds/snapshot"), TracerProvider: tracing.Provider,
	})
	if err != nil {
		return err
	}
	// The xDS port: certificate service and ADS, one gRPC server with keepalive.
	xdsGRPC := grpc.NewServer(append(xdsserver.GRPCOptions(), grpc.Creds(plane.Credentials(id.serverTLS())))...)
	id.certs.Register(xdsGRPC)
	plane.Register(xdsGRPC)
	p.admin.Handle("/debug/proxies", telemetry.JSONHandler(func() any { return plane.Ledger.Status() }))
	p.admin.Handle("/debug/proxies/config", plane.ProxyConfigHandler())

	group, gctx := errgroup.WithContext(ctx)
	id.run(gctx, group)
	group.Go(func() error { return plane.Run(gctx) })
	group.Go(func() error { return serve.GRPC(gctx, "controlplane: xds", xdsGRPC, p.ports.xds, serve.DefaultGrace) })
	if p.ports.authz != nil {
		if err := p.serveAuthz(gctx, group, id, tracing); err != nil {
			return err
		}
	}
	if p.kube != nil {
		if err := p.kube.run(gctx, group, id, plane.Ledger, p.ports.webhook, p.ports.xds.Addr()); err != nil {
			return err
		}
	}
	p.log.Info("control plane serving", "trust_domain", id.td.Name(), "spiffe_id", id.self.ID().String(),
		"xds_addr", p.ports.xds.Addr().String(), "authz_addr", authzAddr, "authz_id", authzID.String())
	p.running.Store(true)
	defer p.running.Store(false)
	return group.Wait()
}

// serveAuthz serves the ext_authz and global rate limit services on the authz port: mTLS from
// the trust domain, calls from proxies only (authzserver.Callers).
func (p *meshPlanes) serveAuthz(ctx context.Context, group *errgroup.Group, id *identity, tracing *telemetry.Tracing) error {
	callers := &authzserver.Callers{TrustDomain: id.td, NotProxies: []spiffeid.ID{id.self.ID()}, Revoked: id.authority.RevokedCert}
	authz, err := authzserver.New(authzserver.Options{
		Logger: p.cfg.Logger.With("component", "authz"), TracerProvider: tracing.Provider, Meter: p.metrics.Meter("authz/server"),
		Source: p.docs, Compiler: p.compiler, DecisionLog: p.decisions, Callers: callers,
	})
	if err != nil {
		return err
	}
	redis := p.cfg.RateLimit
	if k := p.kube; k != nil && k.cfg.RedisSecret != "" && redis.PasswordFile == "" {
		if redis.Password, err = redisPassword(ctx, k.client, k.cfg.Namespace, k.cfg.RedisSecret); err != nil {
			return err
		}
	}
	limits, err := ratelimit.New(ratelimit.Options{
		Logger: p.cfg.Logger.With("component", "ratelimit"), TracerProvider: tracing.Provider,
		Meter: p.metrics.Meter("authz/ratelimit"), Redis: redis, Authorize: callers.Authorize,
	})
	if err != nil {
		return err
	}
	creds := credentials.NewTLS(tlsconfig.MTLSServerConfig(id.self, id.self, tlsconfig.AuthorizeMemberOf(id.td)))
	srv := grpc.NewServer(append(authzserver.GRPCServerOptions(), grpc.Creds(creds))...)
	authz.Register(srv)
	authz.AccessLog().Register(srv)
	limits.Register(srv)
	p.admin.Handle("/debug/authz", authz.DebugHandler())
	p.admin.AddReadiness("authz", authz.Ready)
	group.Go(func() error { return authz.Run(ctx) })
	group.Go(func() error {
		defer limits.Close()
		return serve.GRPC(ctx, "controlplane: authz", srv, p.ports.authz, serve.DefaultGrace)
	})
	return nil
}

// setupTracing exports the control plane's spans to the configured endpoint, or to the Mesh's
// collector when tracing is enabled there, at the Mesh's sampling rate.
func (p *meshPlanes) setupTracing(ctx context.Context, mesh *model.Mesh) (*telemetry.Tracing, error) {
	tr := mesh.Config.Spec.Tracing
	endpoint := p.cfg.OTLPEndpoint
	if endpoint == "" && tr.Enabled {
		endpoint = tr.Collector
	}
	t, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{
		Endpoint: endpoint, TLS: p.cfg.OTLP.TLS, CAFile: p.cfg.OTLP.CAFile, SamplingRatio: *tr.SamplingPercent / 100,
		ServiceName: "portcullis-controlplane", ServiceVersion: p.cfg.Version, InstanceID: telemetry.InstanceID(),
	}, p.metrics.Meter("telemetry"))
	if err != nil {
		return nil, err
	}
	p.tracing.Store(t)
	p.tracer.Set(t.Provider)
	return t, nil
}
