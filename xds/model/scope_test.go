package model_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// tenantsMesh is two tenants, each with a service, a provider and a policy without a selector,
// and a root namespace policy; meshSpec is more of the Mesh's spec.
func tenantsMesh(meshSpec string) string {
	doc := func(kind, ns, name, spec string) string {
		return fmt.Sprintf("apiVersion: portcullis.dev/v1alpha1\nkind: %s\nmetadata: {name: %s, namespace: %s}\nspec: %s\n---\n", kind, name, ns, spec)
	}
	return "apiVersion: portcullis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {trustDomain: t.test" + meshSpec + "}\n---\n" +
		doc("Service", "tenant-a", "api", "{ports: [{name: http, port: 8080}]}") +
		doc("Service", "tenant-b", "api", "{ports: [{name: http, port: 8080}]}") +
		doc("JWTProvider", "tenant-a", "idp", `{issuer: "https://a.test", jwks: {inline: '{"keys":[]}'}}`) +
		doc("JWTProvider", "portcullis-system", "corp", `{issuer: "https://corp.test", jwks: {inline: '{"keys":[]}'}}`) +
		doc("AuthorizationPolicy", "tenant-a", "open", "{action: ALLOW, rules: [{}]}") +
		doc("AuthorizationPolicy", "tenant-b", "users", "{action: ALLOW, rules: [{from: {jwt: {}}}, {from: {jwt: {providers: [corp]}}}]}") +
		doc("AuthorizationPolicy", "portcullis-system", "no-admin", `{action: DENY, rules: [{to: {paths: ["/admin/*"]}}]}`)
}

func buildYAML(t *testing.T, text string) (*model.Mesh, model.Problems) {
	t.Helper()
	docs, ps := source.Decode("mesh.yaml", []byte(text))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	return model.Build(docs)
}

func TestRootNamespace(t *testing.T) {
	m, ps := buildYAML(t, tenantsMesh(""))
	if ps != nil {
		t.Fatal(ps)
	}
	if m.RootNamespace() != model.DefaultRootNamespace {
		t.Errorf("root namespace %q, want the default", m.RootNamespace())
	}
	for _, tc := range []struct {
		doc, dest string
		want      bool
	}{{"tenant-a", "tenant-a", true}, {"tenant-a", "tenant-b", false}, {model.DefaultRootNamespace, "tenant-b", true}} {
		if got := m.Reaches(tc.doc, tc.dest); got != tc.want {
			t.Errorf("Reaches(%q, %q) = %v", tc.doc, tc.dest, got)
		}
	}
	// A name in from.jwt.providers is found in the policy's namespace, else the root namespace.
	if p := m.JWTProvider("tenant-b", "corp"); p == nil || model.RefOf(p).String() != "portcullis-system/corp" {
		t.Errorf("tenant-b's corp = %v, want the root namespace's", p)
	}
	if p := m.JWTProvider("tenant-b", "idp"); p != nil {
		t.Errorf("tenant-b found tenant-a's provider %v", model.RefOf(p))
	}

	if _, ps = buildYAML(t, tenantsMesh(", rootNamespace: platform")); ps == nil {
		t.Fatal("a policy naming corp, which is no longer in the root namespace, was accepted")
	}
	if got := ps.Error(); !strings.Contains(got, `spec.rules[1].from.jwt.providers[0]: JWTProvider "corp" not found in namespace "tenant-b" or the root namespace "platform"`) {
		t.Errorf("problems:\n%s", got)
	}
	if _, ps = buildYAML(t, tenantsMesh(", rootNamespace: Not_A_Label")); ps == nil || !strings.Contains(ps.Error(), "spec.rootNamespace") {
		t.Errorf("an invalid root namespace: %v", ps)
	}
}

// TestMeshContextScope: what reaches a service is what the authorization service applies to it:
// its namespace's policies without a selector and the root namespace's, and the providers of
// those two namespaces.
func TestMeshContextScope(t *testing.T) {
	m, ps := buildYAML(t, tenantsMesh(""))
	if ps != nil {
		t.Fatal(ps)
	}
	mc := model.NewMeshContext(m)
	names := func(docs []model.Object) string {
		var out []string
		for _, d := range docs {
			out = append(out, model.RefOf(d).String())
		}
		return strings.Join(out, " ")
	}
	for ns, want := range map[string][2]string{
		"tenant-a": {"portcullis-system/no-admin tenant-a/open", "portcullis-system/corp tenant-a/idp"},
		"tenant-b": {"portcullis-system/no-admin tenant-b/users", "portcullis-system/corp"},
	} {
		s := mc.Service(model.Ref{Namespace: ns, Name: "api"})
		var pols, provs []model.Object
		for _, p := range s.AuthorizationPolicies {
			pols = append(pols, p)
		}
		for _, p := range s.JWTProviders {
			provs = append(provs, p)
		}
		if got := names(pols); got != want[0] {
			t.Errorf("%s policies: %s, want %s", ns, got, want[0])
		}
		if got := names(provs); got != want[1] {
			t.Errorf("%s providers: %s, want %s", ns, got, want[1])
		}
	}
}

func TestReachWarnings(t *testing.T) {
	m, ps := buildYAML(t, tenantsMesh(""))
	if ps != nil {
		t.Fatal(ps)
	}
	var got []string
	for _, w := range m.ReachWarnings() {
		if !w.Warning || w.Line == 0 || w.File != "mesh.yaml" {
			t.Errorf("not a placed warning: %+v", w)
		}
		got = append(got, fmt.Sprintf("%s %s %s", w.Name, w.Field, w.Message))
	}
	want := []string{
		`tenant-a/idp metadata.namespace this provider now verifies tokens only for destinations in namespace "tenant-a"`,
		`tenant-a/open spec.selector without a selector this policy now applies only to namespace "tenant-a"`,
		`tenant-b/users spec.rules[0].from.jwt naming no providers, this requirement now accepts only tokens verified by JWTProviders of the destination's namespace or the root namespace "portcullis-system": tokens of tenant-a/idp no longer count`,
		`tenant-b/users spec.selector without a selector this policy now applies only to namespace "tenant-b"`,
	}
	if len(got) != len(want) {
		t.Fatalf("warnings:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) || !strings.HasSuffix(got[i], `set the Mesh's spec.rootNamespace ("portcullis-system" unless set) once reviewed`) {
			t.Errorf("warning %d:\n got %s\nwant %s…", i, got[i], want[i])
		}
	}
	if s := m.ReachWarnings()[1].String(); !strings.Contains(s, "(AuthorizationPolicy/tenant-a/open): spec.selector: warning: without a selector") {
		t.Errorf("String() = %s", s)
	}

	// A Mesh naming its root namespace was written for these rules: no warnings.
	if m, ps = buildYAML(t, tenantsMesh(", rootNamespace: portcullis-system")); ps != nil || len(m.ReachWarnings()) > 0 {
		t.Errorf("with spec.rootNamespace set: %v %v", ps, m.ReachWarnings())
	}
	// One namespace of services: nothing reached less than before.
	one := strings.Replace(tenantsMesh(""), "metadata: {name: api, namespace: tenant-b}", "metadata: {name: api2, namespace: tenant-a}", 1)
	one = strings.Replace(one, "namespace: tenant-b}\nspec: {action: ALLOW, rules: [{from: {jwt: {}}}, {from: {jwt: {providers: [corp]}}}]}", "namespace: tenant-a}\nspec: {action: ALLOW, rules: [{from: {jwt: {}}}]}", 1)
	if m, ps = buildYAML(t, one); ps != nil || len(m.ReachWarnings()) > 0 {
		t.Errorf("one namespace: %v %v", ps, m.ReachWarnings())
	}
}
