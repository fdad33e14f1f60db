package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certsvc"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// caFlags are the control plane's CA settings.
type caFlags struct {
	cert, key                         string
	rootTTL, intermediateTTL, svidTTL time.Duration
}

func (f *caFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.cert, "ca-cert", "", "PEM file: your signing CA certificate first, then its chain up to and including the root (instead of a generated root)")
	fl.StringVar(&f.key, "ca-key", "", "PEM file with the private key of the first --ca-cert certificate (mode 0600)")
	fl.DurationVar(&f.rootTTL, "root-ttl", ca.DefaultRootTTL, "lifetime of a generated root CA")
	fl.DurationVar(&f.intermediateTTL, "intermediate-ttl", ca.DefaultIntermediateTTL, "lifetime of each intermediate CA (renewed at half of it)")
	fl.DurationVar(&f.svidTTL, "svid-ttl", ca.DefaultSVIDTTL, "lifetime of each workload SVID (capped by the intermediate's remaining life)")
}

func (f *caFlags) validate() error {
	if (f.cert == "") != (f.key == "") {
		return errors.New("--ca-cert and --ca-key go together")
	}
	return nil
}

// trustDomainCheck refuses a mesh whose trust domain is not the CA's, so the last good mesh
// stays live: a CA cannot change its trust domain.
type trustDomainCheck struct {
	td atomic.Pointer[spiffeid.TrustDomain]
}

func newTrustDomainCheck(dataDir string) (*trustDomainCheck, error) {
	c := &trustDomainCheck{}
	td, err := ca.ReadTrustDomain(dataDir)
	switch {
	case errors.Is(err, ca.ErrNoCA):
	case err != nil:
		return nil, err
	default:
		c.td.Store(&td)
	}
	return c, nil
}

func (c *trustDomainCheck) check(m *model.Mesh) model.Problems {
	want := c.td.Load()
	if want == nil || m.TrustDomain == *want {
		return nil
	}
	o := m.Origin(m.Config)
	return model.Problems{{
		File: o.File, Document: o.Document, Line: o.Line, Kind: m.Config.GetKind(), Name: model.RefOf(m.Config).String(),
		Field:   "spec.trustDomain",
		Message: fmt.Sprintf("%q is not the CA's trust domain %q; the trust domain cannot change without a new --data-dir", m.TrustDomain.Name(), want.Name()),
	}}
}

// identityService starts the CA for the first valid mesh's trust domain and serves the
// certificate service on the control plane's gRPC TLS listener.
type identityService struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	dataDir string
	ca      caFlags
	used    *attest.UsedTokens
	docs    source.Source
	tdCheck *trustDomainCheck
	ln      net.Listener
	running atomic.Bool
}

func (s *identityService) ready() error {
	if !s.running.Load() {
		return errors.New("CA not started: it starts with the first valid mesh (its trust domain)")
	}
	return nil
}

func (s *identityService) run(ctx context.Context) error {
	mesh, err := waitForMesh(ctx, s.docs)
	if err != nil || mesh == nil {
		return errors.Join(err, s.ln.Close())
	}
	td := mesh.TrustDomain
	authority, err := ca.Open(ca.Config{
		DataDir: s.dataDir, TrustDomain: td,
		RootTTL: s.ca.rootTTL, IntermediateTTL: s.ca.intermediateTTL, SVIDTTL: s.ca.svidTTL,
		UpstreamCert: s.ca.cert, UpstreamKey: s.ca.key,
		Logger: s.log.With("component", "ca"), Meter: s.metrics.Meter("identity/ca"),
	})
	if err != nil {
		return errors.Join(err, s.ln.Close())
	}
	s.tdCheck.td.Store(&td)
	self, err := ca.NewSelfSource(authority, ca.ControlPlaneID(td), s.log.With("component", "ca"))
	if err != nil {
		return errors.Join(err, s.ln.Close())
	}
	key, err := attest.LoadOrCreateSigningKey(s.dataDir)
	if err != nil {
		return errors.Join(err, s.ln.Close())
	}
	svc, err := certsvc.New(certsvc.Config{
		CA: authority, Tokens: attest.NewVerifier(nil, key.Public().(ed25519.PublicKey)), Used: s.used,
		Logger: s.log.With("component", "certsvc"), Meter: s.metrics.Meter("identity/certsvc"),
	})
	if err != nil {
		return errors.Join(err, s.ln.Close())
	}
	// One gRPC server for the control plane's TLS port: the certificate service now, ADS later.
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(certsvc.TLSConfig(self, td))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Reused handler goroutines (no stack growth per request) and write buffers: renewals
		// are many small unary calls.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.SharedWriteBuffer(true),
	)
	svc.Register(srv)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return authority.Run(gctx) })
	g.Go(func() error { return self.Run(gctx) })
	g.Go(func() error {
		s.log.Info("certificate service listening", "addr", s.ln.Addr().String(), "trust_domain", td.Name(), "spiffe_id", self.ID().String())
		s.running.Store(true)
		if err := srv.Serve(s.ln); err != nil {
			return fmt.Errorf("xds: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.running.Store(false)
		stopGRPC(srv)
		return nil
	})
	return g.Wait()
}

// waitForMesh returns the first valid mesh, or nil when ctx ends first.
func waitForMesh(ctx context.Context, docs source.Source) (*model.Mesh, error) {
	for {
		m, changed := docs.Current()
		if m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-changed:
		}
	}
}

// stopGRPC stops gracefully, cutting long streams after a moment.
func stopGRPC(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		srv.Stop()
	}
}
