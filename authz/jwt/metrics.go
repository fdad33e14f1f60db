package jwt

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics are the verifier's instruments. Provider labels are namespace/name of JWTProvider
// documents, so their number is bounded by the configuration.
type metrics struct {
	fetches       metric.Int64Counter
	verifications metric.Int64Counter
	registration  metric.Registration
	// verifyAttrs holds the attribute sets of every (code, cache) pair, built once: building them
	// per request would allocate on the hot path.
	verifyAttrs map[Code][2][]metric.AddOption
}

func newMetrics(m metric.Meter, v *Verifier) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var out metrics
	var err error
	if out.fetches, err = m.Int64Counter("portcullis_authz_jwks_fetches",
		metric.WithDescription("JWKS fetches by provider and result (ok, unchanged, error).")); err != nil {
		return nil, fmt.Errorf("jwt: metrics: %w", err)
	}
	if out.verifications, err = m.Int64Counter("portcullis_authz_jwt_verifications",
		metric.WithDescription("Tokens checked, by result (ok or the rejection code) and whether the verified-token cache answered.")); err != nil {
		return nil, fmt.Errorf("jwt: metrics: %w", err)
	}
	out.verifyAttrs = map[Code][2][]metric.AddOption{}
	for _, c := range codes {
		out.verifyAttrs[c] = [2][]metric.AddOption{
			{metric.WithAttributes(attribute.String("result", string(c)), attribute.String("cache", "miss"))},
			{metric.WithAttributes(attribute.String("result", string(c)), attribute.String("cache", "hit"))},
		}
	}
	up, err := m.Int64ObservableGauge("portcullis_authz_jwks_provider_up",
		metric.WithDescription("1 when the provider's last JWKS fetch succeeded, 0 otherwise (it may still verify with its last good keys: see portcullis_authz_jwks_keys)."))
	if err != nil {
		return nil, fmt.Errorf("jwt: metrics: %w", err)
	}
	keys, err := m.Int64ObservableGauge("portcullis_authz_jwks_keys",
		metric.WithDescription("Usable keys the provider verifies with; 0 means its tokens are rejected."))
	if err != nil {
		return nil, fmt.Errorf("jwt: metrics: %w", err)
	}
	age, err := m.Float64ObservableGauge("portcullis_authz_jwks_age_seconds", metric.WithUnit("s"),
		metric.WithDescription("Seconds since the provider's keys were last fetched successfully."))
	if err != nil {
		return nil, fmt.Errorf("jwt: metrics: %w", err)
	}
	out.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := v.opts.Now()
		for _, st := range v.Status() {
			attrs := metric.WithAttributes(attribute.String("provider", st.Provider))
			var isUp int64
			if st.State == StateOK {
				isUp = 1
			}
			o.ObserveInt64(up, isUp, attrs)
			o.ObserveInt64(keys, int64(st.Keys), attrs)
			if !st.LastSuccess.IsZero() {
				o.ObserveFloat64(age, now.Sub(st.LastSuccess).Seconds(), attrs)
			}
		}
		return nil
	}, up, keys, age)
	if err != nil {
		return nil, fmt.Errorf("jwt: metrics: %w", err)
	}
	return &out, nil
}

func (m *metrics) fetched(ctx context.Context, provider, result string) {
	m.fetches.Add(ctx, 1, metric.WithAttributes(attribute.String("provider", provider), attribute.String("result", result)))
}

func (m *metrics) verified(ctx context.Context, result Code, cacheHit bool) {
	i := 0
	if cacheHit {
		i = 1
	}
	m.verifications.Add(ctx, 1, m.verifyAttrs[result][i]...)
}
