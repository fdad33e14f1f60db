package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/metric"

	"github.com/portcullis/portcullis/telemetry/watch"
)

// signer issues X.509-SVIDs with the snapshot of the signing authority the rotator gives it. It
// reads no file and runs no timer; signing takes no lock, since a snapshot is immutable and
// swapped whole.
type signer struct {
	td      spiffeid.TrustDomain
	tmpl    *Templates
	svidTTL time.Duration
	log     *slog.Logger
	capped  metric.Int64Counter // set by initInstruments

	snap    atomic.Pointer[snapshot]
	changed watch.Signal

	capMu sync.Mutex
	// cappedBy remembers issuers that capped an SVID's TTL, so the cap is logged once per
	// issuer at warning level rather than once per SVID.
	cappedBy map[string]bool
}

func newSigner(td spiffeid.TrustDomain, tmpl *Templates, svidTTL time.Duration, log *slog.Logger) *signer {
	return &signer{td: td, tmpl: tmpl, svidTTL: svidTTL, log: log, cappedBy: map[string]bool{}}
}

// snapshot is what the CA signs with and trusts at one moment, and the state it was derived
// from.
type snapshot struct {
	state       *State
	phases      []AuthorityPhase
	authorities map[string]*authority
	active      *authority
	roots       []*x509.Certificate
	bundle      *x509bundle.Bundle
	// fingerprint names the active signer and the bundle's roots with their phases: equal
	// fingerprints sign and trust alike.
	fingerprint string
}

// buildSnapshot derives what to sign with and trust at now: the active authority, if its root
// is still valid and it holds a signing certificate, and every unexpired root not dropped.
func buildSnapshot(td spiffeid.TrustDomain, st *State, phases []AuthorityPhase, auths map[string]*authority, now time.Time) *snapshot {
	s := &snapshot{state: st, phases: phases, authorities: auths}
	s.roots = bundleRoots(phases, auths, now)
	var fp strings.Builder
	for _, p := range sortedPhases(phases) {
		a := auths[p.ID]
		if a == nil || !now.Before(a.root.NotAfter) {
			continue
		}
		if p.Phase == PhaseActive && a.canSign() {
			s.active = a
			fmt.Fprintf(&fp, "active=%s/%s;", a.id, a.signingCert().SerialNumber.Text(16))
		}
		fmt.Fprintf(&fp, "%s:%s;", p.Phase, a.root.SerialNumber.Text(16))
	}
	s.bundle = x509bundle.FromX509Authorities(td, s.roots)
	s.fingerprint = fp.String()
	return s
}

// bundleRoots lists the bundle's roots, active first, without needing signing keys.
func bundleRoots(phases []AuthorityPhase, auths map[string]*authority, now time.Time) []*x509.Certificate {
	var roots []*x509.Certificate
	for _, p := range sortedPhases(phases) {
		a := auths[p.ID]
		if a == nil || !now.Before(a.root.NotAfter) {
			continue
		}
		if p.Phase == PhaseActive {
			roots = append([]*x509.Certificate{a.root}, roots...)
		} else {
			roots = append(roots, a.root)
		}
	}
	return roots
}

func (s *signer) current() *snapshot { return s.snap.Load() }

func (s *signer) roots() []*x509.Certificate { return slices.Clone(s.current().roots) }

// set installs next and reports whether what the CA signs with or trusts changed (the first
// snapshot changes nothing: there was none); the caller then wakes Changed's waiters with
// notify. A snapshot equal to the current one is not installed, so consumers' caches of the
// bundle stay valid.
func (s *signer) set(next *snapshot) (changed bool) {
	old := s.snap.Load()
	if old != nil && old.fingerprint == next.fingerprint && old.state == next.state {
		return false
	}
	s.snap.Store(next)
	return old != nil && old.fingerprint != next.fingerprint
}

func (s *signer) notify() { s.changed.Notify() }

// SVID is a signed X.509-SVID.
type SVID struct {
	ID spiffeid.ID
	// Chain is DER: the SVID first, then the intermediates up to (not including) the root.
	Chain    [][]byte
	Serial   *big.Int
	NotAfter time.Time
}

// sign issues an SVID for id and pub (ECDSA P-256 only), naming dnsNames too when given. The TTL
// is the configured one, capped by the issuing certificate's remaining life.
func (s *signer) sign(id spiffeid.ID, pub crypto.PublicKey, dnsNames []string) (*SVID, error) {
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok || ecPub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ca: SVID key must be ECDSA P-256, got %T", pub)
	}
	a := s.current().active
	issuer := a.signingCert()
	tmpl, capped, err := s.tmpl.X509SVID(id, s.svidTTL, issuer)
	if err != nil {
		return nil, err
	}
	if capped != nil {
		s.noteCap(id, issuer, capped)
	}
	tmpl.DNSNames = dnsNames
	var der []byte
	if canSignFast(a.key) && len(dnsNames) == 0 {
		der, err = signSVID(tmpl, issuer, ecPub, a.key.(*ecdsa.PrivateKey))
	} else {
		der, err = x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, a.key)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: signing SVID for %s: %w", id, err)
	}
	chain := make([][]byte, 0, len(a.chain)+1)
	chain = append(chain, der)
	for _, ic := range a.chain {
		chain = append(chain, ic.Raw)
	}
	return &SVID{ID: id, Chain: chain, Serial: tmpl.SerialNumber, NotAfter: tmpl.NotAfter}, nil
}

func (s *signer) noteCap(id spiffeid.ID, issuer *x509.Certificate, capped *Capped) {
	s.capped.Add(context.Background(), 1)
	key := issuer.SerialNumber.Text(16)
	s.capMu.Lock()
	first := !s.cappedBy[key]
	s.cappedBy[key] = true
	s.capMu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "SVID TTL capped by the issuing CA's remaining lifetime (further caps by this issuer are logged at debug level)",
		"spiffe_id", id.String(), "requested_ttl", capped.Requested.String(), "granted_ttl", capped.Granted.Round(time.Second).String(),
		"issuer_serial", key, "issuer_expires", capped.IssuerEnd.UTC().Format(time.RFC3339))
}
