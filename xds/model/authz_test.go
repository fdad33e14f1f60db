package model

import (
	"strings"
	"testing"
)

func TestPathPatternValidation(t *testing.T) {
	cases := []struct {
		pattern string
		want    string // "" when valid
	}{
		{"/api/*", ""},
		{"/users/*/orders", ""},
		{"/files/**", ""},
		{"/a/**/z", ""},
		{"/files/*.pdf", ""},
		{"api", `must start with "/"`},
		{"/a?b", "query or fragment"},
		{"/a/../b", "normalised"},
		{"/a//b", `must not contain "//"`},
		{"/a/***", `"***" is not a pattern`},
		{"/a/x**", `"**" must be a whole segment`},
		{`/a\b`, "backslashes"},
		{"/a\x01", "control characters"},
	}
	for _, tc := range cases {
		var errs FieldErrors
		validatePathPattern(&errs, "p", tc.pattern)
		got := ""
		if len(errs) > 0 {
			got = errs[0].Message
		}
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.pattern, got, tc.want)
		}
	}
}

func TestAttributePaths(t *testing.T) {
	for p, ok := range map[string]bool{
		"source.principal": true, "request.headers.x-tenant": true, "jwt.claims.realm_access.roles": true,
		"jwt.providers": true, "request.query.page": true,
		"request.headers.": false, "jwt.claims..x": false, "jwt.claims.x.": false, "source": false, "request.body": false,
	} {
		if ValidAttributePath(p) != ok {
			t.Errorf("ValidAttributePath(%q) = %v", p, !ok)
		}
	}
}

func TestMeshFieldLine(t *testing.T) {
	doc := &AuthorizationPolicyDoc{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindAuthorizationPolicy},
		Metadata: ObjectMeta{Name: "p", Namespace: "demo"}, Spec: AuthorizationPolicySpec{Action: ActionAllow, Rules: []Rule{{}}}}
	mesh := &MeshDoc{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindMesh}, Metadata: ObjectMeta{Name: "m"}, Spec: MeshSpec{TrustDomain: "td.local"}}
	m, ps := Build([]Document{
		{Origin: Origin{File: "m.yaml", Document: 1}, Object: mesh},
		{Origin: Origin{File: "p.yaml", Document: 1, Line: 1}, Object: doc, FieldLines: map[Path]int{"spec": 4, "spec.rules": 6, "spec.rules[0]": 7}},
	})
	if ps != nil {
		t.Fatal(ps)
	}
	for p, want := range map[Path]int{"spec.rules[0]": 7, "spec.rules[0].to.paths[1]": 7, "spec.rego.module": 4, "metadata.name": 0} {
		if got := m.FieldLine(doc, p); got != want {
			t.Errorf("FieldLine(%s) = %d, want %d", p, got, want)
		}
	}
}

func TestNativePolicyIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		policy, rule string
	}{{"demo/backend-allow", "frontend-reads"}, {"portcullis-system/mesh-deny", "rules[3]"}} {
		p, r, ok := ParseNativePolicyID(NativePolicyID(tc.policy, tc.rule))
		if !ok || p != tc.policy || r != tc.rule {
			t.Errorf("%s %s: got %q %q %v", tc.policy, tc.rule, p, r, ok)
		}
	}
	for _, bad := range []string{"", "none", "demo/policy", "demo/policy/", "/policy/rule", "a/b/c/d"} {
		if p, r, ok := ParseNativePolicyID(bad); ok {
			t.Errorf("%q parsed as %q %q", bad, p, r)
		}
	}
}
