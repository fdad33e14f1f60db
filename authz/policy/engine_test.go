package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// policyYAML writes one AuthorizationPolicy; selector "" makes it mesh-wide.
func policyYAML(name, selector, action string, dryRun bool, rules string) string {
	sel := ""
	if selector != "" {
		sel = "\n  selector: {service: " + selector + "}"
	}
	return fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: demo}
spec:%s
  action: %s
  dryRun: %v
  rules:
%s
---
`, name, sel, action, dryRun, rules)
}

const (
	ruleGET      = "  - {name: gets, to: {methods: [GET]}}"
	rulePOST     = "  - {name: posts, to: {methods: [POST]}}"
	ruleAPI      = "  - {name: api, to: {paths: [\"/api/*\"]}}"
	ruleFrontend = "  - {name: frontend, from: {principals: [\"*/sa/frontend\"]}}"
	ruleAdminJWT = "  - {name: admins, from: {jwt: {providers: [idp]}}, to: {paths: [\"/api/*\"]}}"
)

func TestSemantics(t *testing.T) {
	cases := []struct {
		name     string
		docs     string
		def      string
		mutate   func(*Attributes)
		code     Code
		policy   string
		rule     string
		audits   int
		dryRun   *DryRun
		errCount int
	}{
		{name: "no policy: default DENY", docs: "", code: CodeDeniedDefault},
		{name: "no policy: default ALLOW", docs: "", def: "ALLOW", code: CodeAllowedDefault},
		{name: "ALLOW matches", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET),
			code: CodeAllowed, policy: "demo/allow", rule: "gets"},
		{name: "ALLOW does not match: default DENY", docs: policyYAML("allow", "backend", "ALLOW", false, rulePOST), code: CodeDeniedDefault},
		{name: "DENY overrides ALLOW", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET) + policyYAML("deny", "backend", "DENY", false, ruleAPI),
			code: CodeDenied, policy: "demo/deny", rule: "api"},
		{name: "DENY overrides a default ALLOW", docs: policyYAML("deny", "", "DENY", false, ruleAPI), def: "ALLOW", code: CodeDenied, policy: "demo/deny"},
		{name: "DENY that does not match leaves ALLOW", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET) + policyYAML("deny", "backend", "DENY", false, rulePOST),
			code: CodeAllowed, policy: "demo/allow"},
		{name: "rules are OR: second rule matches", docs: policyYAML("allow", "backend", "ALLOW", false, rulePOST+"\n"+ruleAPI), code: CodeAllowed, rule: "api"},
		{name: "first matching rule is reported", docs: policyYAML("allow", "backend", "ALLOW", false, ruleAPI+"\n"+ruleGET), code: CodeAllowed, rule: "api"},
		{name: "unnamed rules are named by position", docs: policyYAML("allow", "backend", "ALLOW", false, "  - {to: {methods: [POST]}}\n  - {to: {methods: [GET]}}"), code: CodeAllowed, rule: "rules[1]"},
		{name: "policies apply in name order", docs: policyYAML("b-allow", "backend", "ALLOW", false, ruleGET) + policyYAML("a-allow", "backend", "ALLOW", false, ruleAPI),
			code: CodeAllowed, policy: "demo/a-allow"},
		{name: "selector for another service does not apply", docs: policyYAML("allow", "frontend", "ALLOW", false, ruleGET), code: CodeDeniedDefault},
		{name: "mesh-wide policy applies", docs: policyYAML("allow", "", "ALLOW", false, ruleGET), code: CodeAllowed, policy: "demo/allow"},
		{name: "mesh-wide applies to unknown destinations", docs: policyYAML("allow", "", "ALLOW", false, ruleGET),
			mutate: func(a *Attributes) { a.Destination.Service, a.Destination.Namespace = "ghost", "nowhere" }, code: CodeAllowed},
		{name: "service policy does not apply to unknown destinations", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET),
			mutate: func(a *Attributes) { a.Destination.Service = "ghost" }, code: CodeDeniedDefault},
		{name: "mesh-wide DENY beats service ALLOW", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET) + policyYAML("zz-deny", "", "DENY", false, ruleAPI),
			code: CodeDenied, policy: "demo/zz-deny"},
		{name: "AUDIT never changes the decision", docs: policyYAML("audit", "backend", "AUDIT", false, ruleGET), code: CodeDeniedDefault, audits: 1},
		{name: "AUDIT is recorded with an ALLOW", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET) + policyYAML("audit", "", "AUDIT", false, ruleAPI),
			code: CodeAllowed, audits: 1},
		{name: "dry-run DENY does not deny, but says it would", docs: policyYAML("allow", "backend", "ALLOW", false, ruleGET) + policyYAML("deny", "backend", "DENY", true, ruleAPI),
			code: CodeAllowed, policy: "demo/allow",
			dryRun: &DryRun{Allow: false, Code: CodeDenied, Policy: "demo/deny", Rule: "api", Changed: true}},
		{name: "dry-run ALLOW does not allow, but says it would", docs: policyYAML("allow", "backend", "ALLOW", true, ruleGET),
			code: CodeDeniedDefault, dryRun: &DryRun{Allow: true, Code: CodeAllowed, Policy: "demo/allow", Rule: "gets", Changed: true}},
		{name: "dry-run ALLOW cannot undo a DENY", docs: policyYAML("deny", "backend", "DENY", false, ruleGET) + policyYAML("allow", "backend", "ALLOW", true, ruleGET),
			code: CodeDenied, dryRun: &DryRun{Allow: false, Code: CodeDenied, Policy: "demo/deny", Rule: "gets"}},
		{name: "dry-run that does not match", docs: policyYAML("deny", "backend", "DENY", true, rulePOST),
			code: CodeDeniedDefault, dryRun: &DryRun{Allow: false, Code: CodeDeniedDefault}},
		{name: "dry-run AUDIT", docs: policyYAML("audit", "backend", "AUDIT", true, ruleGET),
			code: CodeDeniedDefault, dryRun: &DryRun{Allow: false, Code: CodeDeniedDefault}},
		{name: "no token, a JWT rule would allow: jwt_required", docs: policyYAML("allow", "backend", "ALLOW", false, ruleAdminJWT),
			code: CodeJWTRequired, policy: "demo/allow", rule: "admins"},
		{name: "no token, JWT rule would not allow anyway: plain deny", docs: policyYAML("allow", "backend", "ALLOW", false, ruleAdminJWT),
			mutate: func(a *Attributes) { a.Request.Path = "/other" }, code: CodeDeniedDefault},
		{name: "token present but wrong provider: plain deny", docs: policyYAML("allow", "backend", "ALLOW", false, ruleAdminJWT),
			mutate: func(a *Attributes) {
				a.JWT = token(t, "demo/other", map[string]any{"iss": "https://other.test", "exp": 2000000000})
			}, code: CodeDeniedDefault},
		{name: "explicit DENY is never 401", docs: policyYAML("allow", "backend", "ALLOW", false, ruleAdminJWT) + policyYAML("deny", "backend", "DENY", false, ruleGET),
			code: CodeDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			def := "DENY"
			if tc.def != "" {
				def = tc.def
			}
			e := compile(t, buildMesh(t, tc.docs, def))
			a := request(t)
			if tc.mutate != nil {
				tc.mutate(a)
			}
			d := e.Decide(context.Background(), a)
			wantAllow := tc.code == CodeAllowed || tc.code == CodeAllowedDefault
			if d.Code != tc.code || d.Allow != wantAllow {
				t.Fatalf("decision %s/%v (%s), want %s\n%s", d.Code, d.Allow, d.Reason, tc.code, explainText(t, e, a))
			}
			if tc.policy != "" && d.Policy != tc.policy {
				t.Errorf("policy = %q, want %q", d.Policy, tc.policy)
			}
			if tc.rule != "" && d.Rule != tc.rule {
				t.Errorf("rule = %q, want %q", d.Rule, tc.rule)
			}
			if len(d.Audits) != tc.audits {
				t.Errorf("audits = %v, want %d", d.Audits, tc.audits)
			}
			switch {
			case tc.dryRun == nil && d.DryRun != nil:
				t.Errorf("dry run = %+v, want none", d.DryRun)
			case tc.dryRun != nil && d.DryRun == nil:
				t.Errorf("no dry run, want %+v", tc.dryRun)
			case tc.dryRun != nil:
				got := *d.DryRun
				if got.Allow != tc.dryRun.Allow || got.Code != tc.dryRun.Code || got.Policy != tc.dryRun.Policy || got.Rule != tc.dryRun.Rule || got.Changed != tc.dryRun.Changed {
					t.Errorf("dry run = %+v, want %+v", got, *tc.dryRun)
				}
			}
			if d.ID == "" || d.Reason == "" || d.MeshVersion == "" {
				t.Errorf("decision lacks id, reason or version: %+v", d)
			}
			if (d.Policy == "") != (tc.code == CodeDeniedDefault || tc.code == CodeAllowedDefault) {
				t.Errorf("policy %q for code %s", d.Policy, d.Code)
			}
		})
	}
}

const regoAllowAdmins = `package portcullis.admins

default match := false

match if {
	input.request.method == "GET"
	"admin" in input.jwt.claims.roles
}

reason := sprintf("admin %s", [input.jwt.subject]) if match

rule := "admins-by-rego"
`

func regoPolicy(name, action, module string) string {
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

func TestRego(t *testing.T) {
	admin := func(a *Attributes) {
		a.JWT = token(t, "demo/idp", map[string]any{"iss": "https://idp.test", "sub": "alice", "exp": 2000000000, "roles": []any{"admin"}})
	}
	// Both definitions of v hold: a conflict, which is an evaluation error.
	failing := "package bad\n\ndefault match := false\n\nmatch if v > 1\n\nv := 1 if input.request.method == \"GET\"\n\nv := 2 if input.request.headers[\"x-tenant\"] == \"acme\"\n"
	cases := []struct {
		name   string
		docs   string
		mutate func(*Attributes)
		code   Code
		rule   string
		reason string
		errs   int
	}{
		{"ALLOW by rego", regoPolicy("allow", "ALLOW", regoAllowAdmins), admin, CodeAllowed, "admins-by-rego", "admin alice", 0},
		{"rego does not match", regoPolicy("allow", "ALLOW", regoAllowAdmins), nil, CodeDeniedDefault, "", "", 0},
		{"DENY by rego", regoPolicy("deny", "DENY", regoAllowAdmins) + policyYAML("allow", "backend", "ALLOW", false, ruleGET), admin, CodeDenied, "admins-by-rego", "admin alice", 0},
		{"only match defined", regoPolicy("allow", "ALLOW", "package m\nmatch := true\n"), nil, CodeAllowed, "rego", "rego module matched", 0},
		{"match not boolean is false", regoPolicy("allow", "ALLOW", "package m\nmatch := \"yes\"\n"), nil, CodeDeniedDefault, "", "", 0},
		{"eval error in ALLOW fails closed", regoPolicy("allow", "ALLOW", failing), nil, CodeDeniedDefault, "", "", 1},
		{"eval error in DENY fails closed", regoPolicy("deny", "DENY", failing) + policyYAML("allow", "backend", "ALLOW", false, ruleGET), nil, CodeDenied, "rego", "rego evaluation failed (fail closed)", 1},
		{"rules and rego: a rule matching is enough", strings.Replace(regoPolicy("allow", "ALLOW", regoAllowAdmins), "  rego:", "  rules: [{name: gets, to: {methods: [GET]}}]\n  rego:", 1), nil, CodeAllowed, "gets", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := compile(t, buildMesh(t, tc.docs))
			a := request(t)
			if tc.mutate != nil {
				tc.mutate(a)
			}
			d := e.Decide(context.Background(), a)
			if d.Code != tc.code || (tc.rule != "" && d.Rule != tc.rule) || (tc.reason != "" && d.Reason != tc.reason) || len(d.Errors) != tc.errs {
				t.Fatalf("decision = %+v\nwant code %s rule %q reason %q errors %d\n%s", d, tc.code, tc.rule, tc.reason, tc.errs, explainText(t, e, a))
			}
		})
	}
}

func TestRegoCompileErrors(t *testing.T) {
	cases := []struct {
		name, module string
		regoLine     int // 0: the problem is placed at the module field itself
		want         string
	}{
		{"parse error", "package p\n\nmatch if {\n\tinput.x ==\n}\n", 5, "rego line 5: rego_parse_error"},
		{"unsafe variable", "package p\n\nmatch if {\n\tx == 1\n}\n", 4, "rego line 4: rego_unsafe_var_error"},
		{"undefined function", "package p\n\nmatch if nope(1)\n", 3, "rego line 3: rego_type_error: undefined function nope"},
		{"http.send is not available", "package p\n\nmatch if {\n\thttp.send({\"method\": \"GET\", \"url\": \"http://x\"})\n}\n", 4, "rego line 4: rego_type_error: undefined function http.send"},
		{"no match rule", "package p\n\nallow := true\n", 0, "must define a boolean rule `match`"},
		{"match as a set", "package p\n\nmatch contains 1\n", 3, "must be a single-value rule"},
		{"reserved package", "package portcullis_internal_result\n\nmatch := true\n", 1, "is reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := buildMesh(t, regoPolicy("p", "ALLOW", tc.module))
			doc := m.AuthorizationPolicies[0]
			moduleLine := m.FieldLine(doc, "spec.rego.module")
			ps := Check(m)
			if len(ps) == 0 {
				t.Fatal("no problems")
			}
			p := ps[0]
			// The module is a block scalar: its text starts on the line after "module: |".
			if p.File != "mesh.yaml" || p.Document != 6 || p.Field != "spec.rego.module" || p.Name != "demo/p" || !strings.Contains(p.Message, tc.want) || p.Line != moduleLine+tc.regoLine {
				t.Fatalf("problem = %s, want %q at line %d", p, tc.want, moduleLine+tc.regoLine)
			}
			if e, ps2 := Compile(m); e != nil || len(ps2) == 0 {
				t.Error("Compile returned an engine for an invalid module")
			}
		})
	}
}

func TestCompilerReusesRegoModules(t *testing.T) {
	c := NewCompiler(Options{})
	m1 := buildMesh(t, regoPolicy("p", "ALLOW", regoAllowAdmins))
	if ps := c.Check(m1); len(ps) > 0 {
		t.Fatal(ps)
	}
	e1, ps := c.Compile(m1)
	if ps != nil {
		t.Fatal(ps)
	}
	m2 := buildMesh(t, regoPolicy("p", "ALLOW", regoAllowAdmins)+policyYAML("other", "", "ALLOW", false, ruleGET))
	e2, ps := c.Compile(m2)
	if ps != nil {
		t.Fatal(ps)
	}
	if e1.policies[0].rego != e2.policies[1].rego {
		t.Error("an unchanged module was compiled again")
	}
	e3, ps := c.Compile(buildMesh(t, regoPolicy("p", "ALLOW", strings.Replace(regoAllowAdmins, "GET", "POST", 1))))
	if ps != nil {
		t.Fatal(ps)
	}
	if e3.policies[0].rego == e1.policies[0].rego || len(c.rego) != 1 {
		t.Errorf("changed module reused, or unused ones kept (%d cached)", len(c.rego))
	}
}

func TestExplain(t *testing.T) {
	e := compile(t, buildMesh(t,
		policyYAML("allow", "backend", "ALLOW", false, rulePOST+"\n"+ruleAdminJWT)+
			policyYAML("deny", "backend", "DENY", false, "  - {name: debug, to: {paths: [\"/debug/*\"]}}")+
			policyYAML("front", "frontend", "ALLOW", false, ruleGET)+
			policyYAML("audit", "", "AUDIT", false, ruleFrontend)))
	x := e.Explain(context.Background(), request(t))
	if x.Decision.Code != CodeJWTRequired {
		t.Fatalf("decision %s", x.Decision.Code)
	}
	byName := map[string]PolicyExplanation{}
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
	text := explainText(t, e, request(t))
	for _, want := range []string{"decision: DENY (jwt_required)", "rule posts: no match", `to.methods: request.method "GET" is not one of [POST]`, "does not apply"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

func TestNoSelectorMeansMeshWide(t *testing.T) {
	// A mesh-wide policy from another namespace applies too: "mesh-wide" means every service.
	m := buildMesh(t, strings.Replace(policyYAML("allow", "", "ALLOW", false, ruleGET), "namespace: demo", "namespace: ops", 1))
	a := request(t)
	if d := compile(t, m).Decide(context.Background(), a); d.Code != CodeAllowed || d.Policy != "ops/allow" {
		t.Fatalf("decision %+v", d)
	}
}
