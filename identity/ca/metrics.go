package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"io/fs"
	"log/slog"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/portcullis/portcullis/identity/securefile"
)

// Expiry warnings: a certificate whose remaining life falls under WarnFraction of its lifetime
// is logged at warning level (once per warnEvery), under CriticalFraction at error level (once
// per criticalEvery). For a one-year root that is about three months and five weeks ahead.
const (
	WarnFraction     = 0.25
	CriticalFraction = 0.10
	warnEvery        = 24 * time.Hour
	criticalEvery    = time.Hour
)

type instruments struct {
	capped metric.Int64Counter
}

func (in *instruments) init(m metric.Meter, c *CA) error {
	var err error
	in.capped, err = m.Int64Counter("portcullis_ca_svid_ttl_capped",
		metric.WithDescription("SVIDs whose TTL was cut short by the issuing CA's remaining lifetime."))
	if err != nil {
		return fmt.Errorf("ca: metrics: %w", err)
	}
	_, err = m.Float64ObservableGauge("portcullis_ca_certificate_expiry_seconds",
		metric.WithDescription("Seconds until each CA certificate (root or intermediate) in use expires; negative once expired."),
		metric.WithUnit("s"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			now := c.now()
			for _, cert := range c.certificates() {
				o.Observe(cert.cert.NotAfter.Sub(now).Seconds(), metric.WithAttributes(
					attribute.String("role", cert.role), attribute.String("authority", cert.authority),
					attribute.String("phase", string(cert.phase)), attribute.String("serial", cert.cert.SerialNumber.Text(16))))
			}
			return nil
		}))
	if err != nil {
		return fmt.Errorf("ca: metrics: %w", err)
	}
	return nil
}

type caCert struct {
	role, authority string
	phase           Phase
	cert            *x509.Certificate
	// superseded: a newer authority exists, so this one's expiry needs no action.
	superseded bool
}

// certificates lists the roots of the bundle and the intermediates that sign or will sign.
func (c *CA) certificates() []caCert {
	s := c.snap.Load()
	if s == nil {
		return nil
	}
	var out []caCert
	newest := ""
	for _, p := range sortedPhases(s.phases) {
		if _, ok := s.authorities[p.ID]; ok {
			newest = p.ID
		}
	}
	for _, p := range sortedPhases(s.phases) {
		a := s.authorities[p.ID]
		if a == nil {
			continue
		}
		sup := p.ID != newest
		out = append(out, caCert{role: "root", authority: a.id, phase: p.Phase, cert: a.root, superseded: sup})
		if a.canSign() && p.Phase != PhaseRetired {
			out = append(out, caCert{role: "intermediate", authority: a.id, phase: p.Phase, cert: a.signer(), superseded: sup})
		}
	}
	return out
}

// checkExpiry logs certificates nearing expiry, well before it happens: an expired root with no
// log line saying so is a classic mesh outage.
func (c *CA) checkExpiry() {
	now := c.now()
	for _, cc := range c.certificates() {
		if cc.superseded || cc.phase == PhaseRetired {
			continue
		}
		life := cc.cert.NotAfter.Sub(cc.cert.NotBefore)
		left := cc.cert.NotAfter.Sub(now)
		var level slog.Level
		var every time.Duration
		switch {
		case left <= time.Duration(float64(life)*CriticalFraction):
			level, every = slog.LevelError, criticalEvery
		case left <= time.Duration(float64(life)*WarnFraction):
			level, every = slog.LevelWarn, warnEvery
		default:
			continue
		}
		key := cc.role + "/" + cc.cert.SerialNumber.Text(16) + "/" + level.String()
		if last, ok := c.warnedAt[key]; ok && now.Sub(last) < every {
			continue
		}
		c.warnedAt[key] = now
		action := "the control plane renews intermediates at half-life; check its log for renewal errors"
		if cc.role == "root" {
			action = "rotate it: portcullis ca rotate --data-dir " + c.cfg.DataDir + " (see docs/identity.md)"
			if c.up != nil {
				action = "provide a new --ca-cert/--ca-key before it expires (see docs/identity.md)"
			}
		}
		c.log.Log(context.Background(), level, "CA certificate nearing expiry",
			"role", cc.role, "authority", cc.authority, "serial", cc.cert.SerialNumber.Text(16),
			"expires", cc.cert.NotAfter.UTC().Format(time.RFC3339), "remaining", left.Round(time.Minute).String(), "action", action)
	}
}

func ensureDir(dir string) error {
	if err := securefile.EnsureDir(dir, securefile.DirMode); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func createExclusive(path string, data []byte) error {
	if err := securefile.CreateExclusive(path, data); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func inode(st fs.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}
