package telemetry

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A fake Jaeger query API with one trace: Envoy's inbound span and the Check under it.
const fakeTrace = `{"data":[{"traceID":"abc123","processes":{"p1":{"serviceName":"backend"},"p2":{"serviceName":"portcullis-controlplane"}},
"spans":[
 {"spanID":"s1","operationName":"inbound backend.demo","startTime":1000,"duration":900,"processID":"p1","references":[],
  "tags":[{"key":"portcullis.decision.code","value":"denied"}]},
 {"spanID":"s2","operationName":"authz.Check","startTime":1100,"duration":300,"processID":"p2",
  "references":[{"refType":"CHILD_OF","spanID":"s1"}],
  "tags":[{"key":"authz.decision","value":"DENY"},{"key":"authz.policy","value":"demo/backend-deny-debug"},{"key":"otel.status_code","value":"ERROR"}]}
]}]}`

func TestTraceViewer(t *testing.T) {
	var gotTags string
	jaeger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/services":
			_, _ = io.WriteString(w, `{"data":["backend","portcullis-controlplane"]}`)
		case "/api/traces":
			gotTags = r.URL.Query().Get("tags")
			_, _ = io.WriteString(w, fakeTrace)
		case "/api/traces/abc123":
			_, _ = io.WriteString(w, fakeTrace)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(jaeger.Close)
	v := httptest.NewServer(TraceViewer(jaeger.URL))
	t.Cleanup(v.Close)

	page := fetch(t, v.URL+"/traces?service=portcullis-controlplane&tag=authz.decision:DENY")
	if gotTags != `{"authz.decision":"DENY"}` {
		t.Errorf("tags sent to Jaeger: %q", gotTags)
	}
	for _, want := range []string{`href="traces/abc123"`, "backend: inbound backend.demo", "DENY", "backend, portcullis-controlplane"} {
		if !strings.Contains(page, want) {
			t.Errorf("search page lacks %q:\n%s", want, page)
		}
	}
	page = fetch(t, v.URL+"/traces/abc123")
	for _, want := range []string{"authz.Check", "demo/backend-deny-debug", `class="err"`, "padding-left:1.5em"} {
		if !strings.Contains(page, want) {
			t.Errorf("trace page lacks %q:\n%s", want, page)
		}
	}
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}
