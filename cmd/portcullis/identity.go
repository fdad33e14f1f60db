//go:build !agentonly

package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
	return model.Problems{m.Problem(m.Config, "spec.trustDomain",
		fmt.Sprintf("%q is not the CA's trust domain %q; the trust domain cannot change without a new --data-dir", m.TrustDomain.Name(), want.Name()))}
}

// identity is the control plane's CA side, started for the first valid mesh's trust domain:
// the CA, the control plane's own SVID (rotated in-process), and the certificate service.
type identity struct {
	td        spiffeid.TrustDomain
	authority *ca.CA
	self      *ca.SelfSource
	certs     *certsvc.Server
}

type identityConfig struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	dataDir string
	ca      caFlags
	used    *attest.UsedTokens
	tdCheck *trustDomainCheck
	kube    *kubeEnv // on Kubernetes: shared root CA, service-account tokens
	tracer  trace.TracerProvider
}

// openIdentity opens (or creates) the CA for the mesh's trust domain; from then on a mesh with
// another trust domain is refused.
func openIdentity(ctx context.Context, c identityConfig, mesh *model.Mesh) (*identity, error) {
	td := mesh.TrustDomain
	var saTokens certsvc.ServiceAccountVerifier
	if c.kube != nil {
		// Every replica signs under the root in the CA Secret, so their SVIDs share one bundle.
		cert, key, err := c.kube.ensureCA(ctx, c.dataDir, td, c.ca.rootTTL)
		if err != nil {
			return nil, err
		}
		c.ca.cert, c.ca.key = cert, key
		saTokens = c.kube.serviceAccounts(td)
	}
	authority, err := ca.Open(ca.Config{
		DataDir: c.dataDir, TrustDomain: td,
		RootTTL: c.ca.rootTTL, IntermediateTTL: c.ca.intermediateTTL, SVIDTTL: c.ca.svidTTL,
		UpstreamCert: c.ca.cert, UpstreamKey: c.ca.key,
		Logger: c.log.With("component", "ca"), Meter: c.metrics.Meter("identity/ca"),
	})
	if err != nil {
		return nil, err
	}
	c.tdCheck.td.Store(&td)
	self, err := ca.NewSelfSource(authority, ca.ControlPlaneID(td), c.log.With("component", "ca"))
	if err != nil {
		return nil, err
	}
	key, err := attest.LoadOrCreateSigningKey(c.dataDir)
	if err != nil {
		return nil, err
	}
	certs, err := certsvc.New(certsvc.Config{
		CA: authority, Tokens: attest.NewVerifier(nil, key.Public().(ed25519.PublicKey)), Used: c.used, ServiceAccounts: saTokens,
		Logger: c.log.With("component", "certsvc"), Meter: c.metrics.Meter("identity/certsvc"), TracerProvider: c.tracer,
	})
	if err != nil {
		return nil, err
	}
	return &identity{td: td, authority: authority, self: self, certs: certs}, nil
}

// run keeps the CA and the control plane's SVID fresh until ctx ends.
func (id *identity) run(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error { return id.authority.Run(ctx) })
	g.Go(func() error { return id.self.Run(ctx) })
}

// serverTLS is the TLS of the xDS/CA port: the control plane's SVID; a client certificate is
// verified when given (a joining agent has none yet; ADS requires one).
func (id *identity) serverTLS() credentials.TransportCredentials {
	return credentials.NewTLS(certsvc.TLSConfig(id.self, id.td))
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
