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

// incomingCarrier reads the call's gRPC metadata as a propagation carrier, a key at a time:
// metadata.FromIncomingContext copies every key and value of the call, which was 2 % of the
// service's CPU under load, to read the one or two keys trace context has.
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (incomingCarrier) Set(string, string) {}
func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// parentContext returns ctx carrying the remote span the Check span should be a child of:
// Envoy's ext_authz client span from the gRPC metadata when Envoy traces the call, else the
// request's own trace context from the HTTP headers in the CheckRequest. Either way the span
// joins Envoy's trace.
func parentContext(ctx context.Context, h *authv3.AttributeContext_HttpRequest) context.Context {
	if c := traceContext.Extract(ctx, incomingCarrier{ctx}); trace.SpanContextFromContext(c).IsValid() {
		return c
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
