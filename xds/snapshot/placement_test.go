package snapshot

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/portcullis/portcullis/xds/translate"
)

// TestLogPlacements: where a route's policies are decided is logged when it changes, with the
// reason when it is the authorization service, and not again while it stays.
func TestLogPlacements(t *testing.T) {
	var buf bytes.Buffer
	c := &Controller{log: slog.New(slog.NewTextHandler(&buf, nil))}
	native := map[string]translate.AuthzPlacement{"inbound|8080|backend.demo": {Native: true}}
	timed := map[string]translate.AuthzPlacement{"inbound|8080|backend.demo": {Reason: "demo/office-hours: when[0]: time"}}
	c.logPlacements("backend-1.demo", nil, native)
	c.logPlacements("backend-1.demo", native, native)
	c.logPlacements("backend-1.demo", native, timed)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "route decided in Envoy") ||
		!strings.Contains(lines[1], "route decided by the authorization service") || !strings.Contains(lines[1], `reason="demo/office-hours: when[0]: time"`) {
		t.Fatalf("log:\n%s", buf.String())
	}
}

// TestObservePlacements: portcullis_xds_authz_routes counts every proxy's inbound routes by
// where their policies are decided and, on ext_authz, the shape that keeps them there.
func TestObservePlacements(t *testing.T) {
	c := &Controller{state: map[string]*proxyState{
		"a": {authz: map[string]translate.AuthzPlacement{"r1": {Native: true}, "r2": {Shape: "time", Reason: "demo/p: when[0]: time"}}},
		"b": {authz: map[string]translate.AuthzPlacement{"r1": {Native: true}, "r3": {Shape: "rego", Reason: "demo/q: rego"}}},
		"c": {},
	}}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	if _, err := mp.Meter("test").Int64ObservableGauge("portcullis_xds_authz_routes", metric.WithInt64Callback(c.observePlacements)); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
				decided, _ := dp.Attributes.Value("decided")
				reason, _ := dp.Attributes.Value("reason")
				got[decided.AsString()+"/"+reason.AsString()] = dp.Value
			}
		}
	}
	want := map[string]int64{"envoy/": 2, "ext_authz/time": 1, "ext_authz/rego": 1}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
