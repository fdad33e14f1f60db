package attack

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
)

const (
	trustDomain = "attack.test"
	issuer      = "https://idp.attack.test"
)

var (
	td          = spiffeid.RequireTrustDomainFromString(trustDomain)
	backendID   = spiffeid.RequireFromString("spiffe://attack.test/ns/demo/sa/backend")
	frontendID  = spiffeid.RequireFromString("spiffe://attack.test/ns/demo/sa/frontend")
	malloryID   = spiffeid.RequireFromString("spiffe://attack.test/ns/demo/sa/mallory")
	controlPlID = ca.ControlPlaneID(td)
)

const meshDoc = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: attack.test
  mtls: {mode: STRICT}
`

// policiesDoc is what the attacks try to get past. The frontend may call /api/* of the backend;
// DELETE, x-debug: 1 and /admin/* are denied whatever else allows; /jwt/* needs a token whose
// nested realm_access.roles has admin; a Rego module fails closed when its budget runs out.
func policiesDoc(jwks string) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: %[1]s
  audiences: [backend]
  jwks: {inline: '%[2]s'}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - name: frontend-api
      from: {principals: ["spiffe://attack.test/ns/demo/sa/frontend"]}
      to: {paths: ["/api/*"]}
    - name: jwt-admins
      from: {jwt: {providers: [idp], claims: [{claim: realm_access.roles, contains: admin}]}}
      to: {paths: ["/jwt/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny-delete, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
    - name: no-delete
      to: {methods: [DELETE]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny-debug, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
    - name: no-debug
      when: [{header: x-debug, equals: "1"}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny-admin, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
    - name: no-admin
      to: {paths: ["/admin/*", "/api/admin/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-rego-bomb, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rego:
    module: |
      package bomb

      match if {
        input.request.headerValues["x-bomb"]
        count([x | some x in numbers.range(1, 100000000)]) > 0
      }
`, issuer, jwks)
}

// servicesDoc adds the attacker's second identity, mallory, to the two-tier mesh.
func servicesDoc(frontendPort, backendPort, malloryPort int) string {
	return meshtest.ServicesDoc("demo", frontendPort, backendPort) + fmt.Sprintf(`---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: mallory, namespace: demo}
spec: {ports: [{name: http, port: %d}]}
`, malloryPort)
}

// seen is one request as the backend application received it.
type seen struct {
	method string
	path   string
	header http.Header
}

// recorder is the backend application: it answers 200 and remembers every request.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, seen{req.Method, req.URL.Path, req.Header.Clone()})
	r.mu.Unlock()
	fmt.Fprint(w, "ok")
}

// got returns the requests the application saw for a path.
func (r *recorder) got(path string) []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []seen
	for _, s := range r.reqs {
		if s.path == path {
			out = append(out, s)
		}
	}
	return out
}

// env is the mesh under attack and what the attacker holds.
type env struct {
	t           *testing.T
	c           *meshtest.Cluster
	app         *recorder
	backend     *meshtest.Agent
	envoyAdmin  string                  // the backend's Envoy
	frontend    *workloadapi.X509Source // the compromised workload's SVID
	mallory     *workloadapi.X509Source // a second workload, revoked during the suite
	malloryPort int
	frontPort   int
	jwtKey      *authztest.Key
	decisionLog string
	secrets     []string            // what must appear in no log and no debug page
	logs        []*proctest.Process // every process started, for their logs
	agents      []*meshtest.Agent
	http1       *http.Client
	http2       *http.Client
}

func newEnv(t *testing.T) *env {
	c := meshtest.New(t, trustDomain)
	e := &env{t: t, c: c, app: &recorder{}, jwtKey: authztest.NewKey(t, "ES256", "k1")}
	app := httptest.NewServer(e.app)
	t.Cleanup(app.Close)
	backendPort := app.Listener.Addr().(*net.TCPAddr).Port
	e.frontPort, e.malloryPort = proctest.FreePort(t), proctest.FreePort(t)

	c.Write("mesh.yaml", meshDoc)
	c.Write("services.yaml", servicesDoc(e.frontPort, backendPort, e.malloryPort))
	c.Write("policies.yaml", policiesDoc(authztest.JWKS(e.jwtKey)))
	// The decision log exists already, world-readable: the control plane must tighten it.
	e.decisionLog = filepath.Join(c.Work, "decisions.log")
	if err := os.WriteFile(e.decisionLog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.StartControlPlaneWithAuthz("--decision-log", e.decisionLog)

	e.envoyAdmin = "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))
	e.backend = c.StartProxy("backend-1", "demo", "backend", backendPort, nil, "--envoy-admin-addr", e.envoyAdmin)
	front := c.StartAgent("frontend-1", "demo", "frontend")
	mallory := c.StartAgent("mallory-1", "demo", "mallory")
	e.agents = []*meshtest.Agent{e.backend, front, mallory}
	for _, a := range e.agents {
		a.WaitReady(t)
		e.logs = append(e.logs, a.P)
	}
	e.frontend = svidSource(t, front)
	e.mallory = svidSource(t, mallory)

	tlsFor := func(protos ...string) *tls.Config {
		cfg := tlsconfig.MTLSClientConfig(e.frontend, e.frontend, tlsconfig.AuthorizeID(backendID))
		cfg.NextProtos = protos
		return cfg
	}
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetHTTP2(true)
	e.http1 = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsFor("http/1.1"), Protocols: &h1, DisableKeepAlives: true}}
	e.http2 = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsFor("h2"), Protocols: &h2}}
	t.Cleanup(e.http1.CloseIdleConnections)
	t.Cleanup(e.http2.CloseIdleConnections)
	// The mesh is up when the frontend reaches the backend through its Envoy.
	proctest.Eventually(t, 30*time.Second, func() error {
		code, _, err := e.do(e.http2, "GET", "/api/ready", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	}, "the frontend reaching the backend through Envoy")
	return e
}

// svidSource is the Workload API of an agent: what a process beside it holds.
func svidSource(t *testing.T, a *meshtest.Agent) *workloadapi.X509Source {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+a.Sockets+"/workload.sock")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// backendURL is a path on the backend's inbound listener.
func (e *env) backendURL(path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", e.backend.Inbound, path)
}

// do sends a request to the backend's inbound listener as the frontend and returns the status
// and body.
func (e *env) do(c *http.Client, method, path string, header http.Header) (int, string, error) {
	req, err := http.NewRequestWithContext(context.Background(), method, e.backendURL(path), nil)
	if err != nil {
		return 0, "", err
	}
	for k, vs := range header {
		req.Header[k] = slices.Clone(vs)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String(), nil
}

// status describes a response for the report.
func status(code int, body string, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if body = strings.TrimSpace(body); body != "" {
		return fmt.Sprintf("%d %s", code, body)
	}
	return fmt.Sprint(code)
}
