package traceview_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/portcullis/portcullis/telemetry/traceview"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/tracetest"
)

// mesh exports spans as the mesh's parts do, one tracer provider per service, to a real Jaeger.
type mesh struct {
	providers map[string]*sdktrace.TracerProvider
}

func newMesh(t *testing.T, endpoint string) *mesh {
	t.Helper()
	m := &mesh{providers: map[string]*sdktrace.TracerProvider{}}
	for _, svc := range []string{"frontend", "backend", "portcullis-controlplane"} {
		exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		m.providers[svc] = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(svc))))
	}
	t.Cleanup(func() {
		for _, p := range m.providers {
			_ = p.Shutdown(context.Background())
		}
	})
	return m
}

func (m *mesh) span(ctx context.Context, svc, name string, at time.Time, took time.Duration, tags map[string]string) context.Context {
	var attrs []attribute.KeyValue
	for k, v := range tags {
		attrs = append(attrs, attribute.String(k, v))
	}
	ctx, s := m.providers[svc].Tracer("test").Start(ctx, name, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
	s.End(trace.WithTimestamp(at.Add(took)))
	return ctx
}

// request is one request through frontend → backend, as Envoy tags its spans, with the Check
// when authorization decided it.
type request struct {
	path, status, flags                 string
	decisionID, code, policy, rule, why string
}

func (m *mesh) request(at time.Time, r request) {
	ctx := context.Background()
	url := "http://127.0.0.1:19001" + r.path + "?secret=1"
	ctx = m.span(ctx, "frontend", "outbound backend.demo", at, 3*time.Millisecond, map[string]string{
		"portcullis.direction": "outbound", "http.method": "GET", "http.url": url, "http.status_code": r.status, "response_flags": "-"})
	in := map[string]string{"portcullis.direction": "inbound", "http.method": "GET", "http.url": url, "http.status_code": r.status,
		"response_flags": r.flags, "portcullis.source.principal": "spiffe://portcullis.local/ns/demo/sa/frontend"}
	if r.decisionID != "" {
		in["portcullis.decision_id"], in["portcullis.decision.code"] = r.decisionID, r.code
		in["portcullis.decision.policy"], in["portcullis.decision.rule"] = r.policy, r.rule
	}
	ctx = m.span(ctx, "backend", "inbound backend.demo", at.Add(500*time.Microsecond), 2*time.Millisecond, in)
	if r.decisionID != "" {
		decision := "DENY"
		if strings.HasPrefix(r.code, "allowed") {
			decision = "ALLOW"
		}
		m.span(ctx, "portcullis-controlplane", "authz.Check", at.Add(time.Millisecond), 600*time.Microsecond, map[string]string{
			"authz.decision_id": r.decisionID, "authz.decision": decision, "authz.code": r.code, "authz.policy": r.policy,
			"authz.rule": r.rule, "authz.reason": r.why})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

var rowRE = regexp.MustCompile(`(?s)<tr data-decision-id="([^"]*)">(.*?)</tr>`)

// rows returns each request row's decision id and text.
func rows(page string) [][2]string {
	var out [][2]string
	for _, m := range rowRE.FindAllStringSubmatch(page, -1) {
		text := html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(m[2], " "))
		out = append(out, [2]string{m[1], strings.Join(strings.Fields(text), " ")})
	}
	return out
}

func TestTraceBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Jaeger (not a -short test)")
	}
	j := tracetest.StartJaeger(t)
	if j == nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("Jaeger is not built (make jaeger; CI=true: the trace browser must be tested against it)")
		}
		t.Skip("SKIPPING, JAEGER NOT BUILT: make jaeger")
	}
	m := newMesh(t, j.Endpoint())
	now := time.Now()
	m.request(now.Add(-50*time.Second), request{path: "/api/items", status: "200", flags: "-", decisionID: "01ALLOWED0000000000000000A", code: "allowed", policy: "demo/allow", rule: "reads", why: "rule reads matched"})
	m.request(now.Add(-40*time.Second), request{path: "/debug/vars", status: "403", flags: "UAEX", decisionID: "01DENIED00000000000000000D", code: "denied", policy: "demo/deny-debug", rule: "no-debug", why: "rule no-debug matched"})
	m.request(now.Add(-30*time.Second), request{path: "/admin/stats", status: "401", flags: "UAEX", decisionID: "01NOTOKEN0000000000000000T", code: "jwt_required", policy: "demo/allow", rule: "admins", why: "a verified JWT is required"})
	m.request(now.Add(-20*time.Second), request{path: "/api/slow", status: "429", flags: "RL"})
	m.request(now.Add(-10*time.Second), request{path: "/api/items", status: "503", flags: "UAEX"})
	m.span(context.Background(), "portcullis-controlplane", "config.load", now.Add(-5*time.Second), 4*time.Millisecond, map[string]string{"config.dir": "/mesh"})

	v := httptest.NewServer(traceview.Handler(j.QueryURL))
	t.Cleanup(v.Close)
	var page string
	proctest.Eventually(t, 30*time.Second, func() error {
		_, page = get(t, v.URL+"/traces")
		if n := len(rows(page)); n != 5 {
			return fmt.Errorf("%d request rows in Jaeger, want 5", n)
		}
		return nil
	}, "the five requests listed")

	// Newest first; each row says what was asked, what the caller got and who decided, without
	// the query string; config.load is not a request.
	want := []string{
		"GET /api/items 503 AUTHZ_UNREACHABLE 503 frontend → backend",
		"GET /api/slow 429 RATE_LIMITED 429 frontend → backend",
		"GET /admin/stats 401 DENY 401 jwt_required demo/allow admins a verified JWT is required frontend → backend → portcullis-controlplane",
		"GET /debug/vars 403 DENY 403 denied demo/deny-debug no-debug rule no-debug matched frontend → backend → portcullis-controlplane",
		"GET /api/items 200 ALLOW 200 allowed demo/allow reads rule reads matched frontend → backend → portcullis-controlplane",
	}
	got := rows(page)
	for i, w := range want {
		if !strings.Contains(got[i][1], w) {
			t.Errorf("row %d = %q, want it to contain %q", i, got[i][1], w)
		}
	}
	if strings.Contains(page, "secret=1") || strings.Contains(page, "config.load") {
		t.Error("the request list shows a query string or the control plane's own trace")
	}

	for _, tc := range []struct {
		query string
		ids   []string
	}{
		{"decision=DENY", []string{"01NOTOKEN0000000000000000T", "01DENIED00000000000000000D"}},
		{"decision=deny&code=403", []string{"01DENIED00000000000000000D"}},
		{"code=429", []string{""}},
		{"policy=demo/allow", []string{"01NOTOKEN0000000000000000T", "01ALLOWED0000000000000000A"}},
		{"path=/api/*", []string{"", "", "01ALLOWED0000000000000000A"}},
		{"path=/api/items&decision=ALLOW", []string{"01ALLOWED0000000000000000A"}},
		{"decision_id=01DENIED00000000000000000D", []string{"01DENIED00000000000000000D"}},
		{"service=backend&decision=RATE_LIMITED", []string{""}},
		{"since=25s", []string{"", ""}},
	} {
		code, page := get(t, v.URL+"/traces?"+tc.query)
		var ids []string
		for _, r := range rows(page) {
			ids = append(ids, r[0])
		}
		if code != 200 || strings.Join(ids, ",") != strings.Join(tc.ids, ",") {
			t.Errorf("/traces?%s: %d, rows %q, want %q", tc.query, code, ids, tc.ids)
		}
	}

	// A malformed filter is an error naming it, never a list of everything.
	for query, want := range map[string]string{
		"tag=authz.decision=DENY": `tag=&#34;authz.decision=DENY&#34;: want key:value`,
		"decision=maybe":          `decision=&#34;maybe&#34;: want one of ALLOW, DENY, RATE_LIMITED, AUTHZ_UNREACHABLE`,
		"code=forbidden":          `code=&#34;forbidden&#34;: want an HTTP status`,
		"since=forever":           `since=&#34;forever&#34;: want a duration`,
		"colour=red":              `colour=&#34;red&#34;: unknown filter`,
		"service=payments":        `service=&#34;payments&#34;: no proxy of that service has reported spans (known: backend, frontend)`,
		"view=control&code=403":   `do not apply to view=control`,
	} {
		code, page := get(t, v.URL+"/traces?"+query)
		if code != http.StatusBadRequest || !strings.Contains(page, want) || len(rows(page)) != 0 {
			t.Errorf("/traces?%s: %d, want 400 saying %s:\n%s", query, code, want, page)
		}
	}

	// Pages instead of a cap: two rows a page, an older link until the last one.
	var seen []string
	next := "/traces?limit=2"
	for pages := 0; next != ""; pages++ {
		if pages > 3 {
			t.Fatal("more than 3 pages of 2 for 5 requests")
		}
		_, page := get(t, v.URL+next)
		for _, r := range rows(page) {
			seen = append(seen, r[1])
		}
		next = ""
		if m := regexp.MustCompile(`id="older" href="\?([^"]*)"`).FindStringSubmatch(page); m != nil {
			next = "/traces?" + html.UnescapeString(m[1])
		}
	}
	if len(seen) != 5 {
		t.Errorf("paging showed %d rows, want the 5 requests once each:\n%s", len(seen), strings.Join(seen, "\n"))
	}
	for i := range min(len(seen), len(want)) {
		if !strings.Contains(seen[i], want[i]) {
			t.Errorf("page row %d = %q, want %q", i, seen[i], want[i])
		}
	}

	// The control plane's own traces, apart.
	_, page = get(t, v.URL+"/traces?view=control")
	if !strings.Contains(page, ">config.load</a>") || len(rows(page)) != 0 || strings.Contains(page, "outbound backend.demo") {
		t.Errorf("control view:\n%s", page)
	}

	// The denied request's trace: the decision without a click, the spans on a time axis.
	_, page = get(t, v.URL+"/traces?decision=DENY&code=403")
	link := regexp.MustCompile(`<tr data-decision-id="01DENIED00000000000000000D"><td class="mono"><a href="(traces/[0-9a-f]+)"`).FindStringSubmatch(page)
	if link == nil {
		t.Fatal("no link to the denied request's trace")
	}
	code, trace := get(t, v.URL+"/"+link[1])
	if code != 200 {
		t.Fatalf("trace page: %d %s", code, trace)
	}
	for _, want := range []string{`<dd id="policy">demo/deny-debug</dd>`, `<dd id="reason">rule no-debug matched</dd>`, `class="deny">DENY</dd>`,
		"403 denied", "01DENIED00000000000000000D", `id="timeline"`, "outbound backend.demo", "inbound backend.demo", "authz.Check",
		`<div style="left:0%;width:100%`} {
		if !strings.Contains(trace, want) {
			t.Errorf("trace page lacks %s", want)
		}
	}
	// The inbound span starts 0.5 ms into a 3 ms trace and lasts 2 ms.
	if !regexp.MustCompile(`left:16\.6[0-9]*%;width:66\.6[0-9]*%`).MatchString(trace) {
		t.Errorf("the inbound span's bar is not at 16.7%% for 66.7%%:\n%s", trace)
	}
	if code, _ := get(t, v.URL+"/traces/0123456789abcdef0123456789abcdef"); code != http.StatusNotFound {
		t.Errorf("an unknown trace: %d, want 404", code)
	}
}
