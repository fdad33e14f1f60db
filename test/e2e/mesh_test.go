package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/portcullis/portcullis/examples/demoapp"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/testca"
)

const trustDomain = "e2e.test"

const meshDoc = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: e2e.test
  mtls: {mode: STRICT}
`

// policiesDoc allows the frontend to read allowedPaths of the backend, denies /admin/*, and
// limits /api/limited to 3 requests (the bucket refills only after an hour).
func policiesDoc(allowedPath string) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow-frontend, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - name: frontend-reads
      from: {principals: ["spiffe://e2e.test/ns/demo/sa/frontend"]}
      to: {methods: [GET], paths: [%q]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny-admin, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
    - name: no-admin
      to: {paths: ["/admin/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: backend-limits, namespace: demo}
spec:
  selector: {service: backend}
  limits:
    - name: limited
      pathPrefix: /api/limited
      bucket: {maxTokens: 3, fillInterval: 1h}
`, allowedPath)
}

func TestMeshEndToEnd(t *testing.T) {
	c := meshtest.New(t, trustDomain)

	// The applications: the backend says who called it; the frontend is not called in this test
	// (the test plays the frontend application, calling its proxy's outbound port).
	backendApp := httptest.NewServer(demoapp.Backend("backend"))
	t.Cleanup(backendApp.Close)
	frontendApp := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(frontendApp.Close)
	backendPort, frontendPort := backendApp.Listener.Addr().(*net.TCPAddr).Port, frontendApp.Listener.Addr().(*net.TCPAddr).Port

	// Tracing is on, but its collector is down: requests must not notice (spans are dropped and
	// counted).
	deadCollector := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	c.Write("mesh.yaml", strings.Replace(meshDoc, "  mtls: {mode: STRICT}\n",
		fmt.Sprintf("  mtls: {mode: STRICT}\n  tracing: {enabled: true, collector: %q, samplingPercent: 100}\n", deadCollector), 1))
	c.Write("services.yaml", meshtest.ServicesDoc("demo", frontendPort, backendPort))
	c.Write("policies.yaml", policiesDoc("/api/*"))
	c.StartControlPlane()

	// Authorization runs apart from the control plane, with its identity from its own agent.
	authzAgent := c.StartAgent("authz-agent", "portcullis-system", "authz")
	authzAgent.WaitReady(t)
	_, authzAdmin := c.StartAuthz(authzAgent, "--otlp-endpoint", deadCollector)

	backendInbound, frontendOutbound := proctest.FreePort(t), proctest.FreePort(t)
	backend := c.StartAgent("backend-1", "demo", "backend", "--envoy-path", c.Envoy, "--workload", "backend-1",
		"--service", "backend", "--inbound-port", strconv.Itoa(backendInbound), "--app-port", strconv.Itoa(backendPort))
	frontend := c.StartAgent("frontend-1", "demo", "frontend", "--envoy-path", c.Envoy, "--workload", "frontend-1",
		"--service", "frontend", "--inbound-port", strconv.Itoa(proctest.FreePort(t)), "--app-port", strconv.Itoa(frontendPort),
		"--upstream", "backend="+strconv.Itoa(frontendOutbound), "--xds-delta")
	backend.WaitReady(t)
	frontend.WaitReady(t)
	via := func(path string) string { return "http://127.0.0.1:" + strconv.Itoa(frontendOutbound) + path }

	t.Run("mTLS and the caller's identity", func(t *testing.T) {
		// EDS may still be converging just after readiness.
		var body string
		proctest.Eventually(t, 10*time.Second, func() error {
			code, b, err := meshtest.Get(via("/api/items"))
			if err != nil || code != 200 {
				return fmt.Errorf("%d %v %s", code, err, b)
			}
			body = b
			return nil
		}, "frontend → backend through both proxies")
		var got map[string]string
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if got["caller"] != "spiffe://e2e.test/ns/demo/sa/frontend" {
			t.Errorf("backend saw caller %q, want the frontend's SPIFFE ID", got["caller"])
		}
	})

	t.Run("deny with a decision id", func(t *testing.T) {
		for _, path := range []string{"/admin/users", "/internal"} {
			req, _ := http.NewRequest(http.MethodGet, via(path), nil)
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 || resp.Header.Get("x-portcullis-decision-id") == "" {
				t.Errorf("%s: %d, decision id %q; want 403 with a decision id", path, resp.StatusCode, resp.Header.Get("x-portcullis-decision-id"))
			}
		}
	})

	t.Run("plaintext and foreign certificates are refused", func(t *testing.T) {
		if code, _, err := meshtest.Get("http://127.0.0.1:" + strconv.Itoa(backendInbound) + "/api/items"); err == nil {
			t.Errorf("plaintext request to the STRICT inbound answered %d", code)
		}
		foreign := testca.New(t, trustDomain)
		svid := foreign.Issue(t, "spiffe://e2e.test/ns/demo/sa/frontend", time.Hour)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{svid.TLSCertificate()}, InsecureSkipVerify: true, //nolint:gosec // the test attacks the server
		}}}
		if resp, err := client.Get("https://127.0.0.1:" + strconv.Itoa(backendInbound) + "/api/items"); err == nil {
			resp.Body.Close()
			t.Errorf("a certificate from another CA claiming the frontend's ID got %d", resp.StatusCode)
		}
	})

	t.Run("a mesh identity the policy does not allow is denied", func(t *testing.T) {
		// The authorization service's own SVID is a valid mesh certificate, but no policy lets
		// it call the backend.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+authzAgent.Sockets+"/workload.sock")))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		backendID := spiffeid.RequireFromString("spiffe://e2e.test/ns/demo/sa/backend")
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(backendID)),
		}}
		resp, err := client.Get("https://127.0.0.1:" + strconv.Itoa(backendInbound) + "/api/items")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("%d, want 403", resp.StatusCode)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		var codes []int
		var limitHeader string
		for range 5 {
			req, _ := http.NewRequest(http.MethodGet, via("/api/limited"), nil)
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			codes = append(codes, resp.StatusCode)
			if resp.StatusCode == 429 {
				limitHeader = resp.Header.Get("x-ratelimit-limit")
			}
		}
		if fmt.Sprint(codes) != "[200 200 200 429 429]" || limitHeader == "" {
			t.Errorf("codes %v, x-ratelimit-limit %q; want 3 allowed then 429 with rate-limit headers", codes, limitHeader)
		}
		// The backend's agent reports what its Envoy refused.
		if _, body, err := meshtest.Get("http://" + backend.Admin + "/metrics"); err != nil || !strings.Contains(body, `portcullis_proxy_rate_limited_total{scope="local",service="demo/backend"} 2`) {
			t.Errorf("agent metrics lack the 2 rate-limited requests (%v):\n%s", err, meshtest.GrepLines(body, "portcullis_proxy"))
		}
	})

	t.Run("a dead trace collector costs nothing but dropped spans", func(t *testing.T) {
		// Every request above succeeded with tracing on; the authorization service counted the
		// spans it could not export.
		proctest.Eventually(t, 20*time.Second, func() error {
			_, body, err := meshtest.Get("http://" + authzAdmin + "/metrics")
			if err != nil {
				return err
			}
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, "portcullis_trace_spans_dropped_total ") && !strings.HasSuffix(l, " 0") {
					return nil
				}
			}
			return fmt.Errorf("no dropped spans counted:\n%s", meshtest.GrepLines(body, "portcullis_trace"))
		}, "dropped spans in the authorization service's metrics")
	})

	t.Run("a document change applies within 2s; an invalid edit changes nothing", func(t *testing.T) {
		c.Write("policies.yaml", policiesDoc("/api/v2/*"))
		took := proctest.Eventually(t, 2*time.Second, func() error {
			if code, _, err := meshtest.Get(via("/api/items")); err != nil || code != 403 {
				return fmt.Errorf("%d %v", code, err)
			}
			return nil
		}, "the new policy to deny /api/items")
		t.Logf("policy change effective after %s", took.Round(time.Millisecond))

		c.Write("policies.yaml", strings.Replace(policiesDoc("/api/*"), "to: {methods", "too: {methods", 1))
		proctest.Eventually(t, 10*time.Second, func() error {
			_, body, err := meshtest.Get("http://" + c.CPAdmin + "/debug/mesh")
			if err != nil || !strings.Contains(body, "unknown field") {
				return fmt.Errorf("problem not reported: %v", err)
			}
			return nil
		}, "the invalid edit on /debug/mesh")
		time.Sleep(500 * time.Millisecond) // would-be reload time
		// A 503 is authorization failing closed (a Check that timed out on a starved machine),
		// not the policy: ask again. Any answer but 403 and 503 means the invalid edit changed
		// what is enforced.
		code := 503
		for try := 0; try < 5 && code == 503; try++ {
			code, _, _ = meshtest.Get(via("/api/items"))
		}
		if code != 403 {
			t.Errorf("after an invalid edit /api/items is %d; the last good policy (deny) must stay", code)
		}
		c.Write("policies.yaml", policiesDoc("/api/*"))
		proctest.Eventually(t, 10*time.Second, func() error {
			if code, _, err := meshtest.Get(via("/api/items")); err != nil || code != 200 {
				return fmt.Errorf("%d %v", code, err)
			}
			return nil
		}, "the fixed policy to allow again")
	})

	t.Run("a NACK shows in proxy status", func(t *testing.T) {
		// Another frontend instance whose inbound port is taken: Envoy refuses the listener.
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		c.StartAgent("frontend-2", "demo", "frontend", "--envoy-path", c.Envoy, "--workload", "frontend-2",
			"--service", "frontend", "--inbound-port", strconv.Itoa(taken.Addr().(*net.TCPAddr).Port),
			"--app-port", strconv.Itoa(frontendPort))
		var status string
		proctest.Eventually(t, 30*time.Second, func() error {
			status = c.Portcullis("proxy", "status", "--admin-addr", c.CPAdmin)
			if !strings.Contains(status, "frontend-2.demo LDS: refused version") {
				return fmt.Errorf("no NACK yet:\n%s", status)
			}
			return nil
		}, "the NACK in proxy status")
		if !strings.Contains(status, "address already in use") && !strings.Contains(status, "Address already in use") {
			t.Errorf("NACK without Envoy's reason:\n%s", status)
		}
		t.Logf("proxy status:\n%s", status)
		if cfg := c.Portcullis("proxy", "config", "frontend-1.demo", "--admin-addr", c.CPAdmin); !strings.Contains(cfg, "outbound|"+strconv.Itoa(frontendOutbound)+"|backend.demo") {
			t.Errorf("proxy config lacks the outbound listener:\n%.2000s", cfg)
		}
	})

	t.Run("control plane restart loses no request", func(t *testing.T) {
		var ok, failed atomic.Int64
		var lastErr atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, _, err := meshtest.Get(via("/api/items")); err != nil || code != 200 {
					failed.Add(1)
					lastErr.Store(fmt.Sprintf("%d %v", code, err))
				} else {
					ok.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
		c.CP.Kill()
		time.Sleep(2 * time.Second) // proxies run on their last configuration
		c.StartControlPlane()
		proctest.Eventually(t, 30*time.Second, func() error {
			return c.Synced("backend-1.demo", "frontend-1.demo")
		}, "proxies to resync with the new control plane")
		close(stop)
		wg.Wait()
		if failed.Load() > 0 {
			t.Errorf("%d of %d requests failed across the restart (last: %v)", failed.Load(), ok.Load()+failed.Load(), lastErr.Load())
		}
		t.Logf("%d requests across the restart, none failed", ok.Load())
	})
}

var httpClient = &http.Client{Timeout: 5 * time.Second}
