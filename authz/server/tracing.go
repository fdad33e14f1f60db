package server

import (
	"context"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

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
func parentContext(ctx context.Context, h *authv3.AttributeContext_HttpRequest) context.Context {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if c := traceContext.Extract(ctx, mdCarrier(md)); trace.SpanContextFromContext(c).IsValid() {
			return c
		}
	}
	if h == nil {
		return ctx
	}
	if headers := h.GetHeaders(); headers != nil {
		return traceContext.Extract(ctx, propagation.MapCarrier(headers))
	}
	return traceContext.Extract(ctx, headerMapCarrier(h.GetHeaderMap().GetHeaders()))
}

// headerMapCarrier reads Envoy's header_map form (encode_raw_headers) as a propagation carrier,
// without building a map: only traceparent and tracestate are read.
type headerMapCarrier []*corev3.HeaderValue

func (c headerMapCarrier) Get(key string) string {
	for _, h := range c {
		if strings.EqualFold(h.GetKey(), key) {
			return headerValue(h)
		}
	}
	return ""
}
func (c headerMapCarrier) Set(string, string) {}
func (c headerMapCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.GetKey()
	}
	return keys
}
