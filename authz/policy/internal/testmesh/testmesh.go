// Package testmesh builds the mesh the policy packages' tests decide against: a Mesh, two
// services (backend, frontend) and two JWT providers (idp, other) in namespace demo, to which a
// test adds AuthorizationPolicy documents written with Policy and Rego. It is for tests only.
package testmesh

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// Rules for Policy, named after what they match.
const (
	RuleGET      = "  - {name: gets, to: {methods: [GET]}}"
	RulePOST     = "  - {name: posts, to: {methods: [POST]}}"
	RuleAPI      = "  - {name: api, to: {paths: [\"/api/*\"]}}"
	RuleFrontend = "  - {name: frontend, from: {principals: [\"*/sa/frontend\"]}}"
	RuleAdminJWT = "  - {name: admins, from: {jwt: {providers: [idp]}}, to: {paths: [\"/api/*\"]}}"
	RuleAnyJWT   = "  - {name: any-token, from: {jwt: {}}}"
	RuleAnyone   = "  - {}"
)

// Monday10 is Monday 2026-01-05 10:00 UTC.
var Monday10 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

const base = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: portcullis.local
  defaultDecision: %s
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec:
  ports: [{name: http, port: 8080}, {name: admin, port: 9090}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: frontend, namespace: demo}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: https://idp.test
  jwks: {inline: '{"keys":[]}'}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: other, namespace: demo}
spec:
  issuer: https://other.test
  jwks: {inline: '{"keys":[]}'}
`

// YAML is the mesh's documents with the given default decision, ending in "---", ready for
// policies to be appended.
func YAML(defaultDecision string) string { return fmt.Sprintf(base, defaultDecision) + "---\n" }

// Build builds the mesh plus docs (more YAML documents) from the file "mesh.yaml"; the default
// decision is DENY unless given.
func Build(t testing.TB, docs string, defaultDecision ...string) *model.Mesh {
	t.Helper()
	def := "DENY"
	if len(defaultDecision) > 0 {
		def = defaultDecision[0]
	}
	ds, ps := source.Decode("mesh.yaml", []byte(YAML(def)+docs))
	if len(ps) > 0 {
		t.Fatalf("decode: %v", ps)
	}
	m, ps := model.Build(ds)
	if len(ps) > 0 {
		t.Fatalf("build: %v", ps)
	}
	return m
}

// Policy writes one AuthorizationPolicy in namespace demo; selector "" makes it apply to every
// service of the namespace.
func Policy(name, selector, action string, dryRun bool, rules string) string {
	return PolicyIn("demo", name, selector, action, dryRun, rules)
}

// PolicyIn is Policy in namespace ns; in Root, selector "" makes it mesh-wide.
func PolicyIn(ns, name, selector, action string, dryRun bool, rules string) string {
	sel := ""
	if selector != "" {
		sel = "\n  selector: {service: " + selector + "}"
	}
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: %s}
spec:%s
  action: %s
  dryRun: %v
  rules:
%s
---
`, name, ns, sel, action, dryRun, rules)
}

// Root is the root namespace of the mesh Build makes (the default).
const Root = model.DefaultRootNamespace

// Service writes a Service with one HTTP port, 8080.
func Service(ns, name string) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  ports: [{name: http, port: 8080}]
---
`, name, ns)
}

// Provider writes a JWTProvider for issuer with an empty inline key set; extra is more of its
// spec, as YAML lines indented by two spaces ("" for none).
func Provider(ns, name, issuer, extra string) string {
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: %s, namespace: %s}
spec:
  issuer: %s
  jwks: {inline: '{"keys":[]}'}
%s---
`, name, ns, issuer, extra)
}

// Rego writes one AuthorizationPolicy for service backend whose rule is a Rego module.
func Rego(name, action, module string) string {
	indented := "      " + strings.ReplaceAll(strings.TrimRight(module, "\n"), "\n", "\n      ")
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: demo}
spec:
  selector: {service: backend}
  action: %s
  rego:
    module: |
%s
---
`, name, action, indented)
}
