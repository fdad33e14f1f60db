package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// initInstruments registers the CA's metrics: the signer's count of capped SVIDs and a gauge of
// the time left on each CA certificate in use.
func initInstruments(m metric.Meter, s *signer, now func() time.Time) error {
	var err error
	s.capped, err = m.Int64Counter("portcullis_ca_svid_ttl_capped",
		metric.WithDescription("SVIDs whose TTL was cut short by the issuing CA's remaining lifetime."))
	if err != nil {
		return fmt.Errorf("ca: metrics: %w", err)
	}
	_, err = m.Float64ObservableGauge("portcullis_ca_certificate_expiry_seconds",
		metric.WithDescription("Seconds until each CA certificate (root or intermediate) in use expires; negative once expired."),
		metric.WithUnit("s"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			now := now()
			for _, cert := range s.current().certificates() {
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

// certificates lists the roots of the bundle and the intermediates that sign or will sign; none
// before the first snapshot.
func (s *snapshot) certificates() []caCert {
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
			out = append(out, caCert{role: "intermediate", authority: a.id, phase: p.Phase, cert: a.signingCert(), superseded: sup})
		}
	}
	return out
}
