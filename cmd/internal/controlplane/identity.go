package controlplane

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/ca/kubestate"
	"github.com/portcullis/portcullis/identity/certsvc"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/model"
)

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
	shared    *kubestate.Replica // on Kubernetes: the CA Secret's mirror; nil in local mode
}

type identityConfig struct {
	log     *slog.Logger
	metrics *telemetry.Metrics
	dataDir string
	ca      CAConfig
	used    *attest.UsedTokens
	tdCheck *trustDomainCheck
	kube    *kubeEnv // on Kubernetes: shared CA state, service-account tokens
	tracer  trace.TracerProvider
}

// openIdentity opens (or creates) the CA for the mesh's trust domain; from then on a mesh with
// another trust domain is refused.
func openIdentity(ctx context.Context, c identityConfig, mesh *model.Mesh) (*identity, error) {
	td := mesh.TrustDomain
	caCfg := ca.Config{
		DataDir: c.dataDir, TrustDomain: td,
		RootTTL: c.ca.RootTTL, IntermediateTTL: c.ca.IntermediateTTL, SVIDTTL: c.ca.SVIDTTL,
		UpstreamCert: c.ca.CertFile, UpstreamKey: c.ca.KeyFile,
		Logger: c.log.With("component", "ca"), Meter: c.metrics.Meter("identity/ca"),
	}
	var (
		used     certsvc.UsedTokens = c.used
		tokenKey ed25519.PrivateKey
		saTokens certsvc.ServiceAccountVerifier
		shared   *kubestate.Replica
		err      error
	)
	if c.kube != nil {
		// Every replica mirrors the CA Secret: one bundle, one revocation list, one token key,
		// and used tokens recorded in the API server, whichever replica a workload reaches.
		if shared, err = c.kube.sharedCA(ctx, caCfg); err != nil {
			return nil, err
		}
		used, tokenKey = shared.UsedTokens(), shared.TokenKey()
		caCfg.RotateCommand = kubestate.RotateCommand(c.kube.cfg.Namespace, c.kube.cfg.CASecret)
		saTokens = c.kube.serviceAccounts(td)
	} else if tokenKey, err = attest.LoadOrCreateSigningKey(c.dataDir); err != nil {
		return nil, err
	}
	authority, err := ca.Open(caCfg)
	if err != nil {
		return nil, err
	}
	c.tdCheck.td.Store(&td)
	self, err := ca.NewSelfSource(authority, ca.ControlPlaneID(td), c.log.With("component", "ca"))
	if err != nil {
		return nil, err
	}
	certs, err := certsvc.New(certsvc.Config{
		CA: authority, Tokens: attest.NewVerifier(nil, tokenKey.Public().(ed25519.PublicKey)), Used: used, ServiceAccounts: saTokens,
		Logger: c.log.With("component", "certsvc"), Meter: c.metrics.Meter("identity/certsvc"), TracerProvider: c.tracer,
	})
	if err != nil {
		return nil, err
	}
	return &identity{td: td, authority: authority, self: self, certs: certs, shared: shared}, nil
}

// run keeps the CA, the control plane's SVID and on Kubernetes the CA Secret's mirror fresh
// until ctx ends.
func (id *identity) run(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error { return id.authority.Run(ctx) })
	g.Go(func() error { return id.self.Run(ctx) })
	if id.shared != nil {
		g.Go(func() error { return id.shared.Run(ctx) })
	}
}

// serverTLS is the TLS of the xDS/CA port: the control plane's SVID; a client certificate is
// verified when given (a joining agent has none yet; ADS requires one).
func (id *identity) serverTLS() credentials.TransportCredentials {
	return credentials.NewTLS(certsvc.TLSConfig(id.self, id.td))
}
