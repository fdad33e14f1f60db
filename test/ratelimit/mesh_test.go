package ratelimit

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/redistest"
)

const (
	trustDomain = "limits.test"
	namespace   = "shop"
	issuer      = "https://idp.limits.test"
	// appOrigin is the browser origin the api's CORS policy allows.
	appOrigin = "https://app.example.com"
	// globalQuota is the bucket of each Global limit: no refill within the test.
	globalQuota = 20
)

const meshDoc = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: limits.test
  mtls: {mode: STRICT}
`

// servicesDoc: the frontend, the api (with a CORS policy for appOrigin, credentials allowed) and
// the backend.
func servicesDoc(frontend, api, backend int) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: frontend, namespace: shop}
spec: {ports: [{name: http, port: %d}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{name: http, port: %d}]
  cors:
    allowOrigins: [%q]
    allowMethods: [GET, POST]
    allowHeaders: [Authorization]
    exposeHeaders: [X-Ratelimit-Remaining]
    maxAge: 10m
    allowCredentials: true
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: shop}
spec: {ports: [{name: http, port: %d}]}
`, frontend, api, appOrigin, backend)
}

// policiesDoc: the frontend may call the api and the backend, with or without a token (a token
// that is presented must verify); the rate limits of both.
const policiesDoc = `apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: shop}
spec:
  issuer: ` + issuer + `
  algorithms: [ES256]
  jwks: {file: jwks.json}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-calls, namespace: shop}
spec:
  action: ALLOW
  rules:
    - name: frontend
      from: {principals: ["spiffe://limits.test/ns/shop/sa/frontend"]}
---
# Per user on /user (a verified sub; anonymous callers by the client IP one proxy hop in front).
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-per-user, namespace: shop}
spec:
  selector: {service: api}
  trustedProxyHops: 1
  limits:
    - name: per-user
      pathPrefix: /user
      bucket: {maxTokens: 3, fillInterval: 1h}
      by: {jwtClaim: sub}
---
# Per client IP on /peer with no trusted hop: X-Forwarded-For is ignored.
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-per-peer, namespace: shop}
spec:
  selector: {service: api}
  limits:
    - name: per-peer
      pathPrefix: /peer
      bucket: {maxTokens: 3, fillInterval: 1h}
      by: {clientIP: true}
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: backend-quota, namespace: shop}
spec:
  selector: {service: backend}
  failureMode: CLOSED
  limits:
    - name: closed
      scope: Global
      pathPrefix: /closed
      bucket: {maxTokens: 20, fillInterval: 1h}
    - name: quota-per-user
      scope: Global
      pathPrefix: /quota
      bucket: {maxTokens: 5, fillInterval: 1h}
      by: {jwtClaim: sub}
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: backend-shared, namespace: shop}
spec:
  selector: {service: backend}
  limits:
    - name: open
      scope: Global
      pathPrefix: /open
      bucket: {maxTokens: 20, fillInterval: 1h}
`

// counter is an application that answers 200 and counts requests by path.
type counter struct {
	mu   sync.Mutex
	hits map[string]int
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.hits[r.Method+" "+r.URL.Path]++
	c.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

func (c *counter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits[key]
}

func startApp(t *testing.T) (*counter, int) {
	c := &counter{hits: map[string]int{}}
	s := httptest.NewServer(c)
	t.Cleanup(s.Close)
	return c, s.Listener.Addr().(*net.TCPAddr).Port
}

var client = &http.Client{Timeout: 5 * time.Second}

// send makes one request and returns the response (body read and closed).
func send(t *testing.T, method, url string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// statuses sends n GETs and returns their status codes.
func statuses(t *testing.T, n int, url string, header http.Header) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		out[i] = send(t, http.MethodGet, url, header).StatusCode
	}
	return out
}

func TestRateLimitsAndCORS(t *testing.T) {
	redis := redistest.Start(t, "")
	c := meshtest.New(t, trustDomain)
	idp := authztest.NewKey(t, "ES256", "k1")
	if err := os.WriteFile(filepath.Join(c.ConfigDir, "jwks.json"), []byte(authztest.JWKS(idp)), 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(sub string) string { return idp.Sign(t, authztest.Claims(issuer, sub), nil) }

	apiApp, apiPort := startApp(t)
	var backendApps [2]*counter
	var backendPorts [2]int
	backendApps[0], backendPorts[0] = startApp(t)
	backendApps[1], backendPorts[1] = startApp(t)
	_, frontendPort := startApp(t)
	// Both backend instances serve the service port of the first; the second's application
	// listens elsewhere (--app-port), as two pods would on the same port.
	c.Write("mesh.yaml", meshDoc)
	c.Write("services.yaml", servicesDoc(frontendPort, apiPort, backendPorts[0]))
	c.Write("policies.yaml", policiesDoc)
	c.StartControlPlane()
	authzAgent := c.StartAgent("authz-agent", "portcullis-system", "authz")
	authzAgent.WaitReady(t)
	_, authzAdmin := c.StartAuthz(authzAgent, "--ratelimit-redis", redis.Addr)

	apiOut, backendOut := proctest.FreePort(t), proctest.FreePort(t)
	api := c.StartProxy("api-1", namespace, "api", apiPort, nil)
	backend1 := c.StartProxy("backend-1", namespace, "backend", backendPorts[0], nil)
	backend2 := c.StartProxy("backend-2", namespace, "backend", backendPorts[1], nil, "--service-port", strconv.Itoa(backendPorts[0]))
	frontend := c.StartProxy("frontend-1", namespace, "frontend", frontendPort,
		[]string{"api=" + strconv.Itoa(apiOut), "backend=" + strconv.Itoa(backendOut)})
	for _, a := range []*meshtest.Agent{api, backend1, backend2, frontend} {
		a.WaitReady(t)
	}
	apiURL := func(path string) string { return "http://127.0.0.1:" + strconv.Itoa(apiOut) + path }
	backendURL := func(path string) string { return "http://127.0.0.1:" + strconv.Itoa(backendOut) + path }
	proctest.Eventually(t, 20*time.Second, func() error {
		for _, u := range []string{apiURL("/ready"), backendURL("/ready")} {
			if code := send(t, http.MethodGet, u, nil).StatusCode; code != 200 {
				return fmt.Errorf("%s: %d", u, code)
			}
		}
		// Both backend instances in the frontend's endpoints: requests reach each.
		if backendApps[0].count("GET /ready") == 0 || backendApps[1].count("GET /ready") == 0 {
			return fmt.Errorf("backend instances reached: %d, %d", backendApps[0].count("GET /ready"), backendApps[1].count("GET /ready"))
		}
		return nil
	}, "the frontend reaches the api and both backend instances")

	t.Run("per-user limit keyed on a verified JWT claim", func(t *testing.T) {
		alice := bearer(token("alice"))
		if got := fmt.Sprint(statuses(t, 4, apiURL("/user/items"), alice)); got != "[200 200 200 429]" {
			t.Fatalf("alice: %s, want three allowed then 429", got)
		}
		resp := send(t, http.MethodGet, apiURL("/user/items"), alice)
		if resp.StatusCode != 429 || resp.Header.Get("x-ratelimit-service") != "api" || resp.Header.Get("x-ratelimit-limit") == "" {
			t.Errorf("limited answer %d, headers %v; want 429 naming the service with x-ratelimit-*", resp.StatusCode, resp.Header)
		}
		if got := fmt.Sprint(statuses(t, 3, apiURL("/user/items"), bearer(token("bob")))); got != "[200 200 200]" {
			t.Errorf("bob after alice was limited: %s, want his own three", got)
		}
		// Another path is not under the limit.
		if code := send(t, http.MethodGet, apiURL("/other"), alice).StatusCode; code != 200 {
			t.Errorf("alice on /other: %d", code)
		}
	})

	t.Run("a forged header or token never selects another caller's bucket", func(t *testing.T) {
		// Mallory tries to spend carol's bucket: tokens claiming to be carol's but signed with
		// another key (the provider's key id), unsigned, or not tokens at all; headers that
		// look like the attributes limits key on; and her own valid token with them.
		forger := authztest.NewKey(t, "ES256", "k1")
		forged := forger.Sign(t, authztest.Claims(issuer, "carol"), nil)
		unsigned := authztest.Unsigned(t, authztest.Claims(issuer, "carol"))
		mallory := token("mallory")
		for i, h := range []http.Header{
			bearer(forged), bearer(unsigned), {"Authorization": {"Bearer carol"}},
			{"Authorization": {"Bearer " + mallory}, "X-Forwarded-For": {"carol"}, "Sub": {"carol"}, "X-Jwt-Sub": {"carol"},
				"X-Portcullis-Verified": {`jwt:"` + issuer + `"carol`}, "Caller": {`jwt:"` + issuer + `"carol`}},
		} {
			want := http.StatusUnauthorized
			if h.Get("Authorization") == "Bearer "+mallory {
				want = http.StatusOK // her own bucket
			}
			for range 3 {
				if code := send(t, http.MethodGet, apiURL("/user/items"), h).StatusCode; code != want {
					t.Errorf("attempt %d: %d, want %d", i, code, want)
				}
			}
		}
		if got := fmt.Sprint(statuses(t, 4, apiURL("/user/items"), bearer(token("carol")))); got != "[200 200 200 429]" {
			t.Errorf("carol after the attempts: %s, want her own three then 429", got)
		}
		// The api's agent reports its Envoy's denials (what PortcullisAuthorizationDenialSpike
		// in deploy/prometheus reads): at least the nine 401s above.
		if n := sumSamples(t, "portcullis_proxy_authz_checks_total", `result="denied"`, `service="shop/api"`, api.Admin); n < 9 {
			t.Errorf("the api agent reports %d denied checks, want at least the 9 made", n)
		}
	})

	t.Run("unauthenticated requests are limited by client IP", func(t *testing.T) {
		// One trusted hop: the address the proxy in front appended is the client; what the
		// client wrote before it is not.
		xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
		if got := fmt.Sprint(statuses(t, 4, apiURL("/user/public"), xff("203.0.113.1"))); got != "[200 200 200 429]" {
			t.Errorf("203.0.113.1: %s, want three then 429", got)
		}
		if got := fmt.Sprint(statuses(t, 1, apiURL("/user/public"), xff("203.0.113.99, 203.0.113.1"))); got != "[429]" {
			t.Errorf("203.0.113.1 claiming to be forwarded for 203.0.113.99: %s, want its own bucket, empty", got)
		}
		if got := fmt.Sprint(statuses(t, 3, apiURL("/user/public"), xff("203.0.113.1, 203.0.113.2"))); got != "[200 200 200]" {
			t.Errorf("203.0.113.2 (with a forged entry in front): %s, want its own three", got)
		}
		// No trusted hop: X-Forwarded-For is ignored, every request is the frontend proxy's.
		for i, addr := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
			if code := send(t, http.MethodGet, apiURL("/peer"), xff(addr)).StatusCode; code != 200 {
				t.Errorf("request %d to /peer: %d", i, code)
			}
		}
		if got := fmt.Sprint(statuses(t, 1, apiURL("/peer"), xff("198.51.100.4"))); got != "[429]" {
			t.Errorf("a fourth X-Forwarded-For on /peer: %s, want 429 (one bucket: the peer's)", got)
		}
	})

	t.Run("a global limit holds across both backend proxies", func(t *testing.T) {
		before := [2]int{backendApps[0].count("GET /closed"), backendApps[1].count("GET /closed")}
		var allowed, limited atomic.Int32
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 15 {
					switch code := send(t, http.MethodGet, backendURL("/closed"), nil).StatusCode; code {
					case 200:
						allowed.Add(1)
					case 429:
						limited.Add(1)
					default:
						t.Errorf("status %d", code)
					}
				}
			})
		}
		wg.Wait()
		served := [2]int{backendApps[0].count("GET /closed") - before[0], backendApps[1].count("GET /closed") - before[1]}
		if allowed.Load() != globalQuota || limited.Load() != 60-globalQuota {
			t.Errorf("allowed %d, limited %d of 60; want exactly %d allowed across both proxies", allowed.Load(), limited.Load(), globalQuota)
		}
		if served[0] == 0 || served[1] == 0 || served[0]+served[1] != globalQuota {
			t.Errorf("the instances served %v; want both, %d in all", served, globalQuota)
		}
		// Keyed on the verified user, across both proxies.
		dave := bearer(token("dave"))
		if got := fmt.Sprint(statuses(t, 6, backendURL("/quota"), dave)); got != "[200 200 200 200 200 429]" {
			t.Errorf("dave: %s, want five then 429", got)
		}
		if got := fmt.Sprint(statuses(t, 1, backendURL("/quota"), bearer(token("erin")))); got != "[200]" {
			t.Errorf("erin after dave: %s", got)
		}
		// The backend proxies' agents report the 429s of the global limits.
		if n := sumSamples(t, "portcullis_proxy_rate_limited_total", `scope="global"`, `service="shop/backend"`, backend1.Admin, backend2.Admin); n != 60-globalQuota+1 {
			t.Errorf("the backend agents report %d requests over a global limit, want %d", n, 60-globalQuota+1)
		}
		// Nothing but the rate limit service's own calls touched Redis: one EVALSHA per
		// request under a global limit.
		if n, err := redis.Calls("evalsha"); err != nil || n < 60+6+1 {
			t.Errorf("EVALSHA calls %d (%v), want one per limited request", n, err)
		}
	})

	t.Run("Redis down: each policy's failure mode; Redis back: limits resume", func(t *testing.T) {
		// Unresponsive: calls time out.
		redis.Pause()
		hung := [2]string{fmt.Sprint(statuses(t, 2, backendURL("/closed"), nil)), fmt.Sprint(statuses(t, 2, backendURL("/open"), nil))}
		redis.Resume()
		if hung != [2]string{"[503 503]", "[200 200]"} {
			t.Errorf("Redis not answering: fail-closed %s, fail-open %s; want 503s and 200s", hung[0], hung[1])
		}
		// Stopped: connections refused.
		redis.Stop()
		if got := fmt.Sprint(statuses(t, 3, backendURL("/closed"), nil)); got != "[503 503 503]" {
			t.Errorf("fail-closed limit with Redis down: %s, want 503", got)
		}
		if got := fmt.Sprint(statuses(t, 3, backendURL("/open"), nil)); got != "[200 200 200]" {
			t.Errorf("fail-open limit with Redis down: %s, want 200", got)
		}
		metrics := get(t, "http://"+authzAdmin+"/metrics")
		if !hasSample(metrics, "portcullis_ratelimit_checks_total", `result="error"`, `service="shop/backend"`) {
			t.Errorf("the authorization service's metrics do not count the failures:\n%s", meshtest.GrepLines(metrics, "portcullis_ratelimit"))
		}
		if v := sampleValue(metrics, "portcullis_ratelimit_redis_up"); v != "0" {
			t.Errorf("portcullis_ratelimit_redis_up %q, want 0", v)
		}
		for _, mode := range []string{"closed", "open"} {
			if n := sumSamples(t, "portcullis_proxy_ratelimit_errors_total", `failure_mode="`+mode+`"`, `service="shop/backend"`, backend1.Admin, backend2.Admin); n < 5 {
				t.Errorf("the backend agents report %d failed calls for fail-%s limits, want the 5 made", n, mode)
			}
		}
		redis.Start()
		// A restarted Redis without persistence starts with full buckets (documented).
		proctest.Eventually(t, 15*time.Second, func() error {
			if code := send(t, http.MethodGet, backendURL("/closed"), nil).StatusCode; code != 200 {
				return fmt.Errorf("%d", code)
			}
			return nil
		}, "the fail-closed limit serves again once Redis is back")
		codes := statuses(t, globalQuota, backendURL("/closed"), nil)
		if codes[len(codes)-1] != 429 {
			t.Errorf("after Redis came back, %d more requests: %v; want the limit enforced again", globalQuota, codes)
		}
		if v := sampleValue(get(t, "http://"+authzAdmin+"/metrics"), "portcullis_ratelimit_redis_up"); v != "1" {
			t.Errorf("portcullis_ratelimit_redis_up %q, want 1", v)
		}
	})

	t.Run("CORS preflight and responses", func(t *testing.T) {
		before := apiApp.count("OPTIONS /user/items")
		pre := http.Header{"Origin": {appOrigin}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization"}}
		resp := send(t, http.MethodOptions, apiURL("/user/items"), pre)
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("Access-Control-Allow-Origin") != appOrigin || h.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") ||
			h.Get("Access-Control-Max-Age") != "600" {
			t.Errorf("preflight from %s: %d %v", appOrigin, resp.StatusCode, h)
		}
		other := http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"POST"}}
		if resp := send(t, http.MethodOptions, apiURL("/user/items"), other); resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from another origin allowed: %d %v", resp.StatusCode, resp.Header)
		}
		if n := apiApp.count("OPTIONS /user/items") - before; n != 0 {
			t.Errorf("the application saw %d preflights; Envoy answers them", n)
		}
		// Answers to the allowed origin carry the CORS headers — a 401 from authorization too,
		// so the page can read why.
		get := send(t, http.MethodGet, apiURL("/other"), http.Header{"Origin": {appOrigin}})
		bad := send(t, http.MethodGet, apiURL("/other"), http.Header{"Origin": {appOrigin}, "Authorization": {"Bearer not.a.token"}})
		if get.StatusCode != 200 || get.Header.Get("Access-Control-Allow-Origin") != appOrigin || bad.StatusCode != 401 || bad.Header.Get("Access-Control-Allow-Origin") != appOrigin {
			t.Errorf("GET %d %q; with a bad token %d %q; want 200 and 401, both allowing %s", get.StatusCode, get.Header.Get("Access-Control-Allow-Origin"),
				bad.StatusCode, bad.Header.Get("Access-Control-Allow-Origin"), appOrigin)
		}
		if resp := send(t, http.MethodGet, apiURL("/other"), http.Header{"Origin": {"https://evil.example"}}); resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("a GET from another origin allowed: %v", resp.Header)
		}
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	code, body, err := meshtest.Get(url)
	if err != nil || code != 200 {
		t.Fatalf("GET %s: %d %v", url, code, err)
	}
	return body
}

// hasSample reports whether a Prometheus exposition has a sample of metric with both label
// matchers ("" matches anything) and a value above zero.
func hasSample(text, metric, label1, label2 string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, metric+"{") && strings.Contains(l, label1) && strings.Contains(l, label2) && !strings.HasSuffix(l, " 0") {
			return true
		}
	}
	return false
}

// sumSamples adds up the samples of metric with both labels across the agents' /metrics.
func sumSamples(t *testing.T, metric, label1, label2 string, admins ...string) int {
	t.Helper()
	n := 0
	for _, a := range admins {
		for _, l := range strings.Split(get(t, "http://"+a+"/metrics"), "\n") {
			if strings.HasPrefix(l, metric+"{") && strings.Contains(l, label1) && strings.Contains(l, label2) {
				v, err := strconv.Atoi(l[strings.LastIndexByte(l, ' ')+1:])
				if err != nil {
					t.Fatalf("%s: %v", l, err)
				}
				n += v
			}
		}
	}
	return n
}

// sampleValue returns the value of the first sample of metric.
func sampleValue(text, metric string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, metric+"{") || strings.HasPrefix(l, metric+" ") {
			return l[strings.LastIndexByte(l, ' ')+1:]
		}
	}
	return ""
}
