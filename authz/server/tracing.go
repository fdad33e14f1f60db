package server

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// traceContext is W3C Trace Context only: it is what Envoy's OpenTelemetry tracer sends, and the
// server takes no global propagator.
var traceContext = propagation.TraceContext{}

// mdCarrier reads gRPC metadata as a propagation carrier.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// parentContext returns ctx carrying the remote span the Check span should be a child of:
// Envoy's ext_authz client span from the gRPC metadata when Envoy traces the call, else the
// request's own trace context from the HTTP headers in the CheckRequest. Either way the span
// joins Envoy's trace.
func parentContext(ctx context.Context, headers map[string]string) context.Context {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if c := traceContext.Extract(ctx, mdCarrier(md)); trace.SpanContextFromContext(c).IsValid() {
			return c
		}
	}
	if headers != nil {
		return traceContext.Extract(ctx, propagation.MapCarrier(headers))
	}
	return ctx
}
