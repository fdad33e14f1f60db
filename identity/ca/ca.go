package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
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
	// RotateCommand is the command an expiry warning tells the operator to run; "" is
	// `portcullis ca rotate --data-dir <DataDir>` (on Kubernetes the state lives in a Secret).
	RotateCommand string
	Clock         func() time.Time
	Logger        *slog.Logger
	Meter         metric.Meter
}

// CA signs X.509-SVIDs for one trust domain. It is safe for concurrent use. It composes three
// parts, as SPIRE's server CA does:
//
//   - the signer (signer.go) issues SVIDs from an immutable snapshot of the signing authority
//     and the bundle, swapped atomically: signing takes no lock, reads no file, runs no timer;
//   - the store (store.go) is the CA's state in the data directory: creating it, loading
//     authorities, writing renewed intermediates, reading the revocation list, under the lock
//     the CLI also takes;
//   - the rotator (rotator.go) is the timing: it reloads what the CLI wrote, derives each
//     authority's phase from the clock, renews intermediates at half-life, hands the signer
//     each new snapshot, and warns before certificates expire.
type CA struct {
	cfg     Config
	signer  *signer
	rotator *rotator
	revs    atomic.Pointer[revocations]
}

var _ x509bundle.Source = (*CA)(nil)

// Open loads the CA from cfg.DataDir, creating it (a root and an intermediate, or an
// intermediate under a user-provided root) on first use, and issuing a fresh intermediate if
// the current one is past half of its life.
func Open(cfg Config) (*CA, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	log, now := cfg.Logger, cfg.Clock
	tmpl := &Templates{TrustDomain: cfg.TrustDomain, Clock: now}
	if cfg.SVIDTTL < time.Minute {
		log.Warn("SVID TTL under a minute: every agent renews every few seconds; meant for tests", "svid_ttl", cfg.SVIDTTL.String())
	}
	c := &CA{cfg: cfg, signer: newSigner(cfg.TrustDomain, tmpl, cfg.SVIDTTL, log)}
	st, err := newStore(cfg, tmpl)
	if err != nil {
		return nil, err
	}
	c.rotator = &rotator{store: st, signer: c.signer, revs: &c.revs, intermediateTTL: cfg.IntermediateTTL,
		reloadInterval: cfg.ReloadInterval, warnInterval: cfg.WarnInterval, now: now, log: log,
		rotateCommand: cfg.RotateCommand, warnedAt: map[string]time.Time{}}
	meter := cfg.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	if err := initInstruments(meter, c.signer, now); err != nil {
		return nil, err
	}
	if err := st.init(now()); err != nil {
		return nil, err
	}
	if err := c.rotator.refresh(true); err != nil {
		return nil, err
	}
	if err := c.rotator.reloadRevocations(); err != nil {
		return nil, err
	}
	s := c.signer.current()
	log.Info("CA ready", "trust_domain", cfg.TrustDomain.Name(), "authority", s.active.id,
		"root_expires", s.active.root.NotAfter.UTC().Format(time.RFC3339),
		"intermediate_expires", s.active.signingCert().NotAfter.UTC().Format(time.RFC3339),
		"bundle_roots", len(s.roots), "svid_ttl", cfg.SVIDTTL.String(), "upstream", st.up != nil)
	return c, nil
}

// Init creates or updates the CA's state in cfg.DataDir as Open does (the first root, a new
// --ca-cert root, a longer SVID TTL) without loading its authorities or running anything. It is
// for state kept elsewhere and mirrored into a data directory: on Kubernetes, the CA Secret is
// brought up to date in a scratch directory with Init, then every replica opens its mirror.
func Init(cfg Config) error {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return err
	}
	st, err := newStore(cfg, &Templates{TrustDomain: cfg.TrustDomain, Clock: cfg.Clock})
	if err != nil {
		return err
	}
	return st.init(cfg.Clock())
}

// newStore is the store of cfg (defaults filled in), with its upstream CA loaded.
func newStore(cfg Config, tmpl *Templates) (*store, error) {
	st := &store{dataDir: cfg.DataDir, td: cfg.TrustDomain, tmpl: tmpl, rootTTL: cfg.RootTTL,
		intermediateTTL: cfg.IntermediateTTL, svidTTL: cfg.SVIDTTL, log: cfg.Logger}
	if cfg.UpstreamCert != "" {
		up, err := loadUpstream(cfg.UpstreamCert, cfg.UpstreamKey, cfg.TrustDomain, cfg.Clock())
		if err != nil {
			return nil, err
		}
		st.up = up
	}
	return st, nil
}

// withDefaults checks cfg and fills in the defaults (a discarding logger, the system clock).
func withDefaults(cfg Config) (Config, error) {
	if cfg.TrustDomain.IsZero() {
		return cfg, errors.New("ca: trust domain is required")
	}
	if cfg.DataDir == "" {
		return cfg, errors.New("ca: data directory is required")
	}
	if (cfg.UpstreamCert == "") != (cfg.UpstreamKey == "") {
		return cfg, errors.New("ca: --ca-cert and --ca-key go together")
	}
	cfg.RootTTL = orDefault(cfg.RootTTL, DefaultRootTTL)
	cfg.IntermediateTTL = orDefault(cfg.IntermediateTTL, DefaultIntermediateTTL)
	cfg.SVIDTTL = orDefault(cfg.SVIDTTL, DefaultSVIDTTL)
	cfg.ReloadInterval = orDefault(cfg.ReloadInterval, DefaultReloadInterval)
	cfg.WarnInterval = orDefault(cfg.WarnInterval, DefaultWarnInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.SVIDTTL < MinSVIDTTL {
		return cfg, fmt.Errorf("ca: SVID TTL %s is shorter than the minimum %s", cfg.SVIDTTL, MinSVIDTTL)
	}
	if cfg.IntermediateTTL < 2*cfg.SVIDTTL {
		return cfg, fmt.Errorf("ca: intermediate TTL %s must be at least twice the SVID TTL %s", cfg.IntermediateTTL, cfg.SVIDTTL)
	}
	if cfg.RootTTL < 2*cfg.IntermediateTTL {
		return cfg, fmt.Errorf("ca: root TTL %s must be at least twice the intermediate TTL %s", cfg.RootTTL, cfg.IntermediateTTL)
	}
	return cfg, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run keeps the CA current until ctx ends: it reloads rotations and revocations written by the
// CLI, switches to a prepared root when its activation time comes, renews the intermediate at
// half of its life, and warns about certificates nearing expiry.
func (c *CA) Run(ctx context.Context) error { return c.rotator.run(ctx) }

// TrustDomain returns the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.cfg.TrustDomain }

// SVIDTTL returns the TTL of the SVIDs the CA issues (before any cap).
func (c *CA) SVIDTTL() time.Duration { return c.cfg.SVIDTTL }

// Bundle returns the trust bundle: every root that is prepared, active, or retired but possibly
// still the root of a live SVID.
func (c *CA) Bundle() *x509bundle.Bundle { return c.signer.current().bundle }

// Roots returns the bundle's root certificates, active root first.
func (c *CA) Roots() []*x509.Certificate { return c.signer.roots() }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (c *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.cfg.TrustDomain {
		return nil, fmt.Errorf("ca: no bundle for trust domain %q", td)
	}
	return c.Bundle(), nil
}

// Changed returns a channel closed the next time the signing authority or the bundle changes.
func (c *CA) Changed() <-chan struct{} { return c.signer.changed.Changed() }

// SignX509SVID issues an X.509-SVID for id and pub, which must be an ECDSA P-256 key. The TTL is
// the configured one, capped by the issuing intermediate's remaining life.
func (c *CA) SignX509SVID(id spiffeid.ID, pub crypto.PublicKey) (*SVID, error) {
	return c.signer.sign(id, pub, nil)
}

// SignServingSVID issues an X.509-SVID that also names DNS hosts, for a server its clients
// reach by host name rather than by SPIFFE ID (the admission webhook the Kubernetes API server
// calls). The X.509-SVID specification allows other SAN types beside the one URI.
func (c *CA) SignServingSVID(id spiffeid.ID, pub crypto.PublicKey, dnsNames []string) (*SVID, error) {
	if len(dnsNames) == 0 {
		return nil, fmt.Errorf("ca: serving SVID for %s needs DNS names", id)
	}
	return c.signer.sign(id, pub, dnsNames)
}

// Revoked reports whether the SVID with this serial number was revoked by serial.
func (c *CA) Revoked(serial *big.Int) bool { return c.revs.Load().serial(serial) }

// RevokedCert reports whether an SVID was revoked, by its serial number or by its SPIFFE ID
// (every SVID of the ID issued up to the revocation).
func (c *CA) RevokedCert(cert *x509.Certificate) bool { return c.revs.Load().cert(cert) }
