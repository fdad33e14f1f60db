package server

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/portcullis/portcullis/authz/policy"
)

// metrics are the server's instruments. Label values are bounded: decision codes are a fixed
// set and policy names come from the configuration ("" for the mesh default).
type metrics struct {
	checks    metric.Int64Counter
	latency   metric.Float64Histogram
	logErrors metric.Int64Counter
	refused   metric.Int64Counter
	// attrs caches the attribute sets of (code, policy) pairs: building them per request would
	// allocate on the hot path.
	attrs sync.Map // checkKey → checkAttrs
}

type checkKey struct {
	code   policy.Code
	policy string
}

// checkAttrs are option slices, passed on with "...", so recording allocates nothing.
type checkAttrs struct {
	counter []metric.AddOption
	latency []metric.RecordOption
}

// latencyBuckets resolve the sub-millisecond range a local decision takes, up to Envoy's
// timeouts.
var latencyBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}

func newMetrics(m metric.Meter, s *Server) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	out := &metrics{}
	var err error
	if out.checks, err = m.Int64Counter("portcullis_authz_checks",
		metric.WithDescription("Authorization checks by decision, code and deciding policy (empty for the mesh default).")); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	if out.latency, err = m.Float64Histogram("portcullis_authz_check_duration_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time to answer a Check, by decision."), metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	if out.logErrors, err = m.Int64Counter("portcullis_authz_decision_log_errors",
		metric.WithDescription("Decision log records that could not be written.")); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	if out.refused, err = m.Int64Counter("portcullis_authz_refused_callers",
		metric.WithDescription("Checks refused because the caller is not a proxy (callers.go): no decision was made.")); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	if _, err = m.Int64ObservableGauge("portcullis_authz_policies",
		metric.WithDescription("AuthorizationPolicies in the live engine; absent until a mesh is loaded."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if e := s.engine.Load(); e != nil {
				o.Observe(int64(e.Policies()), metric.WithAttributes(attribute.String("mesh_version", e.Version())))
			}
			return nil
		})); err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	return out, nil
}

func (m *metrics) record(ctx context.Context, d *policy.Decision, seconds float64) {
	a := m.attrsOf(d)
	m.checks.Add(ctx, 1, a.counter...)
	m.latency.Record(ctx, seconds, a.latency...)
}

// count counts a decision Envoy made (accesslog.go): in the same counter as the service's own,
// so dashboards and alerts see every decision; the latency histogram is the service's alone.
func (m *metrics) count(ctx context.Context, d *policy.Decision) {
	m.checks.Add(ctx, 1, m.attrsOf(d).counter...)
}

func (m *metrics) attrsOf(d *policy.Decision) checkAttrs {
	k := checkKey{d.Code, d.Policy}
	v, ok := m.attrs.Load(k)
	if !ok {
		set := attribute.NewSet(attribute.String("decision", string(d.Outcome())), attribute.String("code", string(d.Code)), attribute.String("policy", d.Policy))
		lat := attribute.NewSet(attribute.String("decision", string(d.Outcome())))
		v, _ = m.attrs.LoadOrStore(k, checkAttrs{[]metric.AddOption{metric.WithAttributeSet(set)}, []metric.RecordOption{metric.WithAttributeSet(lat)}})
	}
	return v.(checkAttrs)
}
