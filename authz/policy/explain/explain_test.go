package explain

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
)

// frontendGET is a GET /api/items from frontend to backend, without a token.
func frontendGET(t *testing.T) *policy.Attributes {
	t.Helper()
	a := &policy.Attributes{
		Destination: policy.Destination{Service: "backend", Namespace: "demo", Port: 8080},
		Request:     policy.Request{Method: "GET", Path: "/api/items", Host: "backend.demo", Time: testmesh.Monday10},
	}
	if err := a.Source.SetPrincipal("spiffe://portcullis.local/ns/demo/sa/frontend"); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestExplain(t *testing.T) {
	e, ps := policy.Compile(testmesh.Build(t,
		testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RulePOST+"\n"+testmesh.RuleAdminJWT)+
			testmesh.Policy("deny", "backend", "DENY", false, "  - {name: debug, to: {paths: [\"/debug/*\"]}}")+
			testmesh.Policy("front", "frontend", "ALLOW", false, testmesh.RuleGET)+
			testmesh.Policy("audit", "", "AUDIT", false, testmesh.RuleFrontend)))
	if ps != nil {
		t.Fatal(ps)
	}
	x := Decide(context.Background(), e, frontendGET(t))
	if x.Decision.Code != policy.CodeJWTRequired {
		t.Fatalf("decision %s", x.Decision.Code)
	}
	byName := map[string]Policy{}
	for _, p := range x.Policies {
		byName[p.Policy] = p
	}
	allow := byName["demo/allow"]
	if !allow.Applies || allow.Matched || len(allow.Rules) != 2 ||
		allow.Rules[0].Mismatches[0].Field != "to.methods" || allow.Rules[1].Mismatches[0].Field != "from.jwt" ||
		!strings.Contains(allow.Rules[1].Mismatches[0].Reason, "no verified JWT") {
		t.Errorf("allow = %+v", allow)
	}
	if f := byName["demo/front"]; f.Applies || !strings.Contains(f.Outcome, "selects demo/frontend") {
		t.Errorf("front = %+v", f)
	}
	if a := byName["demo/audit"]; !a.Matched || !strings.Contains(a.Outcome, "audit") {
		t.Errorf("audit = %+v", a)
	}
	var b strings.Builder
	if err := x.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{"decision: DENY (jwt_required)", "rule posts: no match", `to.methods: request.method "GET" is not one of [POST]`, "does not apply"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	// The JSON form (-o json) names every field as the text does.
	js, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"destination":"demo/backend"`, `"policy":"demo/allow"`, `"scope":"service demo/backend"`, `"mismatches":[{"field":"to.methods"`, `"outcome":"does not apply: it selects demo/frontend, the request is for demo/backend"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
}

// TestExplainNamespaces: a policy without a selector is scoped to its namespace (mesh-wide in the
// root namespace), and one of another namespace is shown as not applying, with its namespace.
func TestExplainNamespaces(t *testing.T) {
	e, ps := policy.Compile(testmesh.Build(t,
		testmesh.PolicyIn("tenant-a", "open", "", "ALLOW", false, testmesh.RuleAnyone)+
			testmesh.PolicyIn(testmesh.Root, "audit", "", "AUDIT", false, testmesh.RuleGET)))
	if ps != nil {
		t.Fatal(ps)
	}
	x := Decide(context.Background(), e, frontendGET(t))
	byName := map[string]Policy{}
	for _, p := range x.Policies {
		byName[p.Policy] = p
	}
	if p := byName["tenant-a/open"]; p.Applies || p.Scope != "namespace tenant-a" ||
		p.Outcome != "does not apply: it applies to namespace tenant-a, the request is for demo/backend" {
		t.Errorf("tenant-a/open = %+v", p)
	}
	if p := byName[testmesh.Root+"/audit"]; !p.Applies || p.Scope != "mesh-wide" || !p.Matched {
		t.Errorf("root audit = %+v", p)
	}
	if x.Decision.Code != policy.CodeDeniedDefault {
		t.Errorf("decision %s: tenant-a's ALLOW-all opened demo", x.Decision.Code)
	}
}

// The JSON form names fields as the rest of the output does (camelCase, times in µs), and a
// Rego module that names no rule is reported as rule "rego" in the header and the body alike.
func TestExplainJSONAndRegoRule(t *testing.T) {
	e, ps := policy.Compile(testmesh.Build(t, testmesh.Rego("allow", "ALLOW", "package m\nmatch := true\n")))
	if ps != nil {
		t.Fatal(ps)
	}
	x := Decide(context.Background(), e, frontendGET(t))
	js, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"decision":{"id":"`, `"allow":true`, `"code":"allowed"`, `"rule":"rego"`, `"evalUs":`, `"rego":{"matched":true,"rule":"rego","reason":"rego module matched"}`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
	for _, bad := range []string{`"ID"`, `"Allow"`, `"Duration"`, `"MeshVersion"`} {
		if strings.Contains(string(js), bad) {
			t.Errorf("JSON has %s:\n%s", bad, js)
		}
	}
	var b strings.Builder
	if err := x.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rule rego\n", `rego: MATCH rule="rego" reason="rego module matched"`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}
