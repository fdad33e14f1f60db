package telemetry_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/test/tracetest"
)

func TestTracingExportsWithResource(t *testing.T) {
	recv := tracetest.StartReceiver(t)
	tr, err := telemetry.SetupTracing(context.Background(), telemetry.TracingOptions{
		Endpoint: recv.Addr, SamplingRatio: 1,
		ServiceName: "portcullis-test", ServiceVersion: "v9", InstanceID: "i-1",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("test").Start(context.Background(), "work")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := recv.Spans(t)
	if len(spans) != 1 || spans[0].Name != "work" || spans[0].Service != "portcullis-test" {
		t.Fatalf("received %+v", spans)
	}
}

func TestTracingCollectorDownDropsAndCounts(t *testing.T) {
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	m, err := telemetry.NewMetrics("test", "v0")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := telemetry.SetupTracing(context.Background(), telemetry.TracingOptions{Endpoint: addr, SamplingRatio: 1}, m.Meter("telemetry"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 10 {
		_, span := tr.Provider.Tracer("test").Start(context.Background(), "lost")
		span.End()
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("ending spans took %s with the collector down", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = tr.Shutdown(ctx) // the flush fails: the collector is down
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if body := rec.Body.String(); !strings.Contains(body, "portcullis_trace_spans_dropped_total 10") {
		t.Errorf("dropped spans not counted:\n%s", body)
	}
}

func TestPropagatorAcceptsB3EmitsW3C(t *testing.T) {
	p := telemetry.Propagator()
	in := propagation.MapCarrier{"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}
	ctx := p.Extract(context.Background(), in)
	out := propagation.MapCarrier{}
	p.Inject(ctx, out)
	if !strings.HasPrefix(out["traceparent"], "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01") {
		t.Errorf("traceparent = %q", out["traceparent"])
	}
	if _, ok := out["b3"]; ok || out["x-b3-traceid"] != "" {
		t.Errorf("B3 emitted: %v", out)
	}
}

func TestDeferredProviderSwitchesExporter(t *testing.T) {
	recv := tracetest.StartReceiver(t)
	var d telemetry.DeferredProvider
	tracer := d.Tracer("test") // taken before the exporter is known
	_, span := tracer.Start(context.Background(), "before")
	span.End()
	tr, err := telemetry.SetupTracing(context.Background(), telemetry.TracingOptions{Endpoint: recv.Addr, SamplingRatio: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Set(tr.Provider)
	_, span = tracer.Start(context.Background(), "after")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := recv.Spans(t)
	if len(spans) != 1 || spans[0].Name != "after" {
		t.Errorf("exported %+v, want only the span started after Set", spans)
	}
}

// TestTracingPlaintextToANamedCollector exports to a collector addressed by a host name, as
// jaeger.portcullis-system.svc:4317 is in a cluster: plaintext unless TLS is configured (TLS
// used to be chosen for every address but a loopback literal, and no span reached the
// plaintext Jaeger of deploy/).
func TestTracingPlaintextToANamedCollector(t *testing.T) {
	recv := tracetest.StartReceiver(t)
	// A target gRPC reads as is, with no DNS: the address is not a loopback literal.
	tr, err := telemetry.SetupTracing(context.Background(), telemetry.TracingOptions{
		Endpoint: "passthrough:///" + recv.Addr, SamplingRatio: 1, ServiceName: "portcullis-test",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("test").Start(context.Background(), "decision")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if spans := recv.Spans(t); len(spans) != 1 || spans[0].Name != "decision" {
		t.Fatalf("received %+v, want the span in plaintext", spans)
	}
}
