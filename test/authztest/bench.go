package authztest

import (
	"fmt"
	"strings"
)

// The benchmark policy: 50 ABAC rules, each naming a caller, methods, a path prefix, a role claim
// and a tenant header, plus a 3-rule DENY policy evaluated first. BenchPrincipal, BenchMethod,
// BenchPath, BenchRole and BenchTenant make a request that only the last rule allows, so every
// rule is evaluated: the worst case. The same rules are also written in Rego, twice: as a module
// for our engine's PBAC path, and as a plain OPA ext_authz policy over Envoy's CheckRequest.
const (
	BenchRules     = 50
	BenchIssuer    = "https://idp.test"
	BenchAudience  = "backend"
	BenchPrincipal = "spiffe://portcullis.local/ns/demo/sa/svc9"
	BenchMethod    = "PUT"
	BenchPath      = "/api/v1/res49/items/7"
	BenchRole      = "role4"
	BenchTenant    = "shared"
)

type benchRule struct {
	principal string
	methods   []string
	prefix    string
	role      string
	tenants   []string
}

func benchRules() []benchRule {
	rules := make([]benchRule, BenchRules)
	for i := range rules {
		methods := []string{"GET", "POST"}
		if i%2 == 1 {
			methods = []string{"PUT", "DELETE"}
		}
		rules[i] = benchRule{
			principal: fmt.Sprintf("spiffe://portcullis.local/ns/demo/sa/svc%d", i%10),
			methods:   methods,
			prefix:    fmt.Sprintf("/api/v1/res%d/", i),
			role:      fmt.Sprintf("role%d", i%5),
			tenants:   []string{fmt.Sprintf("t%d", i%3), "shared"},
		}
	}
	return rules
}

// BenchMesh returns the mesh documents: Mesh, Service demo/backend, JWTProvider demo/idp with
// the given inline JWKS, the DENY policy and the 50-rule ALLOW policy. With rego set, the ALLOW
// policy carries the rules as a Rego module instead of ABAC rules.
func BenchMesh(jwks string, rego bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: portcullis.local}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: %s
  audiences: [%s]
  jwks: {inline: '%s'}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-deny, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules:
  - {name: no-debug, to: {paths: ["/debug/*"]}}
  - {name: no-admin-from-outside, from: {notNamespaces: [demo]}, to: {paths: ["/admin/*"]}}
  - {name: no-blocked-tenant, when: [{header: x-tenant, equals: blocked}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-allow, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
`, BenchIssuer, BenchAudience, jwks)
	if rego {
		b.WriteString("  rego:\n    module: |\n")
		for _, line := range strings.Split(BenchRegoModule(), "\n") {
			b.WriteString("      " + line + "\n")
		}
		return b.String()
	}
	b.WriteString("  rules:\n")
	for i, r := range benchRules() {
		fmt.Fprintf(&b, `  - name: r%d
    from:
      principals: [%q]
      jwt: {providers: [idp], claims: [{claim: realm_access.roles, contains: %s}]}
    to: {methods: [%s], paths: [%q]}
    when: [{header: x-tenant, in: [%s]}]
`, i, r.principal, r.role, strings.Join(r.methods, ", "), r.prefix+"*", strings.Join(r.tenants, ", "))
	}
	return b.String()
}

func regoSet(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "{" + strings.Join(q, ", ") + "}"
}

// BenchRegoModule is the 50 rules as a module for our engine: input is the attributes document.
func BenchRegoModule() string {
	var b strings.Builder
	b.WriteString("package bench\n\ndefault match := false\n\n")
	for _, r := range benchRules() {
		fmt.Fprintf(&b, `match if {
	input.request.method in %s
	startswith(input.request.path, %q)
	input.source.principal == %q
	%q in input.jwt.claims.realm_access.roles
	input.request.headers["x-tenant"] in %s
}

`, regoSet(r.methods), r.prefix, r.principal, r.role, regoSet(r.tenants))
	}
	return b.String()
}

// BenchOPAPolicy is the same policy written the way a plain OPA ext_authz deployment writes it
// (opa-envoy-plugin): input is Envoy's CheckRequest as JSON, the query is data.envoy.authz.allow,
// and the token is verified in the policy with io.jwt.decode_verify against the JWKS.
func BenchOPAPolicy(jwks string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `package envoy.authz

jwks := %q

headers := input.attributes.request.http.headers

path := split(input.attributes.request.http.path, "?")[0]

claims := payload if {
	startswith(headers.authorization, "Bearer ")
	[valid, _, payload] := io.jwt.decode_verify(substring(headers.authorization, 7, -1), {"cert": jwks, "iss": %q, "aud": %q})
	valid
}

deny if startswith(path, "/debug/")

deny if {
	startswith(path, "/admin/")
	not startswith(input.attributes.source.principal, "spiffe://portcullis.local/ns/demo/")
}

deny if headers["x-tenant"] == "blocked"

default allow := false

allow if {
	not deny
	rule
}

`, jwks, BenchIssuer, BenchAudience)
	for _, r := range benchRules() {
		fmt.Fprintf(&b, `rule if {
	input.attributes.request.http.method in %s
	startswith(path, %q)
	input.attributes.source.principal == %q
	%q in claims.realm_access.roles
	headers["x-tenant"] in %s
}

`, regoSet(r.methods), r.prefix, r.principal, r.role, regoSet(r.tenants))
	}
	return b.String()
}

// BenchClaims are the claims of the benchmark's token.
func BenchClaims() map[string]any {
	c := Claims(BenchIssuer, "alice", BenchAudience)
	c["realm_access"] = map[string]any{"roles": []string{"user", BenchRole}}
	return c
}
