package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

const testMesh = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: portcullis.local}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: https://idp.test
  audiences: [backend]
  jwks: {inline: '%JWKS%'}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
  - name: frontend-reads
    from: {principals: ["spiffe://portcullis.local/ns/demo/sa/frontend"]}
    to: {methods: [GET], paths: ["/api/*"]}
  - name: admins
    from: {jwt: {providers: [idp], claims: [{claim: roles, contains: admin}]}}
    to: {paths: ["/admin/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny-debug, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
  - name: no-debug
    to: {paths: ["/debug/*"]}
`

// syncBuffer is a bytes.Buffer safe for the decision log's writer and the test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	srv      *Server
	pub      *source.Publisher
	spans    *tracetest.InMemoryExporter
	metrics  *sdkmetric.ManualReader
	dlog     *syncBuffer
	logs     *syncBuffer
	key      *authztest.Key
	stop     func()
	runErr   chan error
	mesh     string
	yamlJWKS string
}

// newFixture runs a server on the test mesh (with extra documents) and waits until it is ready;
// configure changes its options.
func newFixture(t *testing.T, extra string, configure ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{
		pub: &source.Publisher{}, spans: tracetest.NewInMemoryExporter(), metrics: sdkmetric.NewManualReader(),
		dlog: &syncBuffer{}, logs: &syncBuffer{}, key: authztest.NewKey(t, "ES256", "k1"), runErr: make(chan error, 1),
	}
	f.yamlJWKS = authztest.JWKS(f.key)
	f.mesh = strings.Replace(testMesh, "%JWKS%", f.yamlJWKS, 1) + extra
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.metrics))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	opts := Options{
		Logger:         slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TracerProvider: tp, Meter: mp.Meter("test"), Source: f.pub, DecisionLog: f.dlog,
	}
	for _, c := range configure {
		c(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	f.publish(t, f.mesh)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { f.runErr <- srv.Run(ctx) }()
	f.stop = cancel
	t.Cleanup(func() {
		cancel()
		if err := <-f.runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, "ready", func() bool { return srv.Ready() == nil })
	return f
}

func (f *fixture) publish(t *testing.T, yaml string) *model.Mesh {
	t.Helper()
	docs, ps := source.Decode("mesh.yaml", []byte(yaml))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	m, ps := model.Build(docs)
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	f.pub.Publish(m)
	return m
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// records returns the decision log so far.
func (f *fixture) records(t *testing.T) []Record {
	t.Helper()
	f.srv.dlog.Flush()
	var out []Record
	for _, line := range strings.Split(strings.TrimSpace(f.dlog.String()), "\n") {
		if line == "" {
			continue
		}
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decision log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func (f *fixture) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	c := authztest.Claims("https://idp.test", "alice", "backend")
	for k, v := range claims {
		c[k] = v
	}
	return f.key.Sign(t, c, nil)
}

// fixtureRequest loads an Envoy-shaped CheckRequest from testdata.
func fixtureRequest(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(data, &req); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &req
}

// request is the standard fixture changed by mutate.
func request(t testing.TB, mutate func(r *authv3.CheckRequest)) *authv3.CheckRequest {
	t.Helper()
	r := proto.Clone(fixtureRequest(t, "check_request.json")).(*authv3.CheckRequest)
	if mutate != nil {
		mutate(r)
	}
	return r
}

func setPath(p string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Path = p }
}

func setHeader(k, v string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Headers[k] = v }
}

func all(fs ...func(*authv3.CheckRequest)) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		for _, f := range fs {
			f(r)
		}
	}
}

func httpCode(resp *authv3.CheckResponse) int {
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

func responseHeader(resp *authv3.CheckResponse, name string) string {
	hs := resp.GetDeniedResponse().GetHeaders()
	if ok := resp.GetOkResponse(); ok != nil {
		hs = ok.GetResponseHeadersToAdd()
	}
	for _, h := range hs {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

func decisionCode(resp *authv3.CheckResponse) policy.Code {
	return policy.Code(resp.GetDynamicMetadata().GetFields()["code"].GetStringValue())
}

func describe(resp *authv3.CheckResponse) string {
	b, err := protojson.Marshal(resp)
	if err != nil {
		return fmt.Sprint(resp)
	}
	return string(b)
}
