package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Callers says who may ask for decisions: proxies. A proxy identity is a workload SVID of the
// mesh's trust domain (spiffe://<trust domain>/ns/<namespace>/sa/<account>, the only shape the
// CA issues to workloads) that has not been revoked and is not one of the mesh's own services,
// which hold workload-shaped SVIDs too but never front an application: the control plane and
// the authorization service itself. Anyone else could use the service to probe policies, fill
// the decision log with made-up callers, or spend its CPU.
type Callers struct {
	TrustDomain spiffeid.TrustDomain
	// NotProxies are the identities of the trust domain that are not proxies.
	NotProxies []spiffeid.ID
	// Revoked reports a revoked SVID (the CA's RevokedCert). Nil where the service cannot know:
	// `portcullis authz` runs apart from the CA, and a revoked proxy's SVID is then refused only
	// once it expires.
	Revoked func(*x509.Certificate) bool
}

// refusedCaller is why a gRPC peer may not call Check.
type refusedCaller struct {
	id     string
	reason string
}

func (e *refusedCaller) Error() string {
	if e.id == "" {
		return "authz: caller refused: " + e.reason
	}
	return fmt.Sprintf("authz: caller %s refused: %s", e.id, e.reason)
}

// peerIdentity returns the SPIFFE ID of the gRPC peer's certificate (zero when the call did not
// come over mTLS, as in tests calling Check directly, or the certificate is not an SVID) and the
// certificate.
func peerIdentity(ctx context.Context) (spiffeid.ID, *x509.Certificate) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, nil
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, nil
	}
	cert := tlsInfo.State.PeerCertificates[0]
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return spiffeid.ID{}, cert
	}
	return id, cert
}

// check refuses a caller that is not a proxy.
func (c *Callers) check(id spiffeid.ID, cert *x509.Certificate) error {
	if cert == nil {
		return &refusedCaller{reason: "no client certificate (Check needs mTLS with a proxy's SVID)"}
	}
	if id.IsZero() {
		return &refusedCaller{reason: "the client certificate is not an X.509-SVID"}
	}
	switch {
	case id.TrustDomain() != c.TrustDomain:
		return &refusedCaller{id: id.String(), reason: "not of trust domain " + c.TrustDomain.Name()}
	case !isWorkloadPath(id.Path()):
		return &refusedCaller{id: id.String(), reason: "not a workload identity (/ns/<namespace>/sa/<account>)"}
	case slices.Contains(c.NotProxies, id):
		return &refusedCaller{id: id.String(), reason: "a mesh service, not a proxy"}
	case c.Revoked != nil && c.Revoked(cert):
		return &refusedCaller{id: id.String(), reason: "its certificate has been revoked"}
	}
	return nil
}

// isWorkloadPath reports whether path is /ns/<namespace>/sa/<account>, without allocating: it
// runs on every Check.
func isWorkloadPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/ns/")
	if !ok {
		return false
	}
	ns, account, ok := strings.Cut(rest, "/sa/")
	return ok && ns != "" && account != "" && !strings.Contains(ns, "/") && !strings.Contains(account, "/")
}

// Authorize refuses a gRPC caller that is not a proxy with the error Check answers it:
// Unauthenticated without an SVID, PermissionDenied for any other identity. The other services on
// the authorization port (the global rate limit service) call it first: a workload that could
// call them could spend another caller's buckets.
func (c *Callers) Authorize(ctx context.Context) error {
	if err := c.check(peerIdentity(ctx)); err != nil {
		return refusalStatus(err)
	}
	return nil
}

// refusalStatus is the gRPC error of a refused caller.
func refusalStatus(err error) error {
	var rc *refusedCaller
	if errors.As(err, &rc) && rc.id == "" {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return status.Error(codes.PermissionDenied, err.Error())
}

// refuse answers a caller that is not a proxy: a gRPC error, not a decision (no decision was
// asked for by a proxy), logged at most once per logRefusalEvery and counted.
func (s *Server) refuse(ctx context.Context, err error) error {
	s.metrics.refused.Add(ctx, 1)
	now := s.now()
	if last := s.lastRefusal.Load(); last == 0 || now.Sub(time.Unix(0, last)) >= logRefusalEvery {
		if s.lastRefusal.CompareAndSwap(last, now.UnixNano()) {
			s.log.Warn("Check refused: the caller is not a proxy", "err", err)
		}
	}
	return refusalStatus(err)
}

// logRefusalEvery bounds how often refused callers are logged: one caller can call at any rate.
const logRefusalEvery = 10 * time.Second
