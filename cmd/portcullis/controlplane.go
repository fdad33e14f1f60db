package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/source"
)

// Default control-plane addresses (README.md and docs/architecture.md list them too).
const (
	defaultXDSAddr   = "127.0.0.1:15010"
	defaultAuthzAddr = "127.0.0.1:15011"
	defaultAdminAddr = "127.0.0.1:15014"
	shutdownGrace    = 5 * time.Second
)

type controlPlaneFlags struct {
	configDir string
	dataDir   string
	adminAddr string
	xdsAddr   string
	ca        caFlags
}

func newControlPlaneCommand(g *globals) *cobra.Command {
	f := &controlPlaneFlags{}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane: documents, xDS, CA, authorization and the admin port",
		Long: `Run the control plane. It loads the mesh documents in --config (every *.yaml and *.yml
file, re-read when they change; an invalid edit is reported and the last good configuration
stays live) and serves the admin HTTP port:

  /healthz      the process is up
  /readyz       a valid mesh is loaded
  /metrics      Prometheus metrics
  /debug/mesh   the live mesh and the problems of the last load

Once the first valid mesh is loaded it starts the CA for the mesh's trust domain (created in
--data-dir on first start, or from --ca-cert/--ca-key) and serves the certificate service on
--xds-addr (TLS with the control plane's own SVID). A later mesh with another trust domain is
refused and the last good mesh stays live. See docs/identity.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runControlPlane(cmd.Context(), g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configDir, "config", "", "directory of mesh documents (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the control plane's state: CA keys, used tokens (required; created 0700)")
	fl.StringVar(&f.adminAddr, "admin-addr", defaultAdminAddr, "admin HTTP address (health, readiness, metrics, debug)")
	fl.StringVar(&f.xdsAddr, "xds-addr", defaultXDSAddr, "gRPC TLS address of the certificate service (and, later, ADS)")
	f.ca.register(fl)
	_ = cmd.MarkFlagRequired("config")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func runControlPlane(ctx context.Context, g *globals, f *controlPlaneFlags) error {
	log := g.log.With("component", "controlplane")
	if err := ensurePrivateDir(log, f.dataDir); err != nil {
		return err
	}
	if err := f.ca.validate(); err != nil {
		return err
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
	docs, err := source.NewDir(f.configDir, source.DirOptions{
		Logger: g.log.With("component", "source"), Meter: metrics.Meter("xds/source"),
		Checks: []source.Checker{tdCheck.check},
	})
	if err != nil {
		return err
	}
	// An invalid set at start-up is not fatal: the process serves /debug/mesh saying what is wrong
	// and becomes ready as soon as the files are fixed.
	_ = docs.Load()

	// Bound now, so a busy port fails the start; served once the CA runs.
	grpcLn, err := net.Listen("tcp", f.xdsAddr)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	id := &identityService{
		log: g.log, metrics: metrics, dataDir: f.dataDir, ca: f.ca, used: used,
		docs: docs, tdCheck: tdCheck, ln: grpcLn,
	}

	admin := telemetry.NewAdmin(log, metrics)
	admin.AddReadiness("mesh", func() error {
		if m, _ := docs.Current(); m == nil {
			return errors.New("no valid mesh loaded yet (see /debug/mesh)")
		}
		return nil
	})
	admin.AddReadiness("identity", id.ready)
	admin.Handle("/debug/mesh", telemetry.JSONHandler(func() any {
		m, _ := docs.Current()
		return struct {
			Status source.Status `json:"status"`
			Mesh   any           `json:"mesh"`
		}{docs.Status(), m}
	}))
	adminLn, err := net.Listen("tcp", f.adminAddr)
	if err != nil {
		return errors.Join(fmt.Errorf("admin: %w", err), grpcLn.Close())
	}

	group, gctx := errgroup.WithContext(ctx)
	group.Go(func() error { return docs.Run(gctx) })
	group.Go(func() error { return admin.Serve(gctx, adminLn) })
	group.Go(func() error { return id.run(gctx) })
	return waitWithGrace(ctx, log, group, metrics.Shutdown)
}

// waitWithGrace waits for the run group; once ctx is cancelled (a signal) it gives the group
// shutdownGrace to stop before returning anyway, then runs the cleanups.
func waitWithGrace(ctx context.Context, log *slog.Logger, group *errgroup.Group, cleanups ...func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- group.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		log.Info("shutting down")
		select {
		case err = <-done:
		case <-time.After(shutdownGrace):
			err = fmt.Errorf("components did not stop within %s", shutdownGrace)
		}
	}
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range cleanups {
		err = errors.Join(err, c(cctx))
	}
	return err
}
