package datapath

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/procstat"
	"github.com/portcullis/portcullis/test/proctest"
)

const (
	trustDomain = "bench.test"
	namespace   = "bench"
	issuer      = "https://idp.bench.test"
	path        = "/api/items"
)

// meshDoc is the Mesh document with authorization mode ENFORCE or OFF and the engine deciding
// where policies are evaluated (auto: Envoy's RBAC where it can; extAuthz: the service). OFF is
// quoted: YAML 1.1 readers take a bare OFF for false.
func meshDoc(authzMode, engine string) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: %s
  mtls: {mode: STRICT}
  authz: {mode: %q, engine: %s}
`, trustDomain, authzMode, engine)
}

// abacRules is how many rules the ABAC policy has (issue 16 compares paths with a 50-rule
// policy); only the last admits the benchmark's requests, so every request tries them all.
const abacRules = 50

// abacPolicy admits the frontend's SPIFFE ID carrying a valid token whose tier claim is gold
// (ABAC on a claim) to GET /api/*, after abacRules-1 rules for other callers, paths and tiers.
// Without jwt, the same rules without their token conditions: what Envoy's RBAC can decide.
func abacPolicy(jwt bool) string {
	var rules strings.Builder
	for i := 1; i < abacRules; i++ {
		fmt.Fprintf(&rules, `    - name: client-%[1]d
      from:
        principals: ["spiffe://bench.test/ns/bench/sa/client-%[1]d"]
`, i)
		if jwt {
			fmt.Fprintf(&rules, `        jwt:
          providers: [idp]
          claims: [{claim: tier, equals: gold-%[1]d}]
`, i)
		}
		fmt.Fprintf(&rules, "      to: {methods: [GET, POST], paths: [\"/v%d/*\"]}\n", i)
	}
	last := `    - name: frontend-gold-users
      from:
        principals: ["spiffe://bench.test/ns/bench/sa/frontend"]
`
	if jwt {
		last += `        jwt:
          providers: [idp]
          claims: [{claim: tier, equals: gold}]
`
	}
	return `apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow, namespace: bench}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
` + rules.String() + last + `      to: {methods: [GET], paths: ["/api/*"]}
`
}

// regoPolicy decides what the ABAC policy's matching rule does, in Rego (the PBAC path: the
// same input document, evaluated by OPA in the authorization service).
const regoPolicy = `apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow, namespace: bench}
spec:
  selector: {service: backend}
  action: ALLOW
  rego:
    module: |
      package bench.backend

      default match := false

      match if {
        input.source.principal == "spiffe://bench.test/ns/bench/sa/frontend"
        input.request.method == "GET"
        startswith(input.request.path, "/api/")
        input.jwt.claims.tier == "gold"
      }
`

// policies are the benchmark's documents with the JWT + ABAC policy.
func (m *mesh) policies() string { return m.policyDocs(abacPolicy(true)) }

// abacOnly are the ABAC policy without tokens and the rate limit, and no JWTProvider: the cost
// of the rules without the token's.
func (m *mesh) abacOnly() string {
	docs := m.policyDocs(abacPolicy(false))
	return docs[strings.Index(docs, "---\n")+len("---\n"):]
}

// policyDocs are the JWT provider (its keys inline: Envoy verifies tokens only with keys the
// control plane can give it, engine auto), the given authorization policy and a rate limit on
// the service with a bucket a hundred times the largest load, so the filter runs on every
// request and never refuses one. The RateLimitPolicy comes last: BenchmarkPerUserLimit appends
// a limit.
func (m *mesh) policyDocs(authz string) string {
	return `apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: bench}
spec:
  issuer: ` + issuer + `
  algorithms: [ES256]
  jwks: {inline: '` + m.jwks + `'}
---
` + authz + `---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: backend-limit, namespace: bench}
spec:
  selector: {service: backend}
  limits:
    - name: service
      bucket: {maxTokens: 1000000, fillInterval: 1s}
`
}

// app is the backend application: a fixed small answer, so the application itself costs little
// and the figures are the mesh's. It runs in the benchmark process, as does the load generator;
// both the direct and the mesh runs pay for that alike.
var app = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
})

// mesh is one running benchmark mesh.
type mesh struct {
	c        *meshtest.Cluster
	appURL   string // the backend application, directly
	appPort  int
	meshURL  string   // the frontend's outbound listener for the backend
	jwks     string   // the provider's keys
	token    string   // a token the policy admits
	silver   string   // a valid token the ABAC condition refuses
	procs    []proc   // what CPU and memory are reported of
	envoys   []string // the Envoys' admin addresses
	stoppers []func()
}

// startMesh starts the mesh with authorization ENFORCE and waits until a request passes.
func startMesh(b *testing.B) *mesh {
	b.Helper()
	m := &mesh{c: meshtest.New(b, trustDomain)}
	idp := authztest.NewKey(b, "ES256", "k1")
	m.jwks = authztest.JWKS(idp)
	claims := func(tier string) map[string]any {
		c := authztest.Claims(issuer, "alice")
		c["tier"] = tier
		return c
	}
	m.token, m.silver = idp.Sign(b, claims("gold"), nil), idp.Sign(b, claims("silver"), nil)

	backendApp := httptest.NewServer(app)
	frontendApp := httptest.NewServer(http.NotFoundHandler()) // the frontend proxy needs an app; nothing calls it
	m.stoppers = append(m.stoppers, backendApp.Close, frontendApp.Close)
	m.appURL = backendApp.URL + path
	backendPort, frontendPort := backendApp.Listener.Addr().(*net.TCPAddr).Port, frontendApp.Listener.Addr().(*net.TCPAddr).Port
	m.appPort = backendPort

	m.c.Write("mesh.yaml", meshDoc("ENFORCE", "extAuthz"))
	m.c.Write("services.yaml", meshtest.ServicesDoc(namespace, frontendPort, backendPort))
	m.c.Write("policies.yaml", m.policies())
	m.c.StartControlPlane()
	m.stop(m.c.CP)
	authzAgent := m.c.StartAgent("authz-agent", "portcullis-system", "authz")
	m.stop(authzAgent.P)
	authzAgent.WaitReady(b)
	authz, _ := m.c.StartAuthz(authzAgent)
	m.stop(authz)

	outbound := proctest.FreePort(b)
	// Envoy runs with the agent's default of 2 worker threads, as Istio's sidecars do in the
	// benchmark this one is compared with.
	m.envoys = []string{"127.0.0.1:" + strconv.Itoa(proctest.FreePort(b)), "127.0.0.1:" + strconv.Itoa(proctest.FreePort(b))}
	backend := m.c.StartProxy("backend-1", namespace, "backend", backendPort, nil, "--envoy-admin-addr", m.envoys[0])
	m.stop(backend.P)
	frontend := m.c.StartProxy("frontend-1", namespace, "frontend", frontendPort, []string{"backend=" + strconv.Itoa(outbound)},
		"--envoy-admin-addr", m.envoys[1])
	m.stop(frontend.P)
	backend.WaitReady(b)
	frontend.WaitReady(b)
	m.meshURL = "http://127.0.0.1:" + strconv.Itoa(outbound) + path

	envoyOf := func(a *meshtest.Agent) int {
		pid, err := procstat.ChildOf(a.P.Pid(), "envoy")
		if err != nil {
			b.Fatalf("the Envoy of %s: %v", a.P.Name, err)
		}
		return pid
	}
	m.procs = []proc{
		{"frontend-envoy", envoyOf(frontend)},
		{"backend-envoy", envoyOf(backend)},
		{"frontend-agent", frontend.P.Pid()},
		{"backend-agent", backend.P.Pid()},
		{"controlplane", m.c.CP.Pid()},
		{"authz", authz.Pid()},
		{"authz-agent", authzAgent.P.Pid()},
	}

	// EDS may still be converging just after readiness.
	proctest.Eventually(b, 20*time.Second, func() error {
		return m.expect(m.token, http.StatusOK)
	}, "a request with a gold token through both proxies")
	// The check is not vacuous: without a token, or with one the ABAC condition refuses, the
	// same request is denied.
	for _, c := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {m.silver, http.StatusForbidden}} {
		if err := m.expect(c.token, c.want); err != nil {
			b.Fatal(err)
		}
	}
	return m
}

// stop registers a process to stop when the iteration ends (not only when the benchmark does,
// so iterations never overlap).
func (m *mesh) stop(p *proctest.Process) { m.stoppers = append(m.stoppers, p.Stop) }

// close stops every process and server, the last started first.
func (m *mesh) close() {
	for _, f := range slices.Backward(m.stoppers) {
		f()
	}
}

// expect sends one request through the mesh with token (none when empty) and checks its status.
func (m *mesh) expect(token string, want int) error { return m.expectAt(path, token, want) }

// expectAt is expect for another path of the backend.
func (m *mesh) expectAt(p, token string, want int) error {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	code, body, err := meshtest.Do(http.MethodGet, strings.TrimSuffix(m.meshURL, path)+p, h)
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("GET %s with token %t: %d %q, want %d", p, token != "", code, body, want)
	}
	return nil
}

// want is a request's expected answer: with token (none when empty) to path (the benchmark's
// when empty), status.
type want struct {
	token  string
	status int
	path   string
}

// apply writes the Mesh with authorization mode and the policy documents, and waits until both
// proxies have ACKed them and every request of wants gets its status. The changes are in the
// backend's routes and ECDS, which Envoy applies to the next request on every connection, so
// every request measured after it has them.
func (m *mesh) apply(b *testing.B, mode, engine, docs string, wants ...want) {
	b.Helper()
	m.c.Write("mesh.yaml", meshDoc(mode, engine))
	m.c.Write("policies.yaml", docs)
	proctest.Eventually(b, 30*time.Second, func() error {
		for _, w := range wants {
			if err := m.expectAt(cmp.Or(w.path, path), w.token, w.status); err != nil {
				return err
			}
		}
		return m.c.Synced("backend-1."+namespace, "frontend-1."+namespace)
	}, "the configuration in both proxies")
}

// applyEnforced puts policy documents in place with authorization on under an engine, and waits
// until the proxies have them: a path no rule admits is refused, and a request with the token
// is admitted and decided by the backend Envoy's RBAC filters (http.inbound.rbac.deny.* counts
// it) exactly when inEnvoy.
func (m *mesh) applyEnforced(b *testing.B, engine, docs string, inEnvoy bool) {
	b.Helper()
	m.c.Write("mesh.yaml", meshDoc("ENFORCE", engine))
	m.c.Write("policies.yaml", docs)
	const rbac = `http\.inbound\.rbac\.deny\.(allowed|denied)$`
	proctest.Eventually(b, 30*time.Second, func() error {
		if err := m.expectAt("/outside", "", http.StatusForbidden); err != nil {
			return err
		}
		before, err := m.backendCounter(rbac)
		if err != nil {
			return err
		}
		if err := m.expect(m.token, http.StatusOK); err != nil {
			return err
		}
		after, err := m.backendCounter(rbac)
		if err != nil {
			return err
		}
		if decided := after > before; decided != inEnvoy {
			return fmt.Errorf("engine %s: the request decided by Envoy's RBAC: %v", engine, decided)
		}
		return m.c.Synced("backend-1."+namespace, "frontend-1."+namespace)
	}, "the policies under engine "+engine+" in both proxies")
}
