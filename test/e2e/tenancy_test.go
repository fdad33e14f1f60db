package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis/portcullis/examples/demoapp"
	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/meshtest"
	"github.com/portcullis/portcullis/test/proctest"
)

// tenancyDocs are two tenants and the root namespace (the default, portcullis-system), written
// the way the attack on the mesh wrote them. tenant-a is the attacker: a policy without a
// selector allowing everything, a provider of its own for Authorization: Bearer, and one reading
// a header every client sends. tenant-b asks for any verified token on /api/* and lets anyone
// read /public/*. The root namespace denies /admin/* everywhere and has a provider, reading its
// own header, for every destination.
const tenancyDocs = `apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: evil, namespace: tenant-a}
spec:
  issuer: https://evil.e2e.test
  jwks: {file: jwks.json}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: agent, namespace: tenant-a}
spec:
  issuer: https://agent.e2e.test
  fromHeaders: [{name: user-agent}]
  jwks: {file: jwks.json}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: corp, namespace: portcullis-system}
spec:
  issuer: https://corp.e2e.test
  fromHeaders: [{name: x-corp-token}]
  jwks: {file: jwks.json}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: open, namespace: tenant-a}
spec:
  action: ALLOW
  rules: [{}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: users, namespace: tenant-b}
spec:
  action: ALLOW
  rules:
    - name: signed-in
      from: {jwt: {}}
      to: {paths: ["/api/*"]}
    - name: public
      to: {paths: ["/public/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: portcullis-system}
spec:
  action: DENY
  rules:
    - name: admin
      to: {paths: ["/admin/*"]}
`

// TestTenantsThroughEnvoy: the attacks on tenant isolation, through real Envoys and the
// authorization service in its own process. A frontend of tenant-a calls tenant-a's backend and
// tenant-b's; tenant-a's documents govern tenant-a alone, the root namespace's every tenant.
func TestTenantsThroughEnvoy(t *testing.T) {
	c := meshtest.New(t, trustDomain)
	key := authztest.NewKey(t, "ES256", "k1")
	if err := os.WriteFile(filepath.Join(c.ConfigDir, "jwks.json"), []byte(authztest.JWKS(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	backendA := httptest.NewServer(demoapp.Backend("backend-a"))
	t.Cleanup(backendA.Close)
	backendB := httptest.NewServer(demoapp.Backend("backend-b"))
	t.Cleanup(backendB.Close)
	frontendApp := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(frontendApp.Close)
	port := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

	c.Write("mesh.yaml", meshDoc)
	c.Write("services.yaml", meshtest.ServicesDoc("tenant-a", port(frontendApp), port(backendA))+fmt.Sprintf(`---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: tenant-b}
spec: {ports: [{name: http, port: %d}]}
`, port(backendB)))
	c.Write("tenancy.yaml", tenancyDocs)
	c.StartControlPlane()
	authzAgent := c.StartAgent("authz-agent", "portcullis-system", "authz")
	authzAgent.WaitReady(t)
	c.StartAuthz(authzAgent)

	toA, toB := proctest.FreePort(t), proctest.FreePort(t)
	agents := []*meshtest.Agent{
		c.StartProxy("backend-a-1", "tenant-a", "backend", port(backendA), nil),
		c.StartProxy("backend-b-1", "tenant-b", "backend", port(backendB), nil),
		c.StartProxy("frontend-a-1", "tenant-a", "frontend", port(frontendApp),
			[]string{"backend=" + strconv.Itoa(toA), "backend.tenant-b=" + strconv.Itoa(toB)}),
	}
	for _, a := range agents {
		a.WaitReady(t)
	}
	url := func(to int, path string) string { return "http://127.0.0.1:" + strconv.Itoa(to) + path }
	// No User-Agent unless a case sets one: tenant-a's own provider reads it.
	get := func(to int, path string, kv ...string) (int, error) {
		h := http.Header{"User-Agent": {""}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		code, _, err := meshtest.Do(http.MethodGet, url(to, path), h)
		return code, err
	}
	proctest.Eventually(t, 10*time.Second, func() error {
		for _, to := range []int{toA, toB} {
			if code, err := get(to, "/public/ready"); err != nil || code == 503 {
				return fmt.Errorf("%d %v", code, err)
			}
		}
		return nil
	}, "both backends reachable through the frontend's proxy")

	evil := key.Sign(t, authztest.Claims("https://evil.e2e.test", "mallory"), nil)
	corp := key.Sign(t, authztest.Claims("https://corp.e2e.test", "alice"), nil)
	for _, tc := range []struct {
		name string
		to   int
		path string
		kv   []string // headers
		want int
	}{
		{"tenant-a's ALLOW-all opens tenant-a", toA, "/private", nil, 200},
		{"tenant-a's ALLOW-all does not open tenant-b", toB, "/private", nil, 403},
		{"tenant-a's token verifies in tenant-a", toA, "/private", []string{"Authorization", "Bearer " + evil}, 200},
		{"tenant-a's token does not meet tenant-b's from.jwt: {}", toB, "/api/items", []string{"Authorization", "Bearer " + evil}, 401},
		{"the root namespace's provider verifies in tenant-b", toB, "/api/items", []string{"X-Corp-Token", corp}, 200},
		{"tenant-a's user-agent provider refuses tenant-a's requests", toA, "/private", []string{"User-Agent", "curl/8.5.0"}, 401},
		{"tenant-a's user-agent provider does not touch tenant-b's", toB, "/public/page", []string{"User-Agent", "curl/8.5.0"}, 200},
		{"an opaque Bearer credential tenant-a's provider refuses in tenant-a", toA, "/private", []string{"Authorization", "Bearer opaque-api-key"}, 401},
		{"the same credential reaches tenant-b's policies", toB, "/public/page", []string{"Authorization", "Bearer opaque-api-key"}, 200},
		{"the root namespace's DENY applies in tenant-a", toA, "/admin/users", nil, 403},
		{"the root namespace's DENY applies in tenant-b", toB, "/admin/users", []string{"X-Corp-Token", corp}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, err := get(tc.to, tc.path, tc.kv...)
			if err != nil || code != tc.want {
				t.Errorf("GET %s: %d %v, want %d", tc.path, code, err, tc.want)
			}
		})
	}
}
