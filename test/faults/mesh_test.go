package faults

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/examples/demoapp"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/loadgen"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
)

const (
	trustDomain = "faults.test"
	issuer      = "https://idp.faults.test"
	// svidTTL makes every agent rotate its SVID every 4 s (at half-life) for the whole suite,
	// under every other fault too.
	svidTTL = "8s"
)

var nodes = []string{"frontend-1.demo", "backend-1.demo", "backend-2.demo"}

// suite is the mesh the faults are injected into: a frontend proxy calling two backend
// instances, the authorization service with its agent, and an issuer serving a JWKS.
type suite struct {
	c        *meshtest.Cluster
	frontend *meshtest.Agent
	backends []*meshtest.Agent
	// backendApps are the backend instances' applications, in the order of backends.
	backendApps []*httptest.Server
	// backendEnvoys are the backend Envoys' admin addresses, for their counters.
	backendEnvoys []string
	frontendEnvoy string
	authzAgent    *meshtest.Agent
	authz         *proctest.Process
	authzAdmin    string
	decisions     string // the authorization service's decision log
	outbound      string // the frontend proxy's outbound listener, as the frontend app calls it
	client        *http.Client
	jwks          *jwksServer
	k1, k2        *authztest.Key

	frontendPort, backendPort int
	lines                     []string // one per fault, for the summary
}

func meshDoc(failureMode string) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: faults.test
  mtls: {mode: STRICT}
  authz: {failureMode: %s}
`, failureMode)
}

func (s *suite) jwtDoc() string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: %s
  algorithms: [ES256]
  jwks: {uri: %q}
`, issuer, s.jwks.url())
}

// policiesDoc lets the frontend read /api/*, and /jwt/* with a token of the issuer. The flip
// policies allow one of /flip/a and /flip/b and deny the other: flipped swaps them, in two
// documents changed at once, so a half-applied change would show as both denied.
func policiesDoc(flipped bool) string {
	allow, deny := "/flip/a", "/flip/b"
	if flipped {
		allow, deny = deny, allow
	}
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-api, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - name: frontend-reads
      from: {principals: ["spiffe://faults.test/ns/demo/sa/frontend"]}
      to: {methods: [GET], paths: ["/api/*"]}
    - name: signed-in
      from:
        principals: ["spiffe://faults.test/ns/demo/sa/frontend"]
        jwt: {providers: [idp]}
      to: {methods: [GET], paths: ["/jwt/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: flip-allow, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - name: open
      from: {principals: ["spiffe://faults.test/ns/demo/sa/frontend"]}
      to: {paths: [%q]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: flip-deny, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
    - name: closed
      to: {paths: [%q]}
`, allow, deny)
}

// rateLimitsDoc limits nothing the load sends; withProbe adds a limit of one request per
// instance on /api/limited, the change the restart fault makes after the restart.
func rateLimitsDoc(withProbe bool) string {
	doc := `apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: backend-limits, namespace: demo}
spec:
  selector: {service: backend}
  limits:
    - name: generous
      pathPrefix: /api/
      bucket: {maxTokens: 100000, tokensPerFill: 100000, fillInterval: 1s}
`
	if withProbe {
		doc += `    - name: probe
      pathPrefix: /api/limited
      bucket: {maxTokens: 1, fillInterval: 1h}
`
	}
	return doc
}

// newSuite starts the mesh and waits until a request passes through both proxies.
func newSuite(t *testing.T) *suite {
	c := meshtest.New(t, trustDomain)
	s := &suite{c: c, client: loadgen.NewClient(64), decisions: c.Work + "/decisions.log"}
	t.Cleanup(s.client.CloseIdleConnections)
	s.k1 = authztest.NewKey(t, "ES256", "k1")
	s.k2 = authztest.NewKey(t, "ES256", "k2")
	s.jwks = startJWKS(t, authztest.JWKS(s.k1))

	// Each backend instance has its own application. The first listens on the service's port;
	// the second on a port of its own, serving the service's port (--service-port), as two
	// instances on one machine must.
	for range 2 {
		app := httptest.NewServer(demoapp.Backend("backend"))
		t.Cleanup(app.Close)
		s.backendApps = append(s.backendApps, app)
	}
	frontendApp := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(frontendApp.Close)
	s.backendPort = appPort(s.backendApps[0])
	s.frontendPort = appPort(frontendApp)

	c.Write("mesh.yaml", meshDoc("CLOSED"))
	c.Write("services.yaml", meshtest.ServicesDoc("demo", s.frontendPort, s.backendPort))
	c.Write("jwt.yaml", s.jwtDoc())
	c.Write("policies.yaml", policiesDoc(false))
	c.Write("ratelimits.yaml", rateLimitsDoc(false))
	c.StartControlPlane("--svid-ttl", svidTTL)

	s.authzAgent = c.StartAgent("authz-agent", "portcullis-system", "authz")
	s.authzAgent.WaitReady(t)
	s.startAuthz()
	outbound := proctest.FreePort(t)
	s.outbound = "http://127.0.0.1:" + strconv.Itoa(outbound)
	for i := range 2 {
		admin := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
		s.backends = append(s.backends, c.StartProxy("backend-"+strconv.Itoa(i+1), "demo", "backend", appPort(s.backendApps[i]), nil,
			"--service-port", strconv.Itoa(s.backendPort), "--envoy-admin-addr", admin))
		s.backendEnvoys = append(s.backendEnvoys, admin)
	}
	s.frontendEnvoy = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	s.frontend = c.StartProxy("frontend-1", "demo", "frontend", s.frontendPort, []string{"backend=" + strconv.Itoa(outbound)}, "--envoy-admin-addr", s.frontendEnvoy)
	for _, a := range append([]*meshtest.Agent{s.frontend}, s.backends...) {
		a.WaitReady(t)
	}
	proctest.Eventually(t, 30*time.Second, func() error { return c.Synced(nodes...) }, "every proxy synced")
	proctest.Eventually(t, 10*time.Second, func() error {
		// Both instances in the frontend's endpoints: two requests in a row reach both.
		code, _, err := meshtest.Get(s.outbound + "/api/ready")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return s.endpoints(2)
	}, "frontend → backend through both proxies")
	return s
}

func (s *suite) startAuthz() {
	s.authz, s.authzAdmin = s.c.StartAuthz(s.authzAgent, "--decision-log", s.decisions)
}

// endpoints checks that the control plane gives the frontend n backend endpoints.
func (s *suite) endpoints(n int) error {
	cfg := s.c.Portcullis("proxy", "config", "frontend-1.demo", "--admin-addr", s.c.CPAdmin)
	got := 0
	for _, b := range s.backends {
		if b != nil && containsPortOf(cfg, b) {
			got++
		}
	}
	if got != n {
		return fmt.Errorf("%d backend endpoints in the frontend's configuration, want %d", got, n)
	}
	return nil
}

// jwksServer serves a key set on a fixed loopback port; it can hang (accept and never answer,
// the worst kind of down) and come back with other keys.
type jwksServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	jwks    string
	hanging bool
	release chan struct{} // closed when a hang ends
}

func startJWKS(t *testing.T, jwks string) *jwksServer {
	j := &jwksServer{jwks: jwks, release: make(chan struct{})}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.mu.Lock()
		body, hanging, release := j.jwks, j.hanging, j.release
		j.mu.Unlock()
		if hanging {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(func() {
		j.up("") // release hung requests, or Close waits for them
		j.srv.Close()
	})
	return j
}

func (j *jwksServer) url() string { return j.srv.URL + "/keys" }

func (j *jwksServer) hang() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.hanging = true
}

// up serves jwks again, answering nothing to the requests that hung.
func (j *jwksServer) up(jwks string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.jwks = jwks
	if j.hanging {
		j.hanging = false
		close(j.release)
		j.release = make(chan struct{})
	}
}

// envoyCounter sums a counter (by its name's suffix) over the Envoys at admins.
func envoyCounter(t *testing.T, admins []string, suffix string) int {
	t.Helper()
	total := 0
	for _, admin := range admins {
		_, body, err := meshtest.Get("http://" + admin + "/stats?filter=" + suffix + "$")
		if err != nil {
			t.Fatalf("envoy stats: %v", err)
		}
		for _, l := range strings.Split(body, "\n") {
			if name, v, ok := strings.Cut(l, ": "); ok && strings.HasSuffix(name, suffix) {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("envoy stat %q: %v", l, err)
				}
				total += n
			}
		}
	}
	return total
}

func appPort(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }
