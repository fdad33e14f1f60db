package model

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestProblemString(t *testing.T) {
	p := Problem{File: "mesh/policies.yaml", Document: 3, Kind: KindAuthorizationPolicy, Name: "allow-frontend",
		Field: "spec.rules[0].to.paths[1]", Message: `must start with "/"`}
	want := `mesh/policies.yaml: document 3 (AuthorizationPolicy/allow-frontend): spec.rules[0].to.paths[1]: must start with "/"`
	if got := p.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	p.Line = 12
	if got := p.String(); got != want+" (line 12)" {
		t.Errorf("with line: %s", got)
	}
}

func TestParseServiceName(t *testing.T) {
	for _, tc := range []struct{ in, ns, name string }{
		{"backend", "demo", "backend"},
		{"backend.shop", "shop", "backend"},
	} {
		ns, name, err := ParseServiceName(tc.in, "demo")
		if err != nil || ns != tc.ns || name != tc.name {
			t.Errorf("%q: %q %q %v", tc.in, ns, name, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".b", "A", "a.b.c", "a_b"} {
		if _, _, err := ParseServiceName(bad, "demo"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidAttributePath(t *testing.T) {
	for p, want := range map[string]bool{
		"source.principal": true, "request.headers.x-tenant": true, "jwt.claims.realm_access.roles": true,
		"request.headers.": false, "request.headers": false, "jwt.claims.a..b": false, "source": false, "source.principals": false,
	} {
		if got := ValidAttributePath(p); got != want {
			t.Errorf("%q: %v, want %v", p, got, want)
		}
	}
}

func TestParseClock(t *testing.T) {
	for s, want := range map[string]int{"00:00": 0, "09:30": 570, "23:59": 1439} {
		if got, ok := ParseClock(s); !ok || got != want {
			t.Errorf("%q: %d %v", s, got, ok)
		}
	}
	for _, bad := range []string{"9:30", "24:00", "12:60", "noon", "12:00:00"} {
		if _, ok := ParseClock(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestWorkloadID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id := WorkloadID(td, "shop", "cart")
	if id.String() != "spiffe://example.org/ns/shop/sa/cart" {
		t.Fatal(id)
	}
	ns, sa, err := ParseWorkloadID(id)
	if err != nil || ns != "shop" || sa != "cart" {
		t.Fatal(ns, sa, err)
	}
	if _, _, err := ParseWorkloadID(spiffeid.RequireFromString("spiffe://example.org/x")); err == nil {
		t.Error("non-workload ID accepted")
	}
}

func TestMeshAuthzMode(t *testing.T) {
	for _, tc := range []struct {
		mode    AuthzMode
		want    AuthzMode // after defaulting
		wantErr string
	}{
		{mode: "", want: AuthzEnforce},
		{mode: AuthzEnforce, want: AuthzEnforce},
		{mode: AuthzOff, want: AuthzOff},
		{mode: "off", wantErr: `spec.authz.mode: must be ENFORCE or OFF, not "off"`},
		{mode: "DISABLED", wantErr: `spec.authz.mode: must be ENFORCE or OFF, not "DISABLED"`},
	} {
		d := &MeshDoc{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindMesh}, Metadata: ObjectMeta{Name: "m"},
			Spec: MeshSpec{TrustDomain: "td.local", Authz: AuthzSettings{Mode: tc.mode}}}
		errs := d.Validate()
		if tc.wantErr != "" {
			if len(errs) != 1 || string(errs[0].Field)+": "+errs[0].Message != tc.wantErr {
				t.Errorf("mode %q: errors %v, want %q", tc.mode, errs, tc.wantErr)
			}
			continue
		}
		if len(errs) > 0 {
			t.Errorf("mode %q: unexpected errors %v", tc.mode, errs)
			continue
		}
		d.setDefaults()
		if d.Spec.Authz.Mode != tc.want {
			t.Errorf("mode %q defaults to %q, want %q", tc.mode, d.Spec.Authz.Mode, tc.want)
		}
	}
}

func TestMeshAuthzEngine(t *testing.T) {
	for _, tc := range []struct {
		engine  AuthzEngine
		want    AuthzEngine // after defaulting
		wantErr string
	}{
		{engine: "", want: EngineAuto},
		{engine: EngineAuto, want: EngineAuto},
		{engine: EngineExtAuthz, want: EngineExtAuthz},
		{engine: "AUTO", wantErr: `spec.authz.engine: must be auto or extAuthz, not "AUTO"`},
		{engine: "rbac", wantErr: `spec.authz.engine: must be auto or extAuthz, not "rbac"`},
	} {
		d := &MeshDoc{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindMesh}, Metadata: ObjectMeta{Name: "m"},
			Spec: MeshSpec{TrustDomain: "td.local", Authz: AuthzSettings{Engine: tc.engine}}}
		errs := d.Validate()
		if tc.wantErr != "" {
			if len(errs) != 1 || string(errs[0].Field)+": "+errs[0].Message != tc.wantErr {
				t.Errorf("engine %q: errors %v, want %q", tc.engine, errs, tc.wantErr)
			}
			continue
		}
		if len(errs) > 0 {
			t.Errorf("engine %q: unexpected errors %v", tc.engine, errs)
			continue
		}
		d.setDefaults()
		if d.Spec.Authz.Engine != tc.want {
			t.Errorf("engine %q defaults to %q, want %q", tc.engine, d.Spec.Authz.Engine, tc.want)
		}
	}
}

func TestUnenforcedPolicies(t *testing.T) {
	policies := []*AuthorizationPolicyDoc{{}, {}}
	for mode, want := range map[AuthzMode]int{AuthzEnforce: 0, AuthzOff: 2} {
		m := &Mesh{Config: &MeshDoc{Spec: MeshSpec{Authz: AuthzSettings{Mode: mode}}}, AuthorizationPolicies: policies}
		if got := m.UnenforcedPolicies(); got != want {
			t.Errorf("mode %s: %d unenforced policies, want %d", mode, got, want)
		}
	}
}
