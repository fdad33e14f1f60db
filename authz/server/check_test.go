package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/model"
)

func TestCheckDecisions(t *testing.T) {
	f := newFixture(t, "")
	admin := f.token(t, map[string]any{"roles": []string{"admin"}})
	user := f.token(t, map[string]any{"roles": []string{"user"}})
	expired := f.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
	cases := []struct {
		name   string
		mutate func(*authv3.CheckRequest)
		status int
		code   policy.Code
		policy string
		rule   string
	}{
		{"frontend reads", nil, 200, policy.CodeAllowed, "demo/backend-allow", "frontend-reads"},
		{"query is split off", setPath("/api/items?debug=1&x=%2F"), 200, policy.CodeAllowed, "demo/backend-allow", "frontend-reads"},
		{"DENY overrides", setPath("/debug/pprof"), 403, policy.CodeDenied, "demo/backend-deny-debug", "no-debug"},
		{"dot segments cannot dodge the DENY", setPath("/api/../debug/pprof"), 403, policy.CodeDenied, "demo/backend-deny-debug", "no-debug"},
		{"encoded dots cannot dodge the DENY", setPath("/api/%2e%2e/debug/pprof"), 403, policy.CodeDenied, "demo/backend-deny-debug", "no-debug"},
		{"double slashes cannot dodge the DENY", setPath("//debug//pprof"), 403, policy.CodeDenied, "demo/backend-deny-debug", "no-debug"},
		{"no ALLOW matches", setPath("/other"), 403, policy.CodeDeniedDefault, "", ""},
		{"admin path without a token", setPath("/admin/users"), 401, policy.CodeJWTRequired, "demo/backend-allow", "admins"},
		{"admin path with an admin token", all(setPath("/admin/users"), setHeader("authorization", "Bearer "+admin)), 200, policy.CodeAllowed, "demo/backend-allow", "admins"},
		{"admin path with a user token", all(setPath("/admin/users"), setHeader("authorization", "Bearer "+user)), 403, policy.CodeDeniedDefault, "", ""},
		{"expired token", all(setPath("/api/items"), setHeader("authorization", "Bearer "+expired)), 401, policy.CodeJWTInvalid, "", ""},
		{"garbage token", setHeader("authorization", "Bearer not.a.jwt"), 401, policy.CodeJWTInvalid, "", ""},
		{"oversized token", setHeader("authorization", "Bearer "+strings.Repeat("a", 17<<10)), 401, policy.CodeJWTInvalid, "", ""},
		{"unauthenticated caller", func(r *authv3.CheckRequest) { r.Attributes.Source.Principal = "" }, 403, policy.CodeDeniedDefault, "", ""},
		{"non-SPIFFE principal is unauthenticated", func(r *authv3.CheckRequest) { r.Attributes.Source.Principal = "frontend.demo.svc" }, 403, policy.CodeDeniedDefault, "", ""},
		{"unknown destination: no policy of demo applies", func(r *authv3.CheckRequest) { r.Attributes.ContextExtensions = nil }, 403, policy.CodeDeniedDefault, "", ""},
		// demo's provider verifies tokens for demo's services only: in another namespace, which no
		// provider covers, an opaque credential is not its business.
		{"another namespace: an opaque Bearer credential is not refused", all(toNamespace("payments"), setHeader("authorization", "Bearer not.a.jwt")), 403, policy.CodeDeniedDefault, "", ""},
		{"another namespace: demo's token is not verified", all(toNamespace("payments"), setPath("/admin/users"), setHeader("authorization", "Bearer "+admin)), 403, policy.CodeDeniedDefault, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.srv.Check(context.Background(), request(t, tc.mutate))
			if err != nil {
				t.Fatal(err)
			}
			meta := resp.GetDynamicMetadata().GetFields()
			if got := httpCode(resp); got != tc.status || decisionCode(resp) != tc.code ||
				meta["policy"].GetStringValue() != tc.policy || meta["rule"].GetStringValue() != tc.rule {
				t.Fatalf("got %d %s, want %d %s %s/%s\n%s", got, decisionCode(resp), tc.status, tc.code, tc.policy, tc.rule, describe(resp))
			}
			id := meta["decision_id"].GetStringValue()
			if len(id) != 26 || responseHeader(resp, HeaderDecisionID) != id {
				t.Errorf("decision id %q, header %q", id, responseHeader(resp, HeaderDecisionID))
			}
			if tc.status == 200 {
				up := resp.GetOkResponse().GetHeaders()
				if len(up) != 1 || up[0].GetHeader().GetKey() != HeaderDecisionID || up[0].GetHeader().GetValue() != id {
					t.Errorf("upstream headers %v", up)
				}
				return
			}
			var body errorBody
			if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil {
				t.Fatalf("body %q: %v", resp.GetDeniedResponse().GetBody(), err)
			}
			if body.DecisionID != id || body.Status != tc.status || body.Reason != "" {
				t.Errorf("body %+v", body)
			}
			if strings.Contains(resp.GetDeniedResponse().GetBody(), "demo/") {
				t.Errorf("body names a policy: %s", resp.GetDeniedResponse().GetBody())
			}
			if tc.status == 401 && !strings.HasPrefix(responseHeader(resp, "www-authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge")
			}
		})
	}
}

func TestCheckMalformedRequests(t *testing.T) {
	f := newFixture(t, "")
	otherSVID := testca.New(t, "portcullis.local").SVID(t, "spiffe://portcullis.local/ns/demo/sa/mallory")
	certOf := func(s *testca.SVID) string { return url.QueryEscape(string(s.CertPEM)) }
	frontend := testca.New(t, "portcullis.local").SVID(t, "spiffe://portcullis.local/ns/demo/sa/frontend")
	cases := []struct {
		name   string
		req    *authv3.CheckRequest
		reason string // "" means the request is fine
	}{
		{"empty request", &authv3.CheckRequest{}, "no attributes"},
		{"not HTTP", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}}, "not an HTTP request"},
		{"no method", request(t, func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Method = "" }), "method is empty"},
		{"method with a space", request(t, func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Method = "GET /" }), "not an HTTP token"},
		// HTTP/2 carries ":method: delete" through Envoy; frameworks upper-case it.
		{"lower-case method", request(t, func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Method = "delete" }), "not upper case"},
		{"mixed-case method", request(t, func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Method = "Delete" }), "not upper case"},
		{"dot segment with parameters", request(t, setPath("/api/..;/debug/pprof")), "dot segment with parameters"},
		{"overlong UTF-8 dot", request(t, setPath("/api/%c0%ae%c0%ae/debug")), "not valid UTF-8"},
		{"invalid UTF-8", request(t, setPath("/api/%ff")), "not valid UTF-8"},
		{"no path", request(t, setPath("")), "path is empty"},
		{"relative path", request(t, setPath("api")), "does not start"},
		{"bad escape", request(t, setPath("/api/%zz")), "percent-encoding"},
		{"encoded NUL", request(t, setPath("/api/%00")), "control character"},
		{"backslash", request(t, setPath("/api\\..\\debug")), "backslash"},
		{"bad query", request(t, setPath("/api/x?a=%zz")), "query string is malformed"},
		{"bad service extension", request(t, func(r *authv3.CheckRequest) { r.Attributes.ContextExtensions["service"] = "Back End" }), "not a DNS label"},
		{"bad port extension", request(t, func(r *authv3.CheckRequest) { r.Attributes.ContextExtensions["port"] = "http" }), "not a port number"},
		{"certificate not PEM", request(t, func(r *authv3.CheckRequest) { r.Attributes.Source.Certificate = "garbage" }), "not PEM"},
		{"certificate of someone else", request(t, func(r *authv3.CheckRequest) { r.Attributes.Source.Certificate = certOf(otherSVID) }), "does not match the source principal"},
		{"certificate that matches", request(t, func(r *authv3.CheckRequest) { r.Attributes.Source.Certificate = certOf(frontend) }), ""},
		{"header_map instead of headers", fixtureRequest(t, "check_request_header_map.json"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.srv.Check(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.reason == "" {
				if httpCode(resp) == 400 {
					t.Fatalf("rejected: %s", describe(resp))
				}
				return
			}
			var body errorBody
			if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil {
				t.Fatal(err)
			}
			if httpCode(resp) != 400 || body.Error != "bad_request" || !strings.Contains(body.Reason, tc.reason) {
				t.Fatalf("got %d %+v, want 400 with %q", httpCode(resp), body, tc.reason)
			}
		})
	}
}

func TestAttributesFromEnvoyFixtures(t *testing.T) {
	a, err := Attributes(fixtureRequest(t, "check_request.json"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if a.Source.Principal != "spiffe://portcullis.local/ns/demo/sa/frontend" || a.Source.Namespace != "demo" || a.Source.ServiceAccount != "frontend" ||
		a.Source.Address.String() != "10.0.0.7" || a.Source.Port != 54321 ||
		a.Destination.Service != "backend" || a.Destination.Namespace != "demo" || a.Destination.Port != 8080 ||
		a.Destination.Principal != "spiffe://portcullis.local/ns/demo/sa/backend" ||
		a.Request.Method != "GET" || a.Request.Path != "/api/items" || a.Request.Query != "page=2" || a.Request.Host != "backend.demo" ||
		a.Request.SNI != "backend.demo" || a.Request.Protocol != "HTTP/1.1" || !slices.Equal(a.Request.Headers["user-agent"], []string{"curl/8.5.0"}) ||
		!a.Request.Time.Equal(time.Date(2026, 1, 5, 10, 0, 0, 123456000, time.UTC)) || a.Request.ID != "6945723611380342375" {
		t.Errorf("attributes = %+v", a)
	}
	b, err := Attributes(fixtureRequest(t, "check_request_header_map.json"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A header sent twice keeps both values (encode_raw_headers sends one entry per line).
	if !slices.Equal(b.Request.Headers["x-tenant"], []string{"acme", "globex"}) || b.Request.Path != "/api/items/new" || b.Source.Address.Unmap().String() != "10.0.0.8" ||
		b.Destination.Port != 15102 || b.Request.Time.IsZero() {
		t.Errorf("header_map attributes = %+v", b)
	}
}

func TestDecisionLog(t *testing.T) {
	f := newFixture(t, "")
	tok := f.token(t, map[string]any{"roles": []string{"admin"}})
	secret := "s3cr3t-query-token"
	for _, req := range []*authv3.CheckRequest{
		request(t, all(setPath("/admin/x?access_token="+secret), setHeader("authorization", "Bearer "+tok), setHeader("cookie", "session="+secret))),
		request(t, setPath("/debug/x")),
		request(t, setHeader("authorization", "Bearer "+tok+"x")),
	} {
		if _, err := f.srv.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	recs := f.records(t)
	if len(recs) != 3 {
		t.Fatalf("records = %+v", recs)
	}
	raw := f.dlog.String()
	for _, leak := range []string{tok, secret, strings.Split(tok, ".")[1], "curl/8.5.0", "page=2"} {
		if strings.Contains(raw, leak) {
			t.Errorf("decision log contains %q", leak)
		}
	}
	r := recs[0]
	if r.Decision != "ALLOW" || r.Policy != "demo/backend-allow" || r.Rule != "admins" || r.HTTPStatus != 200 ||
		r.Source.Principal != "spiffe://portcullis.local/ns/demo/sa/frontend" || r.Request.Path != "/admin/x" ||
		r.JWT == nil || r.JWT.Subject != "alice" || r.JWT.KeyID != "k1" || r.JWT.Issuer != "https://idp.test" || r.MeshVersion == "" || r.TraceID == "" {
		t.Errorf("allowed record = %+v", r)
	}
	if r := recs[1]; r.Decision != "DENY" || r.Code != policy.CodeDenied || r.HTTPStatus != 403 || r.Rule != "no-debug" {
		t.Errorf("denied record = %+v", r)
	}
	if r := recs[2]; r.Code != policy.CodeJWTInvalid || r.JWT == nil || !strings.HasPrefix(r.JWT.Error, "bad_signature") {
		t.Errorf("invalid token record = %+v", r)
	}
}

func TestCheckSpans(t *testing.T) {
	f := newFixture(t, "")
	tok := f.token(t, map[string]any{"roles": []string{"admin"}})
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req := request(t, all(setPath("/admin/x"), setHeader("authorization", "Bearer "+tok), setHeader("traceparent", parent)))
	f.spans.Reset()
	resp, err := f.srv.Check(context.Background(), req)
	if err != nil || httpCode(resp) != 200 {
		t.Fatalf("%v %s", err, describe(resp))
	}
	spans := f.spans.GetSpans()
	byName := map[string]sdktraceSpan{}
	for _, s := range spans {
		byName[s.Name] = sdktraceSpan{s.SpanContext, s.Parent, s.SpanKind, attrMap(s.Attributes)}
	}
	check, ok := byName[spanCheck]
	if !ok || len(spans) != 3 {
		t.Fatalf("spans = %v", names(spans))
	}
	if check.ctx.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || check.parent.SpanID().String() != "00f067aa0ba902b7" || !check.parent.IsRemote() || check.kind != trace.SpanKindServer {
		t.Errorf("check span does not join the request's trace: trace %s parent %s", check.ctx.TraceID(), check.parent.SpanID())
	}
	id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	for k, want := range map[string]string{
		"authz.decision": "ALLOW", "authz.policy": "demo/backend-allow", "authz.rule": "admins", "authz.decision_id": id,
		"authz.principal": "spiffe://portcullis.local/ns/demo/sa/frontend", "authz.code": "allowed", "authz.reason": "rule admins matched",
		"rpc.system": "grpc", "rpc.method": "Check", "http.response.status_code": "200",
	} {
		if got := check.attrs[k]; got != want {
			t.Errorf("check span %s = %q, want %q", k, got, want)
		}
	}
	if _, ok := check.attrs["authz.eval_us"]; !ok {
		t.Error("no authz.eval_us")
	}
	for _, child := range []string{spanJWT, spanPolicy} {
		c, ok := byName[child]
		if !ok || c.parent.SpanID() != check.ctx.SpanID() || c.ctx.TraceID() != check.ctx.TraceID() {
			t.Errorf("%s is not a child of the check span", child)
		}
	}
	// The token's details are on the JWT span, the mesh on the policy span; neither repeats
	// what the Check span says.
	jwtSpan, policySpan := byName[spanJWT].attrs, byName[spanPolicy].attrs
	if jwtSpan["authz.jwt.kid"] != "k1" || jwtSpan["authz.jwt.issuer"] != "https://idp.test" || jwtSpan["authz.jwt.cache_hit"] != "false" ||
		policySpan["authz.mesh_version"] == "" {
		t.Errorf("child attributes: %v / %v", jwtSpan, policySpan)
	}
	for k := range check.attrs {
		if strings.HasPrefix(k, "authz.jwt.") {
			t.Errorf("check span repeats the JWT span's %s", k)
		}
	}
	if _, ok := policySpan["authz.decision"]; ok {
		t.Errorf("policy span repeats the check span's decision: %v", policySpan)
	}

	// A second check of the same token hits the cache; trace context from gRPC metadata wins.
	f.spans.Reset()
	md := metadata.Pairs("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
	if _, err := f.srv.Check(metadata.NewIncomingContext(context.Background(), md), req); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.spans.GetSpans() {
		if s.Name == spanJWT {
			a := attrMap(s.Attributes)
			if s.SpanContext.TraceID().String() != "11111111111111111111111111111111" || a["authz.jwt.cache_hit"] != "true" {
				t.Errorf("second check: trace %s cache_hit %s", s.SpanContext.TraceID(), a["authz.jwt.cache_hit"])
			}
		}
	}
}

// A request Envoy did not sample records no span: the check is decided and logged, and pays
// nothing for tracing beyond reading the trace context.
func TestUnsampledCheckRecordsNoSpan(t *testing.T) {
	f := newFixture(t, "")
	f.spans.Reset()
	md := metadata.Pairs("traceparent", "00-33333333333333333333333333333333-4444444444444444-00")
	resp, err := f.srv.Check(metadata.NewIncomingContext(context.Background(), md), request(t, setPath("/api/items")))
	if err != nil || resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() == "" {
		t.Fatalf("%v %s", err, describe(resp))
	}
	if spans := f.spans.GetSpans(); len(spans) != 0 {
		t.Errorf("an unsampled request recorded %v", names(spans))
	}
}

type sdktraceSpan struct {
	ctx, parent trace.SpanContext
	kind        trace.SpanKind
	attrs       map[string]string
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// emptySource never has a mesh.
type emptySource struct{}

func (emptySource) Current() (*model.Mesh, <-chan struct{}) { return nil, make(chan struct{}) }

func TestCheckMetrics(t *testing.T) {
	f := newFixture(t, "")
	for _, p := range []string{"/api/a", "/api/b", "/debug/x"} {
		if _, err := f.srv.Check(context.Background(), request(t, setPath(p))); err != nil {
			t.Fatal(err)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	var histogramCount uint64
	policies := int64(-1)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "portcullis_authz_checks" {
					for _, p := range d.DataPoints {
						dec, _ := p.Attributes.Value("decision")
						pol, _ := p.Attributes.Value("policy")
						counts[dec.AsString()+" "+pol.AsString()] += p.Value
					}
				}
			case metricdata.Histogram[float64]:
				if m.Name == "portcullis_authz_check_duration_seconds" {
					for _, p := range d.DataPoints {
						histogramCount += p.Count
					}
				}
			case metricdata.Gauge[int64]:
				if m.Name == "portcullis_authz_policies" {
					policies = d.DataPoints[0].Value
				}
			}
		}
	}
	if counts["ALLOW demo/backend-allow"] != 2 || counts["DENY demo/backend-deny-debug"] != 1 || histogramCount != 3 || policies != 2 {
		t.Errorf("checks %v, latency count %d, policies %d", counts, histogramCount, policies)
	}
}

func TestMeshUpdates(t *testing.T) {
	f := newFixture(t, "")
	allowed := func() bool {
		resp, err := f.srv.Check(context.Background(), request(t, setPath("/other")))
		return err == nil && httpCode(resp) == 200
	}
	if allowed() {
		t.Fatal("/other allowed before the update")
	}
	// A new version that allows /other takes effect.
	f.publish(t, f.mesh+`---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-other, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules: [{to: {paths: [/other]}}]
`)
	waitFor(t, "the new policy", allowed)
	good := f.srv.Status().MeshVersion

	// A version with a broken Rego module (published without the checker) keeps the last good
	// engine and says why.
	f.publish(t, f.mesh+`---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: demo}
spec:
  action: DENY
  rego: {module: "package x\nmatch if {"}
`)
	waitFor(t, "the compile error", func() bool { return f.srv.Status().LastError != "" })
	if st := f.srv.Status(); st.MeshVersion != good || !allowed() || !strings.Contains(st.LastError, "rego_parse_error") {
		t.Errorf("status after a broken mesh: %+v", st)
	}
	if f.srv.Ready() != nil {
		t.Error("not ready after a broken update")
	}
	rec := httptest.NewRecorder()
	f.srv.DebugHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/authz", nil))
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || !st.Ready || len(st.Providers) != 1 || st.Providers[0].State != "ok" {
		t.Errorf("/debug/authz = %s (%v)", rec.Body.String(), err)
	}
	// It lists the live policies, not a count: the one that allows /other with its scope.
	var other *policy.Summary
	for i, p := range st.Policies {
		if p.Policy == "demo/allow-other" {
			other = &st.Policies[i]
		}
		if p.Policy == "demo/broken" {
			t.Errorf("/debug/authz lists the policy that did not compile: %+v", p)
		}
	}
	if other == nil || other.Action != "ALLOW" || other.Scope != "service demo/backend" || len(other.Rules) != 1 {
		t.Errorf("/debug/authz policies = %+v, want demo/allow-other (ALLOW, service demo/backend, one rule)", st.Policies)
	}
}

func TestNotReadyDeniesWith503(t *testing.T) {
	srv, err := New(Options{Logger: discardLogger(), TracerProvider: sdktrace.NewTracerProvider(), Source: emptySource{}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Check(context.Background(), request(t, nil))
	if err != nil || httpCode(resp) != 503 || decisionCode(resp) != policy.CodeUnavailable {
		t.Fatalf("%v %s", err, describe(resp))
	}
	if srv.Ready() == nil {
		t.Error("ready without a mesh")
	}
}

// toNamespace sends the request to service api of namespace ns, as its listener's context
// extensions say.
func toNamespace(ns string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		r.Attributes.ContextExtensions = map[string]string{"service": "api", "namespace": ns}
	}
}

// denyDebug denies requests to the backend whose x-debug header is "1".
const denyDebug = `---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny-debug-header, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
  - name: x-debug
    when: [{header: x-debug, equals: "1"}]
`

// withHeaderLines replaces the request's headers by Envoy's header_map form (encode_raw_headers):
// one entry per header line, in order.
func withHeaderLines(kv ...string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		hm := &corev3.HeaderMap{}
		for k, v := range r.Attributes.Request.Http.Headers {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		for i := 0; i+1 < len(kv); i += 2 {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		r.Attributes.Request.Http.Headers, r.Attributes.Request.Http.HeaderMap = nil, hm
	}
}

// A header sent twice reaches the policy as two values, never as "1,1": a DENY on one value
// matches whichever line carries it.
func TestRepeatedHeadersAreLists(t *testing.T) {
	f := newFixture(t, denyDebug)
	for _, tc := range []struct {
		name  string
		lines []string
		code  policy.Code
	}{
		{"once", []string{"x-debug", "1"}, policy.CodeDenied},
		{"twice, the same value", []string{"x-debug", "1", "x-debug", "1"}, policy.CodeDenied},
		{"twice, the second value", []string{"x-debug", "0", "X-Debug", "1"}, policy.CodeDenied},
		{"twice, neither value", []string{"x-debug", "0", "x-debug", "2"}, policy.CodeAllowed},
		{"once, the joined text", []string{"x-debug", "1,1"}, policy.CodeAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.srv.Check(context.Background(), request(t, withHeaderLines(tc.lines...)))
			if err != nil {
				t.Fatal(err)
			}
			if got := decisionCode(resp); got != tc.code {
				t.Fatalf("code %s, want %s: %s", got, tc.code, describe(resp))
			}
		})
	}
}
