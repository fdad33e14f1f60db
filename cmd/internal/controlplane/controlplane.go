package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	authzserver "github.com/portcullis/portcullis/authz/server"
	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/securefile"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/telemetry/serve"
	"github.com/portcullis/portcullis/telemetry/traceview"
	"github.com/portcullis/portcullis/telemetry/watch"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/source/kube"
)

// ShutdownGrace bounds a clean stop once Run's context ends.
const ShutdownGrace = 5 * time.Second

// ControlPlane is a control plane ready to run.
type ControlPlane struct {
	cfg     Config
	log     *slog.Logger
	metrics *telemetry.Metrics
	docs    meshSource
	admin   *telemetry.Admin
	planes  *meshPlanes
	ports   ports
	// closers release what New opened, in reverse order, when Run returns.
	closers []func() error
}

// ports are the control plane's bound listeners.
type ports struct {
	admin, xds, authz, webhook net.Listener // authz: nil with an external authz; webhook: nil in local mode
}

// New checks cfg, opens the state and the document source, and binds every port. Run must be
// called once; it releases what New acquired when it returns.
func New(cfg Config) (*ControlPlane, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	cp := &ControlPlane{cfg: cfg, log: cfg.Logger.With("component", "controlplane")}
	if err := cp.open(); err != nil {
		return nil, errors.Join(err, cp.close())
	}
	return cp, nil
}

// open acquires what the control plane needs before it serves; close releases it.
func (cp *ControlPlane) open() error {
	cfg := cp.cfg
	if err := securefile.EnsureDir(cfg.DataDir, securefile.DirMode); err != nil {
		return fmt.Errorf("controlplane: data dir: %w", err)
	}
	// Single use of join tokens needs one control plane per data directory: this lock says so.
	used, err := attest.OpenUsedTokens(cfg.DataDir, nil, cfg.Logger.With("component", "attest"))
	if err != nil {
		return err
	}
	cp.closers = append(cp.closers, used.Close)
	if cp.metrics, err = telemetry.NewMetrics("portcullis-controlplane", cfg.Version); err != nil {
		return err
	}
	tdCheck, err := newTrustDomainCheck(cfg.DataDir)
	if err != nil {
		return err
	}
	// One compiler for the source's check and the authorization server: Rego compiles once.
	compiler := policy.NewCompiler(policy.Options{})
	checks := []source.Checker{tdCheck.check, compiler.Check, jwt.Check}
	// The exporter is known once the first mesh names the collector; the source traces from its
	// first load on.
	tracer := &telemetry.DeferredProvider{}
	var kenv *kubeEnv
	if cfg.Kubernetes != nil {
		if kenv, err = newKubeEnv(cfg.Kubernetes, cfg.Version, cfg.Logger, cp.metrics.Meter("xds/source/kube"), checks); err != nil {
			return err
		}
		cp.docs = kubeMeshSource{kenv.src}
	} else {
		dir, err := source.NewDir(cfg.ConfigDir, source.DirOptions{
			Logger: cfg.Logger.With("component", "source"), Meter: cp.metrics.Meter("xds/source"), Checks: checks,
			TracerProvider: tracer,
		})
		if err != nil {
			return err
		}
		// An invalid set at start-up is not fatal: the process serves /debug/mesh saying what is
		// wrong and becomes ready as soon as the files are fixed.
		_ = dir.Load()
		cp.docs = dirMeshSource{dir}
	}
	decisions, closeLog, err := authzserver.OpenDecisionLog(cfg.DecisionLog, cfg.Stdout)
	if err != nil {
		return err
	}
	cp.closers = append(cp.closers, closeLog)
	if err := cp.listen(); err != nil {
		return err
	}
	cp.admin = telemetry.NewAdmin(cp.log, cp.metrics)
	cp.planes = &meshPlanes{
		cfg: cfg, log: cp.log, metrics: cp.metrics, docs: cp.docs, compiler: compiler, decisions: decisions,
		admin: cp.admin, tracer: tracer, used: used, tdCheck: tdCheck, kube: kenv, ports: cp.ports,
	}
	cp.handleAdmin()
	return nil
}

// listen binds the ports now, so a busy one fails the start; they are served once the CA runs.
func (cp *ControlPlane) listen() error {
	bind := func(name, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("controlplane: %s: %w", name, err)
		}
		// Closing a listener its server already closed is harmless.
		cp.closers = append(cp.closers, func() error { _ = ln.Close(); return nil })
		return ln, nil
	}
	var err error
	if cp.ports.xds, err = bind("xds", cp.cfg.XDSAddr); err != nil {
		return err
	}
	if cp.cfg.ExternalAuthz == "" {
		if cp.ports.authz, err = bind("authz", cp.cfg.AuthzAddr); err != nil {
			return err
		}
	}
	if cp.ports.admin, err = bind("admin", cp.cfg.AdminAddr); err != nil {
		return err
	}
	if cp.cfg.Kubernetes != nil {
		if cp.ports.webhook, err = bind("webhook", cp.cfg.Kubernetes.WebhookAddr); err != nil {
			return err
		}
	}
	return nil
}

func (cp *ControlPlane) handleAdmin() {
	cp.admin.AddReadiness("mesh", func() error {
		if m, _ := cp.docs.Current(); m == nil {
			return errors.New("no valid mesh loaded yet (see /debug/mesh)")
		}
		return nil
	})
	cp.admin.AddReadiness("servers", cp.planes.ready)
	cp.admin.Handle("/debug/mesh", telemetry.JSONHandler(func() any {
		m, _ := cp.docs.Current()
		return struct {
			Status any `json:"status"`
			Mesh   any `json:"mesh"`
		}{cp.docs.Status(), m}
	}))
	if q := cp.cfg.JaegerQueryURL; q != "" {
		traces := traceview.Handler(q)
		cp.admin.Handle("/traces", traces)
		cp.admin.Handle("/traces/", traces)
	}
}

// AdminAddr is the bound admin address (the configured one may say port 0).
func (cp *ControlPlane) AdminAddr() string { return cp.ports.admin.Addr().String() }

// XDSAddr is the bound address of ADS and the certificate service.
func (cp *ControlPlane) XDSAddr() string { return cp.ports.xds.Addr().String() }

// Run serves until ctx ends, then stops every component within ShutdownGrace, flushes traces and
// metrics, and releases what New opened.
func (cp *ControlPlane) Run(ctx context.Context) error {
	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return cp.docs.Run(gctx) })
	group.Go(func() error { return cp.admin.Serve(gctx, cp.ports.admin) })
	group.Go(func() error { return cp.planes.run(gctx) })
	return serve.Wait(ctx, cp.log, group, ShutdownGrace, cp.planes.shutdownTracing, cp.metrics.Shutdown, func(context.Context) error { return cp.close() })
}

func (cp *ControlPlane) close() error {
	var err error
	for i := len(cp.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, cp.closers[i]())
	}
	cp.closers = nil
	return err
}

// meshSource is where the mesh comes from: files or the Kubernetes API.
type meshSource interface {
	source.Source
	Run(ctx context.Context) error
	Status() any
}

type dirMeshSource struct{ *source.Dir }

func (d dirMeshSource) Status() any { return d.Dir.Status() }

type kubeMeshSource struct{ *kube.Source }

func (k kubeMeshSource) Status() any { return k.Source.Status() }

// firstMesh returns the first valid mesh, or nil when ctx ends first.
func firstMesh(ctx context.Context, docs source.Source) *model.Mesh {
	m, _ := watch.Wait(ctx, docs, func(m *model.Mesh) bool { return m != nil })
	return m
}

// Both sources serve the control plane the same way.
var (
	_ meshSource = dirMeshSource{}
	_ meshSource = kubeMeshSource{}
)
