package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/redistest"
	"github.com/portcullis/portcullis/xds/model"
)

type fixture struct {
	svc     *Service
	spans   *tracetest.InMemoryExporter
	metrics *sdkmetric.ManualReader
}

func newService(t *testing.T, r Redis) *fixture { return newServiceWith(t, Options{Redis: r}) }

// newServiceWith returns a service with opts, its logger, tracer provider and meter the fixture's.
func newServiceWith(t testing.TB, opts Options) *fixture {
	t.Helper()
	f := &fixture{spans: tracetest.NewInMemoryExporter(), metrics: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.metrics))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	opts.Logger, opts.TracerProvider, opts.Meter = slog.New(slog.DiscardHandler), tp, mp.Meter("test")
	svc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	f.svc = svc
	return f
}

// descriptor is a Global limit's descriptor as the translator's actions produce it.
func descriptor(limit, bucket string, kv ...string) *commonrlv3.RateLimitDescriptor {
	d := &commonrlv3.RateLimitDescriptor{Entries: []*commonrlv3.RateLimitDescriptor_Entry{
		{Key: model.RateLimitEntryLimit, Value: limit}, {Key: model.RateLimitEntryBucket, Value: bucket},
	}}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &commonrlv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func call(t *testing.T, f *fixture, domain string, ds ...*commonrlv3.RateLimitDescriptor) (*rlsv3.RateLimitResponse, error) {
	t.Helper()
	return f.svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, Descriptors: ds})
}

func mustCall(t *testing.T, f *fixture, domain string, ds ...*commonrlv3.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := call(t, f, domain, ds...)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestBuckets: a bucket allows its tokens and then refuses, one bucket per distinct value and per
// service; a request over one of its limits takes no token from the others; a bucket refills.
func TestBuckets(t *testing.T) {
	r := redistest.Start(t, "")
	f := newService(t, Redis{Addr: r.Addr})
	alice := descriptor("per-user", "3/3/3600000", "caller", `jwt:"https://idp.test"alice`)
	var seen []string
	for range 4 {
		seen = append(seen, mustCall(t, f, "shop/api", alice).GetOverallCode().String())
	}
	if got := strings.Join(seen, " "); got != "OK OK OK OVER_LIMIT" {
		t.Fatalf("alice: %s, want three OK then OVER_LIMIT", got)
	}
	bob := descriptor("per-user", "3/3/3600000", "caller", `jwt:"https://idp.test"bob`)
	if c := mustCall(t, f, "shop/api", bob).GetOverallCode(); c != rlsv3.RateLimitResponse_OK {
		t.Errorf("bob shares alice's bucket: %s", c)
	}
	if c := mustCall(t, f, "shop/web", alice).GetOverallCode(); c != rlsv3.RateLimitResponse_OK {
		t.Errorf("another service shares the bucket: %s", c)
	}

	// All or nothing: carol's request is over the shared limit, so her own bucket keeps its token.
	shared := descriptor("shared", "1/1/3600000")
	carol := descriptor("per-user", "5/5/3600000", "caller", "ip:203.0.113.9")
	first := mustCall(t, f, "shop/orders", shared, carol)
	second := mustCall(t, f, "shop/orders", shared, carol)
	if first.GetOverallCode() != rlsv3.RateLimitResponse_OK || second.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("codes %s, %s; want OK then OVER_LIMIT", first.GetOverallCode(), second.GetOverallCode())
	}
	st := second.GetStatuses()
	if st[0].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT || st[1].GetCode() != rlsv3.RateLimitResponse_OK || st[1].GetLimitRemaining() != 4 {
		t.Errorf("statuses %v; want shared over, carol's bucket untouched with 4 left", st)
	}
	if h := second.GetResponseHeadersToAdd(); len(h) != 1 || h[0].GetKey() != "x-ratelimit-service" || h[0].GetValue() != "orders" {
		t.Errorf("headers %v, want x-ratelimit-service: orders", h)
	}
	if l := st[1].GetCurrentLimit(); l.GetRequestsPerUnit() != 5 || l.GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR || l.GetUnitMultiplier().GetValue() != 1 {
		t.Errorf("current limit %v, want 5 per hour", l)
	}

	// Refill: two tokens per 100 ms.
	fast := descriptor("fast", "2/2/100")
	for range 2 {
		mustCall(t, f, "shop/api", fast)
	}
	if c := mustCall(t, f, "shop/api", fast).GetOverallCode(); c != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("third call %s, want OVER_LIMIT", c)
	}
	proctest.Eventually(t, 5*time.Second, func() error {
		if c := mustCall(t, f, "shop/api", fast).GetOverallCode(); c != rlsv3.RateLimitResponse_OK {
			return fmt.Errorf("still %s", c)
		}
		return nil
	}, "the bucket refilled")

	// A bucket's key expires once it would be full again: Redis keeps no idle buckets.
	keys, err := r.Do("DBSIZE")
	if err != nil || keys == ":0" {
		t.Fatalf("DBSIZE %s %v: want the buckets in Redis", keys, err)
	}
	if ttl, err := r.Do("PTTL", f.svc.keyOf(t, "shop/api", fast)); err != nil || !strings.HasPrefix(ttl, ":") || ttl == ":-1" {
		t.Errorf("PTTL of a bucket %q %v, want an expiry", ttl, err)
	}
}

// keyOf returns the Redis key of a descriptor.
func (s *Service) keyOf(t *testing.T, domain string, d *commonrlv3.RateLimitDescriptor) string {
	t.Helper()
	b, err := parse(&rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*commonrlv3.RateLimitDescriptor{d}})
	if err != nil {
		t.Fatal(err)
	}
	return b[0].key
}

// TestOneRoundTrip: every call is one EVALSHA, whatever the number of descriptors, and no EVAL
// (the script is loaded when a connection opens, so no call meets NOSCRIPT).
func TestOneRoundTrip(t *testing.T) {
	r := redistest.Start(t, "")
	f := newService(t, Redis{Addr: r.Addr})
	const n = 20
	for i := range n {
		mustCall(t, f, "shop/api", descriptor("a", "100/100/1000"), descriptor("b", "100/100/1000", "caller", "ip:10.0.0."+string(rune('0'+i%10))))
	}
	evalsha, err := r.Calls("evalsha")
	if err != nil {
		t.Fatal(err)
	}
	eval, err := r.Calls("eval")
	if err != nil {
		t.Fatal(err)
	}
	if evalsha != n || eval != 0 {
		t.Errorf("%d calls ran %d EVALSHA and %d EVAL; want one EVALSHA each", n, evalsha, eval)
	}
}

// TestRedisDown: without Redis a call fails UNAVAILABLE (Envoy applies the failure mode), counted
// as an error, reported by portcullis_ratelimit_redis_up and traced as an error; once Redis is
// back calls succeed again.
func TestRedisDown(t *testing.T) {
	r := redistest.Start(t, "")
	f := newService(t, Redis{Addr: r.Addr})
	d := descriptor("all", "100/100/1000")
	mustCall(t, f, "shop/api", d)
	if up := f.redisUp(t); up != 1 {
		t.Fatalf("redis_up %d, want 1", up)
	}
	r.Stop()
	_, err := call(t, f, "shop/api", d)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Redis unavailable") {
		t.Fatalf("with Redis down: %v, want UNAVAILABLE", err)
	}
	if up := f.redisUp(t); up != 0 {
		t.Errorf("redis_up %d, want 0", up)
	}
	if n := f.checks(t, "shop/api", "error"); n != 1 {
		t.Errorf("%d calls counted as errors, want 1", n)
	}
	spans := f.spans.GetSpans()
	last := spans[len(spans)-1]
	if last.Name != "ratelimit.ShouldRateLimit" || last.Status.Code != otelcodes.Error || !hasAttr(last.Attributes, "ratelimit.redis_unavailable") {
		t.Errorf("span %s status %v attributes %v; want an error span marked redis_unavailable", last.Name, last.Status, last.Attributes)
	}
	r.Start()
	proctest.Eventually(t, 10*time.Second, func() error { _, err := call(t, f, "shop/api", d); return err }, "calls succeed once Redis is back")
	if up := f.redisUp(t); up != 1 {
		t.Errorf("redis_up %d after Redis came back, want 1", up)
	}
	if n := f.checks(t, "shop/api", "ok"); n < 2 {
		t.Errorf("%d calls counted ok, want at least 2", n)
	}
}

// TestNoRedis: a service started without Redis answers UNAVAILABLE, saying why.
func TestNoRedis(t *testing.T) {
	f := newService(t, Redis{})
	_, err := call(t, f, "shop/api", descriptor("all", "1/1/1000"))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "--ratelimit-redis") {
		t.Fatalf("%v, want UNAVAILABLE naming --ratelimit-redis", err)
	}
}

// TestRedisPassword: a Redis that requires a password is reached with the password file, and
// refuses the service without it.
func TestRedisPassword(t *testing.T) {
	r := redistest.Start(t, "s3cret-for-the-test")
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte(r.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := descriptor("all", "1/1/1000")
	if _, err := call(t, newService(t, Redis{Addr: r.Addr, PasswordFile: file}), "shop/api", d); err != nil {
		t.Errorf("with the password: %v", err)
	}
	if _, err := call(t, newService(t, Redis{Addr: r.Addr}), "shop/api", d); status.Code(err) != codes.Unavailable {
		t.Errorf("without the password: %v, want UNAVAILABLE", err)
	}
	if _, err := New(Options{Logger: slog.New(slog.DiscardHandler), TracerProvider: sdktrace.NewTracerProvider(), Meter: sdkmetric.NewMeterProvider().Meter("x"),
		Redis: Redis{Addr: r.Addr, PasswordFile: filepath.Join(t.TempDir(), "missing")}}); err == nil || !strings.Contains(err.Error(), "Redis password") {
		t.Errorf("a missing password file: %v, want an error", err)
	}
}

// TestMalformedRequests: descriptors the translator does not write are refused, never guessed at.
func TestMalformedRequests(t *testing.T) {
	f := newService(t, Redis{Addr: "127.0.0.1:1"}) // never reached
	for name, req := range map[string]*rlsv3.RateLimitRequest{
		"no domain":       {Descriptors: []*commonrlv3.RateLimitDescriptor{descriptor("a", "1/1/1000")}},
		"bare domain":     {Domain: "api", Descriptors: []*commonrlv3.RateLimitDescriptor{descriptor("a", "1/1/1000")}},
		"no bucket":       {Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{{Entries: []*commonrlv3.RateLimitDescriptor_Entry{{Key: "limit", Value: "a"}}}}},
		"entries swapped": {Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{{Entries: []*commonrlv3.RateLimitDescriptor_Entry{{Key: "bucket", Value: "1/1/1000"}, {Key: "limit", Value: "a"}}}}},
		"bad bucket":      {Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{descriptor("a", "5/9/1000")}},
		"zero interval":   {Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{descriptor("a", "5/5/0")}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := f.svc.ShouldRateLimit(context.Background(), req); status.Code(err) != codes.InvalidArgument {
				t.Errorf("%v, want INVALID_ARGUMENT", err)
			}
		})
	}
}

// TestTraceParent: the span is a child of Envoy's, whose trace context comes in the gRPC metadata.
func TestTraceParent(t *testing.T) {
	f := newService(t, Redis{})
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", "00-"+traceID+"-"+parentID+"-01"))
	_, _ = f.svc.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "shop/api", Descriptors: []*commonrlv3.RateLimitDescriptor{descriptor("a", "1/1/1000")}})
	spans := f.spans.GetSpans()
	if len(spans) != 1 || spans[0].SpanContext.TraceID().String() != traceID || spans[0].Parent.SpanID().String() != parentID {
		t.Fatalf("spans %v; want one child of Envoy's span", spans)
	}
}

func hasAttr(attrs []attribute.KeyValue, key string) bool {
	for _, a := range attrs {
		if string(a.Key) == key {
			return true
		}
	}
	return false
}

func (f *fixture) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

func (f *fixture) redisUp(t *testing.T) int64 {
	t.Helper()
	for _, sm := range f.collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "portcullis_ratelimit_redis_up" && len(g.DataPoints) == 1 {
				return g.DataPoints[0].Value
			}
		}
	}
	return -1
}

func (f *fixture) checks(t *testing.T, service, result string) int64 {
	t.Helper()
	for _, sm := range f.collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			s, ok := m.Data.(metricdata.Sum[int64])
			if !ok || m.Name != "portcullis_ratelimit_checks" {
				continue
			}
			for _, dp := range s.DataPoints {
				sv, _ := dp.Attributes.Value("service")
				rv, _ := dp.Attributes.Value("result")
				if sv.AsString() == service && rv.AsString() == result {
					return dp.Value
				}
			}
		}
	}
	return 0
}
