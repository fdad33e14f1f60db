package policy

import (
	"context"
	"testing"

	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
)

// tenants is two tenants and the root namespace, written the way the attack on the mesh wrote
// them: tenant-a (the attacker) with a policy without a selector allowing everything and a
// provider of its own; tenant-b asking for any verified token; the root namespace with a
// provider and a DENY for every namespace.
var tenants = testmesh.Service("tenant-a", "backend") + testmesh.Service("tenant-b", "backend") +
	testmesh.Provider("tenant-a", "evil", "https://evil.test", "") +
	testmesh.Provider("tenant-b", "idp", "https://idp-b.test", "") +
	testmesh.Provider(testmesh.Root, "corp", "https://corp.test", "") +
	testmesh.PolicyIn("tenant-a", "open", "", "ALLOW", false, testmesh.RuleAnyone) +
	testmesh.PolicyIn("tenant-b", "users", "", "ALLOW", false, testmesh.RuleAnyJWT) +
	testmesh.PolicyIn(testmesh.Root, "no-admin", "", "DENY", false, "  - {name: admin, to: {paths: [\"/admin/*\"]}}")

func TestTenantIsolation(t *testing.T) {
	e := compile(t, testmesh.Build(t, tenants))
	cases := []struct {
		name      string
		namespace string // of the destination, service backend
		path      string
		provider  string // that verified the request's token; "" for none
		code      Code
		policy    string
	}{
		{"tenant-a's ALLOW-all opens tenant-a", "tenant-a", "/private", "", CodeAllowed, "tenant-a/open"},
		{"tenant-a's ALLOW-all does not open tenant-b", "tenant-b", "/private", "", CodeJWTRequired, "tenant-b/users"},
		{"tenant-a's ALLOW-all does not open a namespace without policies", "demo", "/private", "", CodeDeniedDefault, ""},
		{"tenant-a's token does not meet tenant-b's from.jwt: {}", "tenant-b", "/private", "tenant-a/evil", CodeDeniedDefault, ""},
		{"tenant-b's own token does", "tenant-b", "/private", "tenant-b/idp", CodeAllowed, "tenant-b/users"},
		{"the root namespace's token does", "tenant-b", "/private", testmesh.Root + "/corp", CodeAllowed, "tenant-b/users"},
		{"the root namespace's DENY applies in tenant-a", "tenant-a", "/admin/users", "", CodeDenied, testmesh.Root + "/no-admin"},
		{"the root namespace's DENY applies in tenant-b", "tenant-b", "/admin/users", testmesh.Root + "/corp", CodeDenied, testmesh.Root + "/no-admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := request(t)
			a.Destination.Namespace, a.Request.Path = tc.namespace, tc.path
			if tc.provider != "" {
				a.JWT = token(t, tc.provider, map[string]any{"iss": "https://any.test", "sub": "mallory"})
			}
			d := e.Decide(context.Background(), a)
			if d.Code != tc.code || d.Policy != tc.policy {
				t.Fatalf("decision %s by %q (%s), want %s by %q\n%s", d.Code, d.Policy, d.Reason, tc.code, tc.policy, traceText(e, a))
			}
		})
	}
}

// TestTraceNamesTheNamespace: a policy of another namespace is listed as not applying, with the
// namespace it applies to, and is not evaluated.
func TestTraceNamesTheNamespace(t *testing.T) {
	e := compile(t, testmesh.Build(t, tenants))
	a := request(t)
	a.Destination.Namespace = "tenant-b"
	by := map[string]Evaluation{}
	for _, p := range e.Trace(context.Background(), a) {
		by[p.Policy] = p
	}
	if p := by["tenant-a/open"]; p.Applies || p.Namespace != "tenant-a" || p.Rules != nil {
		t.Errorf("tenant-a/open = %+v, want not applying, for namespace tenant-a", p)
	}
	if p := by[testmesh.Root+"/no-admin"]; !p.Applies || p.Namespace != "" {
		t.Errorf("%s/no-admin = %+v, want applying mesh-wide", testmesh.Root, p)
	}
}
