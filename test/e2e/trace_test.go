package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/examples/demoapp"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/tracetest"
)

// One request through frontend → backend is one trace: the frontend's outbound span, the
// backend's inbound span, and the authorization Check (with its JWT and policy children) under
// the inbound span, all carrying the identities and the decision.
func TestTraceAcrossProxiesAndAuthorization(t *testing.T) {
	start := time.Now()
	c := meshtest.New(t, trustDomain)
	collector := tracetest.Start(t)
	t.Logf("collector up after %s", time.Since(start))
	idp := authztest.NewKey(t, "ES256", "k1")
	if err := os.WriteFile(filepath.Join(c.ConfigDir, "jwks.json"), []byte(authztest.JWKS(idp)), 0o600); err != nil {
		t.Fatal(err)
	}
	backendApp := httptest.NewServer(demoapp.Backend("backend"))
	t.Cleanup(backendApp.Close)
	frontendApp := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(frontendApp.Close)
	backendPort, frontendPort := backendApp.Listener.Addr().(*net.TCPAddr).Port, frontendApp.Listener.Addr().(*net.TCPAddr).Port

	c.Write("mesh.yaml", strings.Replace(meshDoc, "  mtls: {mode: STRICT}\n",
		fmt.Sprintf("  mtls: {mode: STRICT}\n  tracing: {enabled: true, collector: %q, samplingPercent: 100}\n", collector.Endpoint()), 1))
	c.Write("services.yaml", meshtest.ServicesDoc("demo", frontendPort, backendPort))
	c.Write("jwt.yaml", `apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: https://idp.e2e.test
  algorithms: [ES256]
  jwks: {file: jwks.json}
`)
	c.Write("policies.yaml", `apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow-users, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - name: signed-in-frontend
      from:
        principals: ["spiffe://e2e.test/ns/demo/sa/frontend"]
        jwt: {providers: [idp]}
      to: {paths: ["/api/*"]}
`)
	c.StartControlPlane()
	authzAgent := c.StartAgent("authz-agent", "portcullis-system", "authz")
	authzAgent.WaitReady(t)
	decisions := filepath.Join(c.Work, "decisions.log")
	c.StartAuthz(authzAgent, "--decision-log", decisions, "--otlp-endpoint", collector.Endpoint())
	frontendOutbound := proctest.FreePort(t)
	backend := c.StartAgent("backend-1", "demo", "backend", "--envoy-path", c.Envoy, "--workload", "backend-1",
		"--service", "backend", "--inbound-port", strconv.Itoa(proctest.FreePort(t)), "--app-port", strconv.Itoa(backendPort))
	frontend := c.StartAgent("frontend-1", "demo", "frontend", "--envoy-path", c.Envoy, "--workload", "frontend-1",
		"--service", "frontend", "--inbound-port", strconv.Itoa(proctest.FreePort(t)), "--app-port", strconv.Itoa(frontendPort),
		"--upstream", "backend="+strconv.Itoa(frontendOutbound))
	backend.WaitReady(t)
	frontend.WaitReady(t)
	t.Logf("mesh up after %s", time.Since(start))
	url := "http://127.0.0.1:" + strconv.Itoa(frontendOutbound)
	token := idp.Sign(t, authztest.Claims("https://idp.e2e.test", "alice"), nil)

	// The allowed request, with a token.
	var allowedID string
	proctest.Eventually(t, 10*time.Second, func() error {
		code, id, err := request(url+"/api/items", "Bearer "+token)
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		allowedID = id
		return nil
	}, "an allowed request")
	// The denied one: no rule matches /admin.
	code, deniedID, err := request(url+"/admin", "Bearer "+token)
	if err != nil || code != 403 || deniedID == "" {
		t.Fatalf("denied request: %d %q %v", code, deniedID, err)
	}

	var spans []tracetest.Span
	var check tracetest.Span
	proctest.Eventually(t, 30*time.Second, func() error {
		spans = collector.Spans(t)
		for _, s := range spans {
			if s.Name == "authz.Check" && s.Attrs["authz.decision_id"] == allowedID {
				check = s
			}
		}
		if check.SpanID == "" {
			return fmt.Errorf("no Check span for decision %s among %d spans", allowedID, len(spans))
		}
		trace := tracetest.Trace(spans, check.TraceID)
		for _, want := range [][2]string{{"frontend", "outbound backend.demo"}, {"backend", "inbound backend.demo"}, {"", "authz.jwt.verify"}, {"", "authz.policy.evaluate"}} {
			if _, ok := tracetest.Find(trace, want[0], want[1]); !ok {
				return fmt.Errorf("trace %s has no %q span yet:\n%s", check.TraceID, want[1], dump(trace))
			}
		}
		return nil
	}, "the allowed request's trace")

	t.Logf("trace complete after %s", time.Since(start))
	trace := tracetest.Trace(spans, check.TraceID)
	byID := map[string]tracetest.Span{}
	for _, s := range trace {
		byID[s.SpanID] = s
	}
	outbound, _ := tracetest.Find(trace, "frontend", "outbound backend.demo")
	inbound, _ := tracetest.Find(trace, "backend", "inbound backend.demo")
	jwtSpan, _ := tracetest.Find(trace, "", "authz.jwt.verify")
	policySpan, _ := tracetest.Find(trace, "", "authz.policy.evaluate")
	// Parent links: outbound → inbound → (Envoy's ext_authz client span →) Check → children.
	if !descends(byID, inbound, outbound.SpanID) {
		t.Errorf("the backend's inbound span does not descend from the frontend's outbound span\n%s", dump(trace))
	}
	if !descends(byID, check, inbound.SpanID) {
		t.Errorf("the Check span does not descend from the backend's inbound span\n%s", dump(trace))
	}
	if jwtSpan.ParentID != check.SpanID || policySpan.ParentID != check.SpanID {
		t.Errorf("JWT and policy spans are not children of Check\n%s", dump(trace))
	}
	for k, want := range map[string]string{
		"portcullis.source.principal":      "spiffe://e2e.test/ns/demo/sa/frontend",
		"portcullis.destination.principal": "spiffe://e2e.test/ns/demo/sa/backend",
		"portcullis.decision_id":           allowedID,
		"portcullis.decision.policy":       "demo/backend-allow-users",
	} {
		if got := inbound.Attrs[k]; got != want {
			t.Errorf("inbound span %s = %q, want %q", k, got, want)
		}
	}
	if check.Attrs["authz.decision"] != "ALLOW" || check.Attrs["authz.rule"] != "signed-in-frontend" || check.Attrs["authz.principal"] == "" {
		t.Errorf("Check span attributes: %v", check.Attrs)
	}

	// The denied request's trace names policy, rule and reason, with the same decision id as the
	// response header and the decision log.
	var denied tracetest.Span
	proctest.Eventually(t, 30*time.Second, func() error {
		for _, s := range collector.Spans(t) {
			if s.Name == "authz.Check" && s.Attrs["authz.decision_id"] == deniedID {
				denied = s
				return nil
			}
		}
		return fmt.Errorf("no Check span for the denied decision %s", deniedID)
	}, "the denied request's Check span")
	if denied.Attrs["authz.decision"] != "DENY" || denied.Attrs["authz.reason"] == "" {
		t.Errorf("denied Check span: %v", denied.Attrs)
	}
	logged := decisionLine(t, decisions, deniedID)
	if logged["decision"] != "DENY" || logged["reason"] != denied.Attrs["authz.reason"] {
		t.Errorf("decision log %v does not match the span %v", logged, denied.Attrs)
	}
}

// request sends a GET with an Authorization header and returns the status and decision id.
func request(url, auth string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", auth)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("x-portcullis-decision-id"), nil
}

// descends reports whether s has ancestor id.
func descends(byID map[string]tracetest.Span, s tracetest.Span, id string) bool {
	for range 16 {
		if s.ParentID == id {
			return true
		}
		p, ok := byID[s.ParentID]
		if !ok {
			return false
		}
		s = p
	}
	return false
}

func dump(spans []tracetest.Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s parent=%s %s/%s\n", s.SpanID, s.ParentID, s.Service, s.Name)
	}
	return b.String()
}

func decisionLine(t *testing.T, file, id string) map[string]any {
	t.Helper()
	var found map[string]any
	proctest.Eventually(t, 10*time.Second, func() error {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			var rec map[string]any
			if json.Unmarshal(s.Bytes(), &rec) == nil && rec["decision_id"] == id {
				found = rec
				return nil
			}
		}
		return fmt.Errorf("decision %s not logged", id)
	}, "the decision log line")
	return found
}
