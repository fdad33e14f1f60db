package ratelimit

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

//go:embed bucket.lua
var bucketScript string

// Limits of one call: Envoy sends one descriptor per limit a request matches, and a service has
// at most 64 limits per policy.
const (
	maxDescriptors = 256
	maxEntries     = 16
)

// redisTimeout bounds one Redis round trip when the caller's deadline does not come sooner:
// Envoy's own timeout for the call is the same.
const redisTimeout = 250 * time.Millisecond

// keyPrefix starts every bucket key; the service in braces is a Redis Cluster hash tag, so the
// buckets of one request (one service) are in one slot, as one script needs.
const keyPrefix = "portcullis:rl:"

// Redis is where the buckets live: --ratelimit-redis and --ratelimit-redis-password-file.
type Redis struct {
	// Addr is host:port; empty: no Redis, and every call fails (the limits' failure mode applies).
	Addr string
	// PasswordFile holds the password (Redis AUTH), for a Redis that requires one.
	PasswordFile string
	// Password is the password itself when it comes from elsewhere than a file (on Kubernetes,
	// the Secret the control plane shares with deploy/'s Redis); PasswordFile wins when both are
	// set. Never logged.
	Password string
}

// Register adds the Redis flags.
func (r *Redis) Register(fl *pflag.FlagSet) {
	fl.StringVar(&r.Addr, "ratelimit-redis", "", "host:port of the Redis that holds Global rate limits' buckets (none: Global limits follow their failure mode)")
	fl.StringVar(&r.PasswordFile, "ratelimit-redis-password-file", "", "file holding the password of --ratelimit-redis (Redis AUTH)")
}

// Options configure a Service. Logger, TracerProvider and Meter are required.
type Options struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Meter          metric.Meter
	Redis          Redis
	// Authorize refuses a caller that may not call ShouldRateLimit with the gRPC error to answer
	// (authz/server's Callers.Authorize: proxies only, as for Check). Nil leaves who may call to
	// the transport (tests calling the service directly).
	Authorize func(context.Context) error
}

// Service serves ShouldRateLimit. Create it with New, Register it on the authorization service's
// gRPC server, Close it when that stops.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer

	log       *slog.Logger
	tracer    trace.Tracer
	authorize func(context.Context) error
	client    *redis.Client // nil without Redis
	script    *redis.Script
	checks    metric.Int64Counter
	seconds   metric.Float64Histogram
	redisUp   atomic.Int64 // 1 after a successful round trip, 0 after a failed one, -1 before any
}

// New returns a service; it connects to Redis on its first call.
func New(opts Options) (*Service, error) {
	switch {
	case opts.Logger == nil:
		return nil, errors.New("ratelimit: a logger is required")
	case opts.TracerProvider == nil:
		return nil, errors.New("ratelimit: a tracer provider is required")
	case opts.Meter == nil:
		return nil, errors.New("ratelimit: a meter is required")
	}
	s := &Service{
		log: opts.Logger, script: redis.NewScript(bucketScript), authorize: opts.Authorize,
		tracer: opts.TracerProvider.Tracer("github.com/portcullis/portcullis/authz/ratelimit"),
	}
	s.redisUp.Store(-1)
	if opts.Redis.Addr != "" {
		password := opts.Redis.Password
		if f := opts.Redis.PasswordFile; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("ratelimit: Redis password: %w", err)
			}
			password = strings.TrimSpace(string(b))
		}
		s.client = redis.NewClient(&redis.Options{
			Addr: opts.Redis.Addr, Password: password,
			DialTimeout: redisTimeout, ReadTimeout: redisTimeout, WriteTimeout: redisTimeout,
			ContextTimeoutEnabled: true,
			// A script that ran but whose answer was lost must not run again: it took tokens.
			MaxRetries: -1,
			// Redis down must cost a refused connection, not a request's whole timeout spent
			// redialling: the failure mode applies at once (fail open adds no latency).
			DialerRetries:   1,
			DisableIdentity: true,
			// Every connection has the script loaded (a restarted Redis has forgotten it), so a
			// request costs one EVALSHA and never a NOSCRIPT answer and a second trip.
			OnConnect: func(ctx context.Context, cn *redis.Conn) error { return cn.ScriptLoad(ctx, bucketScript).Err() },
		})
	}
	if err := s.registerMetrics(opts.Meter); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) registerMetrics(m metric.Meter) error {
	var err error
	if s.checks, err = m.Int64Counter("portcullis_ratelimit_checks",
		metric.WithDescription("Global rate limit calls by service and result: ok, over_limit, error (Redis unavailable: the limits' failure mode applied), refused (the caller is not a proxy; service empty)."),
	); err != nil {
		return err
	}
	if s.seconds, err = m.Float64Histogram("portcullis_ratelimit_check_duration_seconds",
		metric.WithDescription("Time to answer a global rate limit call, its Redis round trip included."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
	); err != nil {
		return err
	}
	up, err := m.Int64ObservableGauge("portcullis_ratelimit_redis_up",
		metric.WithDescription("1 when the last Redis round trip of the global rate limit service succeeded, 0 when it failed (absent before the first)."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if v := s.redisUp.Load(); v >= 0 {
			o.ObserveInt64(up, v)
		}
		return nil
	}, up)
	return err
}

// Register registers the rate limit service on a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { rlsv3.RegisterRateLimitServiceServer(r, s) }

// Close closes the Redis connections.
func (s *Service) Close() error {
	if s.client == nil {
		return nil
	}
	return s.client.Close()
}

// bucket is one descriptor of a call: its Redis key and its limit.
type bucket struct {
	key    string
	limit  string
	bucket model.TokenBucket
}

// ShouldRateLimit decides one request against the buckets of its descriptors, in one Redis round
// trip. It answers UNAVAILABLE when Redis cannot (Envoy then applies the failure mode),
// INVALID_ARGUMENT for descriptors the translator would not have written, and the Authorize
// error, before anything else, to a caller that is not a proxy.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if s.authorize != nil {
		if err := s.authorize(ctx); err != nil {
			s.checks.Add(ctx, 1, metric.WithAttributes(attribute.String("service", ""), attribute.String("result", "refused")))
			return nil, err
		}
	}
	start := time.Now()
	ctx, span := s.tracer.Start(parentContext(ctx), "ratelimit.ShouldRateLimit", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", "envoy.service.ratelimit.v3.RateLimitService"),
			attribute.String("rpc.method", "ShouldRateLimit")))
	defer span.End()
	service := req.GetDomain()
	result := "error"
	defer func() {
		attrs := metric.WithAttributes(attribute.String("service", service), attribute.String("result", result))
		s.checks.Add(ctx, 1, attrs)
		s.seconds.Record(ctx, time.Since(start).Seconds())
	}()
	buckets, err := parse(req)
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	span.SetAttributes(attribute.String("ratelimit.service", service), attribute.Int("ratelimit.descriptors", len(buckets)))
	if len(buckets) == 0 {
		result = "ok"
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
	}
	hits := req.GetHitsAddend()
	if hits == 0 {
		hits = 1
	}
	got, err := s.take(ctx, buckets, hits)
	if err != nil {
		if s.redisUp.Swap(0) != 0 {
			// Once per outage, not once per request: the metrics count every call.
			s.log.Warn("global rate limits: Redis unavailable; each limit's failure mode applies until it is back", "service", service, "err", err)
		}
		span.SetStatus(otelcodes.Error, err.Error())
		span.SetAttributes(attribute.Bool("ratelimit.redis_unavailable", true))
		return nil, status.Errorf(codes.Unavailable, "ratelimit: Redis unavailable: %v", err)
	}
	if s.redisUp.Swap(1) == 0 {
		s.log.Info("global rate limits: Redis is back")
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(buckets))}
	var over []string
	for i, b := range buckets {
		st := &rlsv3.RateLimitResponse_DescriptorStatus{
			Code:               rlsv3.RateLimitResponse_OK,
			CurrentLimit:       currentLimit(b),
			LimitRemaining:     uint32(max(got[i].remaining, 0)),
			DurationUntilReset: durationpb.New(got[i].nextFill),
		}
		if !got[i].had {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			over = append(over, b.limit)
		}
		resp.Statuses[i] = st
	}
	result = "ok"
	if len(over) > 0 {
		result = "over_limit"
		_, name, _ := strings.Cut(service, "/")
		resp.ResponseHeadersToAdd = []*corev3.HeaderValue{{Key: "x-ratelimit-service", Value: name}}
		span.SetAttributes(attribute.StringSlice("ratelimit.over_limit", over))
	}
	span.SetAttributes(attribute.String("ratelimit.code", resp.OverallCode.String()))
	return resp, nil
}

// parse reads a request's descriptors: each starts with the limit's name and bucket; the rest
// (path, header, principal, verified caller) picks the bucket, by a hash of them, so no client
// value is ever part of a Redis key as written.
func parse(req *rlsv3.RateLimitRequest) ([]bucket, error) {
	service := req.GetDomain()
	if ns, name, ok := strings.Cut(service, "/"); !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("ratelimit: domain %q is not namespace/service", service)
	}
	ds := req.GetDescriptors()
	if len(ds) > maxDescriptors {
		return nil, fmt.Errorf("ratelimit: %d descriptors, at most %d", len(ds), maxDescriptors)
	}
	out := make([]bucket, 0, len(ds))
	for i, d := range ds {
		es := d.GetEntries()
		if len(es) < 2 || len(es) > maxEntries || es[0].GetKey() != model.RateLimitEntryLimit || es[1].GetKey() != model.RateLimitEntryBucket || es[0].GetValue() == "" {
			return nil, fmt.Errorf("ratelimit: descriptor %d does not start with the %q and %q entries", i, model.RateLimitEntryLimit, model.RateLimitEntryBucket)
		}
		tb, err := model.ParseBucketEntry(es[1].GetValue())
		if err != nil {
			return nil, fmt.Errorf("ratelimit: descriptor %d: %w", i, err)
		}
		h := sha256.New()
		for _, e := range es[2:] {
			// Length-prefixed, so no two entry lists hash alike.
			fmt.Fprintf(h, "%d:%s%d:%s", len(e.GetKey()), e.GetKey(), len(e.GetValue()), e.GetValue())
		}
		key := keyPrefix + "{" + service + "}:" + es[0].GetValue() + ":" + hex.EncodeToString(h.Sum(nil)[:16])
		out = append(out, bucket{key: key, limit: es[0].GetValue(), bucket: tb})
	}
	return out, nil
}

// taken is one bucket's state after a call.
type taken struct {
	had       bool
	remaining int64
	nextFill  time.Duration
}

// take runs the bucket script: one round trip.
func (s *Service) take(ctx context.Context, buckets []bucket, hits uint32) ([]taken, error) {
	if s.client == nil {
		return nil, errors.New("no Redis is configured (--ratelimit-redis)")
	}
	keys := make([]string, len(buckets))
	args := make([]any, 1, 1+3*len(buckets))
	args[0] = hits
	for i, b := range buckets {
		keys[i] = b.key
		args = append(args, b.bucket.MaxTokens, b.bucket.TokensPerFill, b.bucket.FillInterval.Milliseconds())
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, redisTimeout)
		defer cancel()
	}
	vals, err := s.script.Run(ctx, s.client, keys, args...).Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(vals) != 3*len(buckets) {
		return nil, fmt.Errorf("the bucket script returned %d values for %d buckets", len(vals), len(buckets))
	}
	out := make([]taken, len(buckets))
	for i := range out {
		out[i] = taken{had: vals[3*i] == 1, remaining: vals[3*i+1], nextFill: time.Duration(vals[3*i+2]) * time.Millisecond}
	}
	return out, nil
}

// currentLimit describes a bucket in the units Envoy's x-ratelimit headers use: its fill rate
// over the largest unit its interval divides (1m: per minute; 90s: per 90 seconds). Nil for a
// sub-second interval that no whole number of requests per second describes.
func currentLimit(b bucket) *rlsv3.RateLimitResponse_RateLimit {
	iv := b.bucket.FillInterval.Duration
	per := b.bucket.TokensPerFill
	for _, u := range []struct {
		d    time.Duration
		unit rlsv3.RateLimitResponse_RateLimit_Unit
	}{{24 * time.Hour, rlsv3.RateLimitResponse_RateLimit_DAY}, {time.Hour, rlsv3.RateLimitResponse_RateLimit_HOUR},
		{time.Minute, rlsv3.RateLimitResponse_RateLimit_MINUTE}, {time.Second, rlsv3.RateLimitResponse_RateLimit_SECOND}} {
		if iv >= u.d && iv%u.d == 0 {
			return &rlsv3.RateLimitResponse_RateLimit{Name: b.limit, RequestsPerUnit: per, Unit: u.unit, UnitMultiplier: wrapperspb.UInt32(uint32(iv / u.d))}
		}
	}
	if time.Second%iv == 0 {
		return &rlsv3.RateLimitResponse_RateLimit{Name: b.limit, RequestsPerUnit: per * uint32(time.Second/iv), Unit: rlsv3.RateLimitResponse_RateLimit_SECOND}
	}
	return nil
}

// parentContext returns ctx carrying Envoy's span for the call, from the W3C trace context in the
// gRPC metadata (Envoy's gRPC client sends it when the request is traced).
func parentContext(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	carrier := propagation.MapCarrier{}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := md.Get(k); len(v) > 0 {
			carrier[k] = v[0]
		}
	}
	return propagation.TraceContext{}.Extract(ctx, carrier)
}
