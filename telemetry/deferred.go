package telemetry

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// DeferredProvider is a tracer provider whose exporter is decided later: the control plane
// learns its collector from the first valid mesh, but components that trace (the document
// source) start before it. Until Set, spans are no-ops.
type DeferredProvider struct {
	embedded.TracerProvider
	p atomic.Pointer[trace.TracerProvider]
}

var _ trace.TracerProvider = (*DeferredProvider)(nil)

// Set makes every tracer from this provider, past and future, use p.
func (d *DeferredProvider) Set(p trace.TracerProvider) { d.p.Store(&p) }

// Tracer returns a tracer that resolves the provider at each span start.
func (d *DeferredProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return &deferredTracer{d: d, name: name, opts: opts}
}

type deferredTracer struct {
	embedded.Tracer
	d    *DeferredProvider
	name string
	opts []trace.TracerOption
}

func (t *deferredTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	p := t.d.p.Load()
	if p == nil {
		return noop.NewTracerProvider().Tracer(t.name).Start(ctx, name, opts...)
	}
	return (*p).Tracer(t.name, t.opts...).Start(ctx, name, opts...)
}
