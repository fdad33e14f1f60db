package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/telemetry/serve"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/inject/appprobe"
)

// shutdownGrace bounds a clean stop once Run's context ends (Envoy's own stop included).
const shutdownGrace = 5 * time.Second

// Sidecar is an agent ready to run.
type Sidecar struct {
	cfg     Config
	probes  appprobe.Probes
	log     *slog.Logger
	metrics *telemetry.Metrics
	agent   *agent.Agent
	adminLn net.Listener
}

// New checks cfg, prepares the identity agent and binds the admin port.
func New(cfg Config) (*Sidecar, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("component", "agent")
	if cfg.MemoryLimitMiB > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimitMiB << 20)
	}
	metrics, err := telemetry.NewMetrics("portcullis-agent", cfg.Version)
	if err != nil {
		return nil, err
	}
	a, err := agent.New(agent.Config{
		ControlPlane: cfg.ControlPlane, TokenFile: cfg.TokenFile, SocketDir: cfg.SocketDir, SocketMode: cfg.SocketMode, NoPersist: cfg.NoPersist,
		ServiceAccountTokenFile: cfg.ServiceAccountTokenFile, TrustDomain: cfg.TrustDomain, Pins: cfg.Pins,
		Logger: log, Meter: metrics.Meter("identity/agent"),
	})
	if err != nil {
		return nil, err
	}
	probes, err := appprobe.Parse(cfg.AppProbes)
	if err != nil {
		return nil, fmt.Errorf("sidecar: --app-probes: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("sidecar: admin: %w", err)
	}
	return &Sidecar{cfg: cfg, probes: probes, log: log, metrics: metrics, agent: a, adminLn: ln}, nil
}

// Run serves until ctx ends, then stops Envoy and the agent within a grace period.
func (s *Sidecar) Run(ctx context.Context) error {
	admin := telemetry.NewAdmin(s.log, s.metrics)
	admin.AddReadiness("svid", s.agent.Ready)
	if len(s.probes) > 0 {
		admin.HandlePublic(appprobe.PathPrefix, s.probes.Handler())
	}
	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return s.agent.Run(gctx) })
	group.Go(func() error { return admin.Serve(gctx, s.adminLn) })
	group.Go(func() error { return releaseAfterRotations(gctx, s.agent) })
	if s.cfg.Proxy.EnvoyPath != "" {
		var envoy atomic.Pointer[bootstrap.Supervisor]
		admin.AddReadiness("envoy", func() error {
			sup := envoy.Load()
			if sup == nil {
				return errors.New("envoy not started: waiting for the SVID")
			}
			return sup.Ready(context.Background())
		})
		group.Go(func() error {
			sup, service, err := s.startProxy(gctx)
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				return err
			}
			envoy.Store(sup)
			go forwardSignals(gctx, sup)
			if err := registerProxyMetrics(s.metrics, sup, service); err != nil {
				return err
			}
			return sup.Run(gctx)
		})
	}
	return serve.Wait(ctx, s.log, group, shutdownGrace, s.metrics.Shutdown)
}

// releaseAfterRotations returns memory to the OS once a rotation's TLS handshakes and pushes
// are done: the agent idles between rotations, and its footprint is multiplied by every
// workload on the host.
func releaseAfterRotations(ctx context.Context, a *agent.Agent) error {
	for {
		_, changed := a.Current()
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
			debug.FreeOSMemory()
		}
	}
}
