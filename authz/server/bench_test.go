package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// benchSetup runs a server on the 50-rule benchmark mesh and returns it with an Envoy-shaped
// request that only the last rule allows, carrying a signed token and, as the translator
// configures Envoy (include_peer_certificate), the source's certificate.
func benchSetup(b *testing.B) (*Server, *authv3.CheckRequest, *authztest.Key) {
	b.Helper()
	key := authztest.NewKey(b, "ES256", "k1")
	docs, ps := source.Decode("bench.yaml", []byte(authztest.BenchMesh(authztest.JWKS(key), false)))
	if len(ps) > 0 {
		b.Fatal(ps)
	}
	m, ps := model.Build(docs)
	if len(ps) > 0 {
		b.Fatal(ps)
	}
	pub := &source.Publisher{}
	pub.Publish(m)
	srv, err := New(Options{Logger: discardLogger(), TracerProvider: noop.NewTracerProvider(), Source: pub, DecisionLog: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }() // Run returns nil when cancelled
	b.Cleanup(func() { cancel(); <-done })
	for srv.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	source := testca.New(b, "portcullis.local").SVID(b, authztest.BenchPrincipal)
	req := request(b, func(r *authv3.CheckRequest) {
		h := r.Attributes.Request.Http
		r.Attributes.Source.Principal = authztest.BenchPrincipal
		r.Attributes.Source.Certificate = url.QueryEscape(string(source.CertPEM))
		h.Method, h.Path = authztest.BenchMethod, authztest.BenchPath
		h.Headers["x-tenant"] = authztest.BenchTenant
		h.Headers["authorization"] = "Bearer " + key.Sign(b, authztest.BenchClaims(), nil)
		// As the translator configures Envoy (encode_raw_headers): one entry per header line.
		withHeaderLines()(r)
	})
	resp, err := srv.Check(context.Background(), req)
	if err != nil || resp.GetOkResponse() == nil || resp.GetDynamicMetadata().GetFields()["rule"].GetStringValue() != "r49" {
		b.Fatalf("benchmark request not allowed by r49: %v %s", err, describe(resp))
	}
	return srv, req, key
}

// BenchmarkCheckInProcess is a whole Check without the network: attributes from the
// CheckRequest, the token from the verified-token cache, the 50-rule decision, the response, the
// decision log record (to io.Discard), metrics (no-op meter) and spans (no-op tracer).
func BenchmarkCheckInProcess(b *testing.B) {
	srv, req, _ := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := srv.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecisionWithCachedJWT is the decision alone: the token taken from the request's
// headers and found in the verified-token cache (SHA-256 of the token, LRU lookup), then the
// 50-rule policy evaluated on typed attributes.
func BenchmarkDecisionWithCachedJWT(b *testing.B) {
	srv, req, _ := benchSetup(b)
	a, err := Attributes(req, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	e := srv.engine.Load()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r := srv.verifier.Verify(ctx, a.Destination.Namespace, a.Request.Headers)
		if !r.CacheHit {
			b.Fatal("token not cached")
		}
		a.JWT = r.Token
		if d := e.Decide(ctx, a); !d.Allow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkCheckInProcessTraced is BenchmarkCheckInProcess with every check sampled and its
// three spans recorded (into an exporter that drops them): the cost of tracing.
func BenchmarkCheckInProcessTraced(b *testing.B) {
	srv, req, _ := benchSetup(b)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	srv.tracer = tp.Tracer("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := srv.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckInProcessExported is BenchmarkCheckInProcessTraced with the spans exported as
// the service exports them (telemetry.SetupTracing: batches over OTLP/gRPC) to a collector in
// this process that discards them. Run with -cpu 1, the export's work shares the one P with the
// checks, so ns/op is what a check costs with its spans recorded, encoded and sent.
func BenchmarkCheckInProcessExported(b *testing.B) {
	srv, req, _ := benchSetup(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(g, discardCollector{})
	go func() { _ = g.Serve(ln) }()
	b.Cleanup(g.Stop)
	tr, err := telemetry.SetupTracing(context.Background(), telemetry.TracingOptions{Endpoint: ln.Addr().String(), SamplingRatio: 1, ServiceName: "bench"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv.tracer = tr.Provider.Tracer("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := srv.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	if err := tr.Shutdown(context.Background()); err != nil { // the last batch, in the measured time
		b.Fatal(err)
	}
}

type discardCollector struct {
	collectortrace.UnimplementedTraceServiceServer
}

func (discardCollector) Export(context.Context, *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// BenchmarkOPAPlain is the same policy evaluated the way a plain OPA ext_authz server does
// (opa-envoy-plugin): the CheckRequest converted to JSON and decoded into a map as the input,
// a prepared query for data.envoy.authz.allow over it, and the token verified in the policy with
// io.jwt.decode_verify (OPA's default: no cache across queries).
func BenchmarkOPAPlain(b *testing.B) {
	_, req, key := benchSetup(b)
	pq, err := rego.New(rego.Query("data.envoy.authz.allow"), rego.Module("policy.rego", authztest.BenchOPAPolicy(authztest.JWKS(key)))).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	eval := func() bool {
		js, err := protojson.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		var input map[string]any
		if err := json.Unmarshal(js, &input); err != nil {
			b.Fatal(err)
		}
		rs, err := pq.Eval(context.Background(), rego.EvalInput(input))
		if err != nil {
			b.Fatal(err)
		}
		return rs.Allowed()
	}
	if !eval() {
		b.Fatal("OPA does not allow the benchmark request")
	}
	b.ReportAllocs()
	for b.Loop() {
		eval()
	}
}

// BenchmarkCheckGRPC is Check over gRPC on loopback with SPIFFE mTLS (2 connections, as Envoy
// with 2 workers keeps), from parallel callers.
func BenchmarkCheckGRPC(b *testing.B) {
	srv, req, _ := benchSetup(b)
	checkOverGRPC(b, srv, req)
}

// BenchmarkCheckGRPCHeaders is BenchmarkCheckGRPC with the header lines a browser sends (the
// usual request headers and a 1.5 KB cookie: 14 lines beside the token and the tenant), against
// the same check with only the lines allowed_headers lets through (issue 16 item 4): what the
// service spends on headers no decision reads.
func BenchmarkCheckGRPCHeaders(b *testing.B) {
	srv, req, _ := benchSetup(b)
	browser := proto.Clone(req).(*authv3.CheckRequest)
	hm := browser.Attributes.Request.Http.HeaderMap
	for _, kv := range [][2]string{
		{":authority", "shop.example.com"}, {":method", authztest.BenchMethod}, {":path", authztest.BenchPath}, {":scheme", "https"},
		{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
		{"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"},
		{"accept-language", "en-GB,en;q=0.9,de;q=0.8"}, {"accept-encoding", "gzip, deflate, br, zstd"},
		{"cookie", strings.Repeat("session-fragment=0123456789abcdef0123456789abcdef; ", 30)},
		{"referer", "https://shop.example.com/catalog?page=2"}, {"sec-fetch-site", "same-origin"},
		{"sec-fetch-mode", "navigate"}, {"x-request-id", "2c6a4f0e-8e1b-4c55-9b8e-0d0f3c1c2a77"},
		{"x-forwarded-proto", "https"},
	} {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
	}
	b.Run("browser", func(b *testing.B) { checkOverGRPC(b, srv, browser) })
	b.Run("allowed", func(b *testing.B) { checkOverGRPC(b, srv, req) })
}

// checkOverGRPC sends req to srv over gRPC and SPIFFE mTLS, from 2 connections with 8 callers
// per core, as proxies call it.
func checkOverGRPC(b *testing.B, srv *Server, req *authv3.CheckRequest) {
	ca := testca.New(b, "portcullis.local")
	serverID := "spiffe://portcullis.local/ns/portcullis/sa/authz"
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	g := grpc.NewServer(append(GRPCServerOptions(), grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(
		ca.SVID(b, serverID).X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td)))))...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }() // returns when stopped
	b.Cleanup(g.Stop)
	proxy := ca.SVID(b, "spiffe://portcullis.local/ns/demo/sa/backend")
	var clients []authv3.AuthorizationClient
	for range 2 {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.MTLSClientConfig(proxy.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td)))))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		clients = append(clients, authv3.NewAuthorizationClient(conn))
	}
	ctx := context.Background()
	if _, err := clients[0].Check(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		c := clients[n.Add(1)%int64(len(clients))]
		for pb.Next() {
			if _, err := c.Check(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkParentContext is reading a check's trace context when neither the gRPC metadata nor
// the request carries one (Envoy not tracing): the metadata as gRPC passes it to a handler, the
// request's header lines as the translator's Envoy sends them.
func BenchmarkParentContext(b *testing.B) {
	_, req, _ := benchSetup(b)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		":authority", "127.0.0.1:15020", "content-type", "application/grpc", "user-agent", "envoy/1.40.0",
		"te", "trailers", "grpc-accept-encoding", "identity,deflate,gzip", "grpc-timeout", "250m",
		"x-envoy-internal", "true", "x-request-id", "b2c2a9b4-1d3e-4b8e-9a55-2f5b0a3d9e11"))
	h := req.GetAttributes().GetRequest().GetHttp()
	b.ReportAllocs()
	for b.Loop() {
		if trace.SpanContextFromContext(parentContext(ctx, h)).IsValid() {
			b.Fatal("a trace context where there is none")
		}
	}
}
