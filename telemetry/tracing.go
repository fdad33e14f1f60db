package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"
)

// TracingOptions configure span export.
type TracingOptions struct {
	// Endpoint is the OTLP gRPC collector, host:port. Empty turns tracing off (a no-op provider).
	Endpoint string
	// TLS sends spans over TLS, verified with CAFile (or the system roots; a CAFile implies
	// TLS). Otherwise plaintext, as the proxies export theirs and as the Jaeger deploy/ ships
	// listens: whether the collector speaks TLS is configuration, not something an address tells.
	TLS    bool
	CAFile string
	// Headers are sent with every export (e.g. an API key).
	Headers map[string]string
	// SamplingRatio is the share of new traces sampled, 0 to 1; requests that arrive with a
	// sampled parent follow it.
	SamplingRatio float64
	// Resource attributes.
	ServiceName, ServiceVersion, InstanceID string
}

// ExportTLS is how a process reaches its trace collector: plaintext unless TLS or a CA file is
// configured (--otlp-tls, --otlp-ca-file).
type ExportTLS struct {
	TLS    bool
	CAFile string
}

// Register adds the --otlp-tls and --otlp-ca-file flags.
func (e *ExportTLS) Register(fl *pflag.FlagSet) {
	fl.BoolVar(&e.TLS, "otlp-tls", false, "export spans over TLS, verified with the system roots or --otlp-ca-file (default: plaintext, like the proxies and the Jaeger of deploy/)")
	fl.StringVar(&e.CAFile, "otlp-ca-file", "", "PEM file of the CA that signs the trace collector's certificate (implies --otlp-tls)")
}

// Tracing is the process's tracer provider and propagator. There is no global provider: pass
// Provider to whatever creates spans.
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
}

// exportTimeout bounds one export, so a dead collector costs at most this long per batch and
// never blocks requests (spans are exported in the background, and dropped when the queue is
// full).
const exportTimeout = 2 * time.Second

// SetupTracing builds the tracer provider: OTLP gRPC export in batches, parent-based ratio
// sampling, W3C trace context and baggage (B3 accepted on input too), resource attributes.
// Spans that could not be exported are counted in portcullis_trace_spans_dropped_total.
func SetupTracing(ctx context.Context, o TracingOptions, meter metric.Meter) (*Tracing, error) {
	t := &Tracing{Propagator: Propagator(), shutdown: func(context.Context) error { return nil }}
	if o.Endpoint == "" {
		t.Provider = noop.NewTracerProvider()
		return t, nil
	}
	if o.SamplingRatio < 0 || o.SamplingRatio > 1 {
		return nil, fmt.Errorf("telemetry: sampling ratio %v: want 0 to 1", o.SamplingRatio)
	}
	opts := []otlptracegrpc.Option{
		otlptracegrpc.WithEndpoint(o.Endpoint),
		otlptracegrpc.WithTimeout(exportTimeout),
		// Failed batches are dropped and counted, not retried for minutes while the queue fills.
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
	}
	if len(o.Headers) > 0 {
		opts = append(opts, otlptracegrpc.WithHeaders(o.Headers))
	}
	if !o.TLS && o.CAFile == "" {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("telemetry: collector CA: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("telemetry: collector CA %s: no certificates", o.CAFile)
			}
		}
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(cfg)))
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	counted, err := newCountingExporter(exp, meter)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(o.ServiceName),
		semconv.ServiceVersion(o.ServiceVersion),
		semconv.ServiceInstanceID(o.InstanceID),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		// Batches of up to 2,048 spans (one export call per ~700 checks at full sampling, not
		// per 170), a queue of 8,192 that rides out a slow export at 5,000 checks/s without
		// dropping, and spans at the collector within a second rather than five.
		sdktrace.WithBatcher(counted, sdktrace.WithMaxExportBatchSize(2048), sdktrace.WithMaxQueueSize(8192),
			sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SamplingRatio))),
	)
	t.Provider, t.shutdown = tp, tp.Shutdown
	return t, nil
}

// Shutdown flushes the spans still queued and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("telemetry: flushing spans: %w", err)
	}
	return nil
}

// Propagator reads and writes W3C trace context and baggage, and also reads B3 (single and
// multi header) so traces started by B3-speaking clients continue.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		extractOnly{b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader))},
		propagation.TraceContext{},
		propagation.Baggage{},
	)
}

// extractOnly reads a format without writing it: Portcullis emits W3C only.
type extractOnly struct{ propagation.TextMapPropagator }

func (extractOnly) Inject(context.Context, propagation.TextMapCarrier) {}

// countingExporter counts the spans of batches that could not be exported.
type countingExporter struct {
	sdktrace.SpanExporter
	dropped metric.Int64Counter
}

func newCountingExporter(e sdktrace.SpanExporter, meter metric.Meter) (sdktrace.SpanExporter, error) {
	if meter == nil {
		return e, nil
	}
	c, err := meter.Int64Counter("portcullis_trace_spans_dropped",
		metric.WithDescription("Spans that could not be exported (collector down or slow); requests are never held up by tracing."))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return &countingExporter{SpanExporter: e, dropped: c}, nil
}

func (c *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := c.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		c.dropped.Add(ctx, int64(len(spans)))
	}
	return err
}

// InstanceID names this process for service.instance.id: host and pid.
func InstanceID() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
