package lint

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
	"github.com/portcullis/portcullis/xds/source"
)

func TestLintNeverMatching(t *testing.T) {
	cases := []struct {
		name  string
		rule  string
		field string // "" when the rule is fine
	}{
		{"fine", `{to: {methods: [GET], notMethods: [POST]}}`, ""},
		{"methods all excluded", `{to: {methods: [GET, HEAD], notMethods: [HEAD, GET]}}`, "spec.rules[0].to.methods"},
		{"paths exact excluded by prefix", `{to: {paths: [/api/x], notPaths: ["/api/*"]}}`, "spec.rules[0].to.paths"},
		{"path prefix excluded by shorter prefix", `{to: {paths: ["/api/v1/*"], notPaths: ["/api/*"]}}`, "spec.rules[0].to.paths"},
		{"path prefix not excluded by longer prefix", `{to: {paths: ["/api/*"], notPaths: ["/api/v1/*"]}}`, ""},
		{"same glob", `{to: {paths: ["/a/*/b"], notPaths: ["/a/*/b"]}}`, "spec.rules[0].to.paths"},
		{"one path survives", `{to: {paths: [/a, /b], notPaths: [/a]}}`, ""},
		{"principals excluded", `{from: {principals: ["spiffe://portcullis.local/ns/demo/sa/a"], notPrincipals: ["spiffe://portcullis.local/ns/demo/*"]}}`, "spec.rules[0].from.principals"},
		{"notPrincipals star", `{from: {principals: ["*/sa/a"], notPrincipals: ["*"]}}`, "spec.rules[0].from.notPrincipals"},
		{"principal prefix excluded", `{from: {principals: ["spiffe://portcullis.local/ns/demo/sa/*"], notPrincipals: ["spiffe://portcullis.local/ns/*"]}}`, "spec.rules[0].from.principals"},
		{"principal namespace not allowed", `{from: {principals: ["spiffe://portcullis.local/ns/demo/sa/a"], namespaces: [prod]}}`, "spec.rules[0].from.namespaces"},
		{"principal namespace excluded", `{from: {principals: ["spiffe://portcullis.local/ns/demo/sa/a"], notNamespaces: [demo]}}`, "spec.rules[0].from.namespaces"},
		{"principal namespace allowed", `{from: {principals: ["spiffe://portcullis.local/ns/demo/sa/a"], namespaces: [demo]}}`, ""},
		{"namespaces excluded", `{from: {namespaces: [a], notNamespaces: [a]}}`, "spec.rules[0].from.namespaces"},
		{"port not of the service", `{to: {ports: [1234]}}`, "spec.rules[0].to.ports"},
		{"port of the service", `{to: {ports: [1234, 9090]}}`, ""},
		{"two equals on one header: a header may be sent twice", `{when: [{header: x-a, equals: "1"}, {header: X-A, equals: "2"}]}`, ""},
		{"two equals on the host", `{when: [{attribute: request.host, equals: a.com}, {attribute: request.host, equals: b.com}]}`, "spec.rules[0].when[1]"},
		{"equals outside in", `{when: [{attribute: request.method, equals: GET}, {attribute: request.method, in: [POST, PUT]}]}`, "spec.rules[0].when[1]"},
		{"equals against regexp", `{when: [{attribute: request.host, equals: a.com}, {attribute: request.host, matches: "b\\..*"}]}`, "spec.rules[0].when[1]"},
		{"equals and in agree", `{when: [{attribute: request.method, equals: GET}, {attribute: request.method, in: [GET, PUT]}]}`, ""},
		{"claims may be lists", `{when: [{attribute: jwt.claims.roles, equals: a}, {attribute: jwt.claims.roles, equals: b}]}`, ""},
		{"disjoint source ranges", `{when: [{sourceIPs: [10.0.0.0/8]}, {sourceIPs: [192.168.0.0/16]}]}`, "spec.rules[0].when[1]"},
		{"source range excluded", `{when: [{sourceIPs: [10.1.0.0/16]}, {notSourceIPs: [10.0.0.0/8]}]}`, "spec.rules[0].when[0]"},
		{"source range partly excluded", `{when: [{sourceIPs: [10.0.0.0/8]}, {notSourceIPs: [10.1.0.0/16]}]}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := testmesh.Build(t, testmesh.Policy("p", "backend", "ALLOW", false, "  - "+tc.rule))
			ps := Mesh(m)
			switch {
			case tc.field == "" && len(ps) > 0:
				t.Fatalf("unexpected: %v", ps)
			case tc.field != "" && (len(ps) != 1 || ps[0].Field != tc.field || !strings.Contains(ps[0].Message, "can never match")):
				t.Fatalf("problems = %v, want one at %s", ps, tc.field)
			case tc.field != "" && ps[0].Line == 0:
				t.Errorf("no line: %v", ps[0])
			}
		})
	}
}

func TestLintDocumentsWithoutMesh(t *testing.T) {
	text := testmesh.Policy("p", "backend", "ALLOW", false, "  - {to: {methods: [GET], notMethods: [GET]}}") +
		testmesh.Rego("r", "ALLOW", "package p\n\nmatch if {\n\tnope == 1\n}\n")
	docs, ps := source.Decode("policies.yaml", []byte(text))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	got := Documents(docs, nil)
	if len(got) != 2 {
		t.Fatalf("problems = %v", got)
	}
	if got[0].Document != 1 || got[0].Line != 9 || got[0].Field != "spec.rules[0].to.methods" {
		t.Errorf("first = %+v", got[0])
	}
	if got[1].Document != 2 || !strings.Contains(got[1].Message, "rego line 4") || got[1].Line != 22 {
		t.Errorf("second = %+v", got[1])
	}
}

// TestLintJWTWithoutProviders: a from.jwt where no JWTProvider verifies tokens (none in the
// policy's namespace or the root namespace) can never match; one of the root namespace verifies
// tokens everywhere.
func TestLintJWTWithoutProviders(t *testing.T) {
	policy := testmesh.PolicyIn("tenant-b", "users", "", "ALLOW", false, testmesh.RuleAnyJWT)
	ps := Mesh(testmesh.Build(t, policy))
	if len(ps) != 1 || ps[0].Field != "spec.rules[0].from.jwt" || ps[0].Line == 0 ||
		!strings.Contains(ps[0].Message, `the rule can never match: no JWTProvider verifies tokens for namespace "tenant-b"; add one there or in the root namespace "portcullis-system"`) {
		t.Fatalf("problems = %v", ps)
	}
	if ps := Mesh(testmesh.Build(t, testmesh.Provider(testmesh.Root, "corp", "https://corp.test", "")+policy)); len(ps) > 0 {
		t.Errorf("with a root namespace provider: %v", ps)
	}
	// A root namespace policy without a selector applies where demo's providers verify tokens.
	if ps := Mesh(testmesh.Build(t, testmesh.PolicyIn(testmesh.Root, "users", "", "ALLOW", false, testmesh.RuleAnyJWT))); len(ps) > 0 {
		t.Errorf("mesh-wide: %v", ps)
	}
}

// TestLintAPIKeyWithoutProviders: likewise a from.apiKey where no APIKeyProvider acts.
func TestLintAPIKeyWithoutProviders(t *testing.T) {
	policy := testmesh.PolicyIn("tenant-b", "clients", "", "ALLOW", false, "  - {name: keys, from: {apiKey: {}}}\n")
	ps := Mesh(testmesh.Build(t, policy))
	if len(ps) != 1 || ps[0].Field != "spec.rules[0].from.apiKey" ||
		!strings.Contains(ps[0].Message, `the rule can never match: no APIKeyProvider verifies keys for namespace "tenant-b"; add one there or in the root namespace "portcullis-system"`) {
		t.Fatalf("problems = %v", ps)
	}
	root := "apiVersion: portcullis.dev/v1alpha1\nkind: APIKeyProvider\nmetadata: {name: corp, namespace: " + testmesh.Root + "}\nspec: {}\n---\n"
	if ps := Mesh(testmesh.Build(t, root+policy)); len(ps) > 0 {
		t.Errorf("with a root namespace provider: %v", ps)
	}
}
