package e2e

import (
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
	_, authzAdmin := c.StartAuthz(authzAgent)

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

	t.Run("revocations", func(t *testing.T) { revokeAcrossTenants(t, c, authzAdmin, key, get, toA, toB) })
}

// revokeAcrossTenants runs `portcullis revoke` on the mesh directory the authorization service
// watches. tenant-a revokes a token of its own provider, which is refused at tenant-a within 2 s,
// and tries to revoke a token of the root namespace's provider, which does nothing; the root
// namespace's list then revokes that token at every tenant.
func revokeAcrossTenants(t *testing.T, c *meshtest.Cluster, authzAdmin string, key *authztest.Key, get func(int, string, ...string) (int, error), toA, toB int) {
	tokenFile := func(iss, sub, jti string) (string, string) {
		claims := authztest.Claims(iss, sub)
		claims["jti"] = jti
		tok := key.Sign(t, claims, nil)
		f := filepath.Join(c.Work, jti+".jwt")
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return tok, f
	}
	evil, evilFile := tokenFile("https://evil.e2e.test", "mallory", "evil-1")
	corp, corpFile := tokenFile("https://corp.e2e.test", "alice", "corp-1")
	refusedWithin := func(what string, f func() error) {
		t.Helper()
		took := proctest.Eventually(t, 2*time.Second, f, what)
		t.Logf("%s after %s", what, took.Round(time.Millisecond))
	}
	status := func(want, to int, path string, kv ...string) func() error {
		return func() error {
			if code, err := get(to, path, kv...); err != nil || code != want {
				return fmt.Errorf("GET %s: %d %v, want %d", path, code, err, want)
			}
			return nil
		}
	}

	tenantList := filepath.Join(c.ConfigDir, "tenant-a-revocations.yaml")
	c.Portcullis("revoke", "jwt", "--file", tenantList, "--namespace", "tenant-a", "--token-file", evilFile, "--reason", "e2e")
	refusedWithin("tenant-a's revoked token refused at tenant-a", status(401, toA, "/private", "Authorization", "Bearer "+evil))
	out := c.Portcullis("revoke", "jwt", "--file", tenantList, "--token-file", corpFile)
	if !strings.Contains(out, `warning: no JWTProvider of namespace "tenant-a" has issuer "https://corp.e2e.test"`) {
		t.Errorf("no warning that tenant-a's entry revokes nothing:\n%s", out)
	}
	// Once the authorization service has loaded tenant-a's second entry, it does nothing: the
	// token is the root namespace's provider's, at tenant-a and at tenant-b.
	proctest.Eventually(t, 2*time.Second, func() error {
		_, body, err := meshtest.Get("http://" + authzAdmin + "/debug/authz")
		var st struct{ Revocations int }
		if err == nil {
			err = json.Unmarshal([]byte(body), &st)
		}
		if err != nil || st.Revocations != 2 {
			return fmt.Errorf("/debug/authz: %d revocations (%v), want 2", st.Revocations, err)
		}
		return nil
	}, "the authorization service loading tenant-a's second entry")
	for _, check := range []func() error{status(200, toA, "/private", "X-Corp-Token", corp), status(200, toB, "/api/items", "X-Corp-Token", corp)} {
		if err := check(); err != nil {
			t.Errorf("tenant-a revoked the root provider's token: %v", err)
		}
	}

	c.Portcullis("revoke", "jwt", "--file", filepath.Join(c.ConfigDir, "revocations.yaml"), "--token-file", corpFile)
	refusedWithin("the root namespace's revocation refused at tenant-b", status(401, toB, "/api/items", "X-Corp-Token", corp))
	if err := status(401, toA, "/private", "X-Corp-Token", corp)(); err != nil {
		t.Errorf("the root namespace's revocation at tenant-a: %v", err)
	}
	list := c.Portcullis("revoke", "list", "--file", tenantList)
	if strings.Count(list, " live ") != 2 {
		t.Errorf("revoke list:\n%s", list)
	}
}
