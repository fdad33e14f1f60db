package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/portcullis/portcullis/telemetry/watch"
)

// Defaults of Config (README.md and docs/identity.md list them too).
const (
	DefaultRootTTL         = 365 * 24 * time.Hour
	DefaultIntermediateTTL = 7 * 24 * time.Hour
	DefaultSVIDTTL         = time.Hour
	DefaultReloadInterval  = 2 * time.Second
	DefaultWarnInterval    = time.Minute
	// MinSVIDTTL is the shortest SVID TTL accepted (short TTLs are for tests).
	MinSVIDTTL = 2 * time.Second
)

// Config configures a CA.
type Config struct {
	// DataDir holds the CA's files under DataDir/ca.
	DataDir     string
	TrustDomain spiffeid.TrustDomain
	// RootTTL is the lifetime of a generated root; IntermediateTTL of each intermediate (renewed
	// at half of it); SVIDTTL of each SVID (capped by the intermediate's remaining life).
	RootTTL, IntermediateTTL, SVIDTTL time.Duration
	// UpstreamCert and UpstreamKey are --ca-cert and --ca-key: a user-provided CA to sign with
	// instead of a generated root. Both or neither.
	UpstreamCert, UpstreamKey string
	// ReloadInterval is how often the data directory is checked for rotations and revocations.
	ReloadInterval time.Duration
	// WarnInterval is how often certificate lifetimes are checked for expiry warnings.
	WarnInterval time.Duration
	Clock        func() time.Time
	Logger       *slog.Logger
	Meter        metric.Meter
}

// CA signs X.509-SVIDs for one trust domain. It is safe for concurrent use; signing takes no
// lock (the signing authority is an immutable snapshot swapped atomically).
type CA struct {
	cfg   Config
	td    spiffeid.TrustDomain
	tmpl  *Templates
	log   *slog.Logger
	up    *upstream
	snap  atomic.Pointer[snapshot]
	revs  atomic.Pointer[revocations]
	now   func() time.Time
	inst  instruments
	capMu sync.Mutex
	// cappedBy remembers issuers that capped an SVID's TTL, so the cap is logged once per
	// issuer at warning level rather than once per SVID.
	cappedBy map[string]bool

	refreshMu    sync.Mutex
	stateStamp   fileStamp
	revokedStamp fileStamp
	warnedAt     map[string]time.Time

	changed watch.Signal
}

// snapshot is what the CA signs with and trusts at one moment.
type snapshot struct {
	state       *State
	phases      []AuthorityPhase
	authorities map[string]*authority
	active      *authority
	roots       []*x509.Certificate
	bundle      *x509bundle.Bundle
	fingerprint string
}

// Open loads the CA from cfg.DataDir, creating it (a root and an intermediate, or an
// intermediate under a user-provided root) on first use, and issuing a fresh intermediate if
// the current one is past half of its life.
func Open(cfg Config) (*CA, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("ca: data directory is required")
	}
	if (cfg.UpstreamCert == "") != (cfg.UpstreamKey == "") {
		return nil, errors.New("ca: --ca-cert and --ca-key go together")
	}
	cfg.RootTTL = orDefault(cfg.RootTTL, DefaultRootTTL)
	cfg.IntermediateTTL = orDefault(cfg.IntermediateTTL, DefaultIntermediateTTL)
	cfg.SVIDTTL = orDefault(cfg.SVIDTTL, DefaultSVIDTTL)
	cfg.ReloadInterval = orDefault(cfg.ReloadInterval, DefaultReloadInterval)
	cfg.WarnInterval = orDefault(cfg.WarnInterval, DefaultWarnInterval)
	if cfg.SVIDTTL < MinSVIDTTL {
		return nil, fmt.Errorf("ca: SVID TTL %s is shorter than the minimum %s", cfg.SVIDTTL, MinSVIDTTL)
	}
	if cfg.IntermediateTTL < 2*cfg.SVIDTTL {
		return nil, fmt.Errorf("ca: intermediate TTL %s must be at least twice the SVID TTL %s", cfg.IntermediateTTL, cfg.SVIDTTL)
	}
	if cfg.RootTTL < 2*cfg.IntermediateTTL {
		return nil, fmt.Errorf("ca: root TTL %s must be at least twice the intermediate TTL %s", cfg.RootTTL, cfg.IntermediateTTL)
	}
	c := &CA{
		cfg:      cfg,
		td:       cfg.TrustDomain,
		log:      cfg.Logger,
		now:      cfg.Clock,
		cappedBy: map[string]bool{},
		warnedAt: map[string]time.Time{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.tmpl = &Templates{TrustDomain: cfg.TrustDomain, Clock: c.now}
	if cfg.SVIDTTL < time.Minute {
		c.log.Warn("SVID TTL under a minute: every agent renews every few seconds; meant for tests", "svid_ttl", cfg.SVIDTTL.String())
	}
	meter := cfg.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	if err := c.inst.init(meter, c); err != nil {
		return nil, err
	}
	if cfg.UpstreamCert != "" {
		up, err := loadUpstream(cfg.UpstreamCert, cfg.UpstreamKey, cfg.TrustDomain, c.now())
		if err != nil {
			return nil, err
		}
		c.up = up
	}
	if err := c.initState(); err != nil {
		return nil, err
	}
	if err := c.refresh(true); err != nil {
		return nil, err
	}
	if err := c.reloadRevocations(); err != nil {
		return nil, err
	}
	s := c.snap.Load()
	c.log.Info("CA ready", "trust_domain", c.td.Name(), "authority", s.active.id,
		"root_expires", s.active.root.NotAfter.UTC().Format(time.RFC3339),
		"intermediate_expires", s.active.signer().NotAfter.UTC().Format(time.RFC3339),
		"bundle_roots", len(s.roots), "svid_ttl", cfg.SVIDTTL.String(), "upstream", c.up != nil)
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// initState creates or updates the state file under the lock: the first authority, a new
// upstream authority when --ca-cert names a different root, and the longest SVID TTL.
func (c *CA) initState() error {
	lock, err := lockState(c.cfg.DataDir)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Release() }() // closing the file releases the lock anyway
	now := c.now()
	st, err := ReadState(c.cfg.DataDir)
	switch {
	case errors.Is(err, ErrNoCA):
		st = &State{TrustDomain: c.td.Name()}
	case err != nil:
		return err
	case st.TrustDomain != c.td.Name():
		return fmt.Errorf("ca: the CA in %s is for trust domain %q, not %q; a trust domain cannot change without a new data directory", c.cfg.DataDir, st.TrustDomain, c.td.Name())
	}
	dirty := false
	if ttl := int64(c.cfg.SVIDTTL / time.Second); ttl > st.MaxSVIDTTLSeconds {
		st.MaxSVIDTTLSeconds, dirty = ttl, true
	}
	var active AuthorityPhase
	if len(st.Authorities) > 0 {
		phases, err := st.Phases(now)
		if err != nil {
			return err
		}
		active = activeRecord(phases)
	}
	switch {
	case c.up != nil:
		same, err := c.upstreamIsActive(active)
		if err != nil {
			return err
		}
		if !same {
			rec, err := c.addUpstreamAuthority(now)
			if err != nil {
				return err
			}
			if active.ID != "" {
				c.log.Warn("CA root changed (new --ca-cert); the previous root stays in the trust bundle until the SVIDs it signed have expired",
					"previous_authority", active.ID, "authority", rec.ID, "overlap", (st.MaxSVIDTTL() + DropGrace).String())
			}
			st.Authorities, dirty = append(st.Authorities, rec), true
		}
	case len(st.Authorities) == 0:
		id, err := newAuthorityID(now)
		if err != nil {
			return err
		}
		a, err := createManagedAuthority(c.cfg.DataDir, id, c.tmpl, c.cfg.RootTTL, c.cfg.IntermediateTTL)
		if err != nil {
			return err
		}
		c.log.Info("created CA root and intermediate", "authority", id, "root_serial", a.root.SerialNumber.Text(16),
			"root_expires", a.root.NotAfter.UTC().Format(time.RFC3339), "dir", authorityDir(c.cfg.DataDir, id))
		st.Authorities = append(st.Authorities, AuthorityRecord{ID: id, CreatedAt: now, ActivateAt: now})
		dirty = true
	case active.Upstream:
		return fmt.Errorf("ca: the active CA authority %s came from --ca-cert; start the control plane with the same --ca-cert and --ca-key (or give new ones)", active.ID)
	}
	if dirty {
		return writeState(c.cfg.DataDir, st)
	}
	return nil
}

func (c *CA) upstreamIsActive(active AuthorityPhase) (bool, error) {
	if active.ID == "" || !active.Upstream {
		return false, nil
	}
	data, err := os.ReadFile(filepath.Join(authorityDir(c.cfg.DataDir, active.ID), RootFile))
	if err != nil {
		return false, fmt.Errorf("ca: %w", err)
	}
	certs, _, err := DecodePEM(data)
	if err != nil {
		return false, fmt.Errorf("ca: authority %s: %w", active.ID, err)
	}
	return len(certs) == 1 && certs[0].Equal(c.up.root), nil
}

func (c *CA) addUpstreamAuthority(now time.Time) (AuthorityRecord, error) {
	id, err := newAuthorityID(now)
	if err != nil {
		return AuthorityRecord{}, err
	}
	dir := authorityDir(c.cfg.DataDir, id)
	if err := ensureDir(dir); err != nil {
		return AuthorityRecord{}, err
	}
	if err := createExclusive(filepath.Join(dir, RootFile), EncodeCertsPEM(c.up.root)); err != nil {
		return AuthorityRecord{}, err
	}
	return AuthorityRecord{ID: id, Upstream: true, CreatedAt: now, ActivateAt: now}, nil
}

// TrustDomain returns the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// SVIDTTL returns the TTL of the SVIDs the CA issues (before any cap).
func (c *CA) SVIDTTL() time.Duration { return c.cfg.SVIDTTL }

// Bundle returns the trust bundle: every root that is prepared, active, or retired but possibly
// still the root of a live SVID.
func (c *CA) Bundle() *x509bundle.Bundle { return c.snap.Load().bundle }

// Roots returns the bundle's root certificates, active root first.
func (c *CA) Roots() []*x509.Certificate { return slices.Clone(c.snap.Load().roots) }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (c *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.td {
		return nil, fmt.Errorf("ca: no bundle for trust domain %q", td)
	}
	return c.Bundle(), nil
}

// Changed returns a channel closed the next time the signing authority or the bundle changes.
func (c *CA) Changed() <-chan struct{} { return c.changed.Changed() }

func (c *CA) notify() { c.changed.Notify() }

// SVID is a signed X.509-SVID.
type SVID struct {
	ID spiffeid.ID
	// Chain is DER: the SVID first, then the intermediates up to (not including) the root.
	Chain    [][]byte
	Serial   *big.Int
	NotAfter time.Time
}

// SignX509SVID issues an X.509-SVID for id and pub, which must be an ECDSA P-256 key. The TTL is
// the configured one, capped by the issuing intermediate's remaining life.
func (c *CA) SignX509SVID(id spiffeid.ID, pub crypto.PublicKey) (*SVID, error) {
	return c.sign(id, pub, nil)
}

// SignServingSVID issues an X.509-SVID that also names DNS hosts, for a server its clients
// reach by host name rather than by SPIFFE ID (the admission webhook the Kubernetes API server
// calls). The X.509-SVID specification allows other SAN types beside the one URI.
func (c *CA) SignServingSVID(id spiffeid.ID, pub crypto.PublicKey, dnsNames []string) (*SVID, error) {
	if len(dnsNames) == 0 {
		return nil, fmt.Errorf("ca: serving SVID for %s needs DNS names", id)
	}
	return c.sign(id, pub, dnsNames)
}

func (c *CA) sign(id spiffeid.ID, pub crypto.PublicKey, dnsNames []string) (*SVID, error) {
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok || ecPub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ca: SVID key must be ECDSA P-256, got %T", pub)
	}
	a := c.snap.Load().active
	issuer := a.signer()
	tmpl, capped, err := c.tmpl.X509SVID(id, c.cfg.SVIDTTL, issuer)
	if err != nil {
		return nil, err
	}
	if capped != nil {
		c.noteCap(id, issuer, capped)
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

func (c *CA) noteCap(id spiffeid.ID, issuer *x509.Certificate, capped *Capped) {
	c.inst.capped.Add(context.Background(), 1)
	key := issuer.SerialNumber.Text(16)
	c.capMu.Lock()
	first := !c.cappedBy[key]
	c.cappedBy[key] = true
	c.capMu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "SVID TTL capped by the issuing CA's remaining lifetime (further caps by this issuer are logged at debug level)",
		"spiffe_id", id.String(), "requested_ttl", capped.Requested.String(), "granted_ttl", capped.Granted.Round(time.Second).String(),
		"issuer_serial", key, "issuer_expires", capped.IssuerEnd.UTC().Format(time.RFC3339))
}

// Run keeps the CA current until ctx ends: it reloads rotations and revocations written by the
// CLI, switches to a prepared root when its activation time comes, renews the intermediate at
// half of its life, and warns about certificates nearing expiry.
func (c *CA) Run(ctx context.Context) error {
	reload := time.NewTicker(c.cfg.ReloadInterval)
	defer reload.Stop()
	warn := time.NewTicker(c.cfg.WarnInterval)
	defer warn.Stop()
	c.checkExpiry()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload.C:
			if err := c.refresh(false); err != nil {
				c.log.Error("CA refresh failed; still signing with the current authority", "err", err)
			}
			if err := c.reloadRevocations(); err != nil {
				c.log.Error("reloading revocations failed; keeping the previous list", "file", filepath.Join(caDir(c.cfg.DataDir), RevokedFile), "err", err)
			}
		case <-warn.C:
			c.checkExpiry()
		}
	}
}

// refresh recomputes the snapshot: from the files when the state file changed (or force), and
// from the clock otherwise, since activations and drops happen at set times.
func (c *CA) refresh(force bool) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	now := c.now()
	old := c.snap.Load()
	statePath := filepath.Join(caDir(c.cfg.DataDir), StateFile)
	stamp, err := statFile(statePath)
	if err != nil {
		return err
	}
	st, loaded := (*State)(nil), map[string]*authority(nil)
	if old != nil && !force && stamp == c.stateStamp {
		st, loaded = old.state, old.authorities
	} else {
		if st, err = ReadState(c.cfg.DataDir); err != nil {
			return err
		}
		if st.TrustDomain != c.td.Name() {
			return fmt.Errorf("ca: %s now names trust domain %q; keeping %q", StateFile, st.TrustDomain, c.td.Name())
		}
		loaded = map[string]*authority{}
	}
	phases, err := st.Phases(now)
	if err != nil {
		return err
	}
	auths := make(map[string]*authority, len(phases))
	for _, p := range phases {
		if p.Phase == PhaseDropped {
			continue
		}
		a := loaded[p.ID]
		if a == nil {
			if a, err = loadAuthority(c.cfg.DataDir, p.AuthorityRecord, c.up); err != nil {
				return err
			}
		}
		if p.Phase != PhaseRetired && a.intermediateDue(now, c.cfg.IntermediateTTL) {
			if a, err = c.renew(a); err != nil {
				return err
			}
		}
		auths[p.ID] = a
	}
	next := buildSnapshot(c.td, st, phases, auths, now)
	if next.active == nil {
		return fmt.Errorf("ca: active authority %s cannot sign: its root has expired (portcullis ca rotate --now), or it came from --ca-cert and the control plane was not started with that --ca-cert and --ca-key", activeRecord(phases).ID)
	}
	c.stateStamp = stamp
	if old != nil && old.fingerprint == next.fingerprint && old.state == st {
		return nil // nothing changed: keep the bundle value, so consumers' caches stay valid
	}
	c.snap.Store(next)
	if old != nil && old.fingerprint != next.fingerprint {
		c.log.Info("CA authorities changed", "active", next.active.id, "signer_serial", next.active.signer().SerialNumber.Text(16),
			"bundle_roots", len(next.roots), "phases", describePhases(phases))
		c.notify()
	}
	return nil
}

func (c *CA) renew(a *authority) (*authority, error) {
	lock, err := lockState(c.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lock.Release() }()
	next, capped, err := a.renewIntermediate(c.cfg.DataDir, c.tmpl, c.cfg.IntermediateTTL)
	if err != nil {
		return nil, fmt.Errorf("ca: renewing intermediate of %s: %w", a.id, err)
	}
	attrs := []any{"authority", a.id, "serial", next.signer().SerialNumber.Text(16), "expires", next.signer().NotAfter.UTC().Format(time.RFC3339)}
	if capped != nil {
		c.log.Warn("issued intermediate CA, its lifetime capped by the root's remaining life; rotate the root (portcullis ca rotate)",
			append(attrs, "requested_ttl", capped.Requested.String(), "granted_ttl", capped.Granted.Round(time.Second).String())...)
	} else {
		c.log.Info("issued intermediate CA", attrs...)
	}
	return next, nil
}

func buildSnapshot(td spiffeid.TrustDomain, st *State, phases []AuthorityPhase, auths map[string]*authority, now time.Time) *snapshot {
	s := &snapshot{state: st, phases: phases, authorities: auths}
	s.roots = buildSnapshotRoots(phases, auths, now)
	var fp strings.Builder
	for _, p := range sortedPhases(phases) {
		a := auths[p.ID]
		if a == nil || !now.Before(a.root.NotAfter) {
			continue
		}
		if p.Phase == PhaseActive && a.canSign() {
			s.active = a
			fmt.Fprintf(&fp, "active=%s/%s;", a.id, a.signer().SerialNumber.Text(16))
		}
		fmt.Fprintf(&fp, "%s:%s;", p.Phase, a.root.SerialNumber.Text(16))
	}
	s.bundle = x509bundle.FromX509Authorities(td, s.roots)
	s.fingerprint = fp.String()
	return s
}

func describePhases(phases []AuthorityPhase) string {
	parts := make([]string, 0, len(phases))
	for _, p := range sortedPhases(phases) {
		parts = append(parts, p.ID+"="+string(p.Phase))
	}
	return strings.Join(parts, ",")
}

// fileStamp detects a replaced file (atomic renames change the inode and mtime).
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func statFile(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, fmt.Errorf("ca: %w", err)
	}
	return fileStamp{mod: st.ModTime(), size: st.Size(), ino: inode(st)}, nil
}
