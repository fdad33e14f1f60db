package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ControlPlaneID is the SPIFFE ID the control plane serves with; agents authorize exactly it.
func ControlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", "portcullis-system", "sa", "controlplane")
}

// SelfSource is the control plane's own X.509-SVID, issued by its CA to itself with a key that
// never leaves memory, renewed at half of its life and whenever the signing authority changes.
// It implements x509svid.Source and x509bundle.Source, so any of the control plane's TLS servers
// (certificate service, ADS, ext_authz) can serve with it.
type SelfSource struct {
	ca  *CA
	id  spiffeid.ID
	dns []string // also named in the certificate, for servers reached by host name
	log *slog.Logger

	mu   sync.RWMutex
	svid *x509svid.SVID
	// tlsCert is the SVID chain plus its root, so an agent holding only root pins (from its
	// join token) can verify the control plane on first contact.
	tlsCert *tls.Certificate
}

var (
	_ x509svid.Source   = (*SelfSource)(nil)
	_ x509bundle.Source = (*SelfSource)(nil)
)

// NewSelfSource issues the first SVID for id; call Run to keep it fresh.
func NewSelfSource(ca *CA, id spiffeid.ID, log *slog.Logger) (*SelfSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &SelfSource{ca: ca, id: id, log: log}
	if err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewServingSource is NewSelfSource for a server reached by host name: its SVID also carries
// dnsNames (the admission webhook's Service name, which the API server verifies).
func NewServingSource(ca *CA, id spiffeid.ID, dnsNames []string, log *slog.Logger) (*SelfSource, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &SelfSource{ca: ca, id: id, dns: dnsNames, log: log}
	if err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *SelfSource) issue() error {
	key, err := NewKey()
	if err != nil {
		return err
	}
	var signed *SVID
	if len(s.dns) > 0 {
		signed, err = s.ca.SignServingSVID(s.id, key.Public(), s.dns)
	} else {
		signed, err = s.ca.SignX509SVID(s.id, key.Public())
	}
	if err != nil {
		return err
	}
	certs := make([]*x509.Certificate, len(signed.Chain))
	for i, der := range signed.Chain {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return fmt.Errorf("ca: own SVID: %w", err)
		}
	}
	root := issuingRoot(certs[len(certs)-1], s.ca.Roots())
	if root == nil {
		return errors.New("ca: own SVID does not chain to a root of the bundle")
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range append(certs, root) {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	svid := &x509svid.SVID{ID: s.id, Certificates: certs, PrivateKey: key}
	s.mu.Lock()
	s.svid, s.tlsCert = svid, tc
	s.mu.Unlock()
	s.log.Info("issued control plane SVID", "spiffe_id", s.id.String(), "serial", certs[0].SerialNumber.Text(16),
		"expires", certs[0].NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func issuingRoot(top *x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	for _, r := range roots {
		if top.CheckSignatureFrom(r) == nil {
			return r
		}
	}
	return nil
}

// GetX509SVID implements x509svid.Source.
func (s *SelfSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the CA's current bundle.
func (s *SelfSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.ca.GetX509BundleForTrustDomain(td)
}

// GetCertificate is a tls.Config.GetCertificate serving the SVID chain with its root.
func (s *SelfSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tlsCert, nil
}

// ID returns the SPIFFE ID the source serves.
func (s *SelfSource) ID() spiffeid.ID { return s.id }

// Run renews the SVID at half of its life and when the CA's authority changes, retrying failures
// with backoff, until ctx ends.
func (s *SelfSource) Run(ctx context.Context) error {
	retry := time.Second
	for {
		s.mu.RLock()
		leaf := s.svid.Certificates[0]
		s.mu.RUnlock()
		half := leaf.NotBefore.Add(Backdate).Add(leaf.NotAfter.Sub(leaf.NotBefore.Add(Backdate)) / 2)
		timer := time.NewTimer(time.Until(half))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.ca.Changed():
		case <-timer.C:
		}
		timer.Stop()
		if err := s.issue(); err != nil {
			s.log.Error("renewing control plane SVID failed; retrying", "err", err, "retry_in", retry.String())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retry + rand.N(retry/2)):
			}
			retry = min(2*retry, time.Minute)
			continue
		}
		retry = time.Second
	}
}
