package tracetest

import (
	"strings"
	"testing"
)

// Span is a span as a test sees it, from either collector.
type Span struct {
	TraceID, SpanID, ParentID string
	Name, Service             string
	Attrs                     map[string]string
}

// Collector receives spans over OTLP gRPC at Endpoint and returns what it has.
type Collector interface {
	Endpoint() string
	Spans(t testing.TB) []Span
}

// Start returns Jaeger when it is built, else an in-process receiver.
func Start(t testing.TB) Collector {
	t.Helper()
	if j := StartJaeger(t); j != nil {
		return j
	}
	return StartReceiver(t)
}

// Trace returns the spans of one trace.
func Trace(spans []Span, traceID string) []Span {
	var out []Span
	for _, s := range spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// Find returns the first span whose name contains name (and service, when given).
func Find(spans []Span, service, name string) (Span, bool) {
	for _, s := range spans {
		if strings.Contains(s.Name, name) && (service == "" || s.Service == service) {
			return s, true
		}
	}
	return Span{}, false
}
