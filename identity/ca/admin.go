package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// RotateOptions configure Rotate.
type RotateOptions struct {
	// ActivateAfter is how long the new root waits in the bundle before it signs. It must cover
	// the time every agent takes to fetch the new bundle (agents renew at half of the SVID TTL),
	// so the default is the longest SVID TTL. Zero with Now set activates at once.
	ActivateAfter time.Duration
	// Now activates the new root immediately: SVIDs it signs are not trusted by peers that
	// have not renewed yet. For a compromised root.
	Now                      bool
	RootTTL, IntermediateTTL time.Duration
	Clock                    func() time.Time
}

// Rotate adds a new root (and an intermediate under it) to the CA in dataDir. The new root joins
// the trust bundle at once and becomes the signing authority after ActivateAfter; the root it
// replaces stays in the bundle until every SVID it signed has expired. It returns the new
// authority's phase record.
func Rotate(dataDir string, opts RotateOptions) (AuthorityPhase, error) {
	clock := opts.Clock
	if clock == nil {
		clock = time.Now
	}
	lock, err := lockState(dataDir)
	if err != nil {
		return AuthorityPhase{}, err
	}
	defer func() { _ = lock.Release() }()
	st, err := ReadState(dataDir)
	if err != nil {
		return AuthorityPhase{}, err
	}
	now := clock()
	phases, err := st.Phases(now)
	if err != nil {
		return AuthorityPhase{}, err
	}
	if activeRecord(phases).Upstream {
		return AuthorityPhase{}, errors.New("ca: the active root came from --ca-cert; rotate it by starting the control plane with the new --ca-cert and --ca-key")
	}
	for _, p := range phases {
		if p.Phase == PhasePrepared {
			return AuthorityPhase{}, fmt.Errorf("ca: authority %s is already prepared to activate at %s; wait for it (or edit %s)", p.ID, p.ActivateAt.UTC().Format(time.RFC3339), StateFile)
		}
	}
	td, err := spiffeid.TrustDomainFromString(st.TrustDomain)
	if err != nil {
		return AuthorityPhase{}, fmt.Errorf("ca: %s: %w", StateFile, err)
	}
	after := opts.ActivateAfter
	if !opts.Now && after <= 0 {
		after = st.MaxSVIDTTL()
	}
	if opts.Now {
		after = 0
	}
	id, err := newAuthorityID(now)
	if err != nil {
		return AuthorityPhase{}, err
	}
	t := &Templates{TrustDomain: td, Clock: clock}
	if _, err := createManagedAuthority(dataDir, id, t, orDefault(opts.RootTTL, DefaultRootTTL), orDefault(opts.IntermediateTTL, DefaultIntermediateTTL)); err != nil {
		return AuthorityPhase{}, err
	}
	rec := AuthorityRecord{ID: id, CreatedAt: now, ActivateAt: now.Add(after)}
	st.Authorities = append(st.Authorities, rec)
	if err := writeState(dataDir, st); err != nil {
		return AuthorityPhase{}, err
	}
	phases, err = st.Phases(now)
	if err != nil {
		return AuthorityPhase{}, err
	}
	for _, p := range phases {
		if p.ID == id {
			return p, nil
		}
	}
	return AuthorityPhase{}, errors.New("ca: rotated authority missing from state") // unreachable
}

// AuthorityStatus is one authority as `portcullis ca status` shows it.
type AuthorityStatus struct {
	AuthorityPhase
	Root             CertInfo  `json:"root"`
	Intermediate     *CertInfo `json:"intermediate,omitempty"`
	InBundle         bool      `json:"inBundle"`
	RootFingerprint  string    `json:"rootPin"`
	IntermediateNote string    `json:"intermediateNote,omitempty"`
}

// CertInfo summarizes a certificate.
type CertInfo struct {
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

func certInfo(c *x509.Certificate) CertInfo {
	return CertInfo{Serial: c.SerialNumber.Text(16), NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC()}
}

// Status describes the CA in dataDir at now, for the CLI.
type Status struct {
	TrustDomain string            `json:"trustDomain"`
	MaxSVIDTTL  string            `json:"maxSVIDTTL"`
	Authorities []AuthorityStatus `json:"authorities"`
}

// ReadStatus reads the CA's state and certificates from dataDir without changing anything.
func ReadStatus(dataDir string, now time.Time) (*Status, error) {
	st, err := ReadState(dataDir)
	if err != nil {
		return nil, err
	}
	phases, err := st.Phases(now)
	if err != nil {
		return nil, err
	}
	out := &Status{TrustDomain: st.TrustDomain, MaxSVIDTTL: st.MaxSVIDTTL().String()}
	for _, p := range sortedPhases(phases) {
		a, err := loadAuthority(dataDir, p.AuthorityRecord, nil)
		if err != nil {
			return nil, err
		}
		s := AuthorityStatus{
			AuthorityPhase:  p,
			Root:            certInfo(a.root),
			InBundle:        p.Phase != PhaseDropped && now.Before(a.root.NotAfter),
			RootFingerprint: Pin(a.root),
		}
		if a.canSign() {
			ic := certInfo(a.signingCert())
			s.Intermediate = &ic
		} else if a.upstream {
			s.IntermediateNote = "from --ca-cert"
		}
		out.Authorities = append(out.Authorities, s)
	}
	return out, nil
}

// ReadBundle returns the trust domain and the bundle's roots as stored in dataDir at now, for
// commands that run beside the control plane (token pins).
func ReadBundle(dataDir string, now time.Time) (spiffeid.TrustDomain, []*x509.Certificate, error) {
	st, err := ReadState(dataDir)
	if err != nil {
		return spiffeid.TrustDomain{}, nil, err
	}
	td, err := spiffeid.TrustDomainFromString(st.TrustDomain)
	if err != nil {
		return spiffeid.TrustDomain{}, nil, fmt.Errorf("ca: %s: %w", StateFile, err)
	}
	phases, err := st.Phases(now)
	if err != nil {
		return spiffeid.TrustDomain{}, nil, err
	}
	auths := map[string]*authority{}
	for _, p := range phases {
		if p.Phase == PhaseDropped {
			continue
		}
		a, err := loadAuthority(dataDir, p.AuthorityRecord, nil)
		if err != nil {
			return spiffeid.TrustDomain{}, nil, err
		}
		auths[p.ID] = a
	}
	s := bundleRoots(phases, auths, now)
	if len(s) == 0 {
		return spiffeid.TrustDomain{}, nil, errors.New("ca: no valid root in the trust bundle")
	}
	return td, s, nil
}

// ReadTrustDomain returns the trust domain of the CA in dataDir, or ErrNoCA.
func ReadTrustDomain(dataDir string) (spiffeid.TrustDomain, error) {
	st, err := ReadState(dataDir)
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	td, err := spiffeid.TrustDomainFromString(st.TrustDomain)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("ca: %s: %w", StateFile, err)
	}
	return td, nil
}
