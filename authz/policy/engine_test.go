package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
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
		{name: "ALLOW matches", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET),
			code: CodeAllowed, policy: "demo/allow", rule: "gets"},
		{name: "ALLOW does not match: default DENY", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RulePOST), code: CodeDeniedDefault},
		{name: "DENY overrides ALLOW", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.Policy("deny", "backend", "DENY", false, testmesh.RuleAPI),
			code: CodeDenied, policy: "demo/deny", rule: "api"},
		{name: "DENY overrides a default ALLOW", docs: testmesh.Policy("deny", "", "DENY", false, testmesh.RuleAPI), def: "ALLOW", code: CodeDenied, policy: "demo/deny"},
		{name: "DENY that does not match leaves ALLOW", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.Policy("deny", "backend", "DENY", false, testmesh.RulePOST),
			code: CodeAllowed, policy: "demo/allow"},
		{name: "rules are OR: second rule matches", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RulePOST+"\n"+testmesh.RuleAPI), code: CodeAllowed, rule: "api"},
		{name: "first matching rule is reported", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAPI+"\n"+testmesh.RuleGET), code: CodeAllowed, rule: "api"},
		{name: "unnamed rules are named by position", docs: testmesh.Policy("allow", "backend", "ALLOW", false, "  - {to: {methods: [POST]}}\n  - {to: {methods: [GET]}}"), code: CodeAllowed, rule: "rules[1]"},
		{name: "policies apply in name order", docs: testmesh.Policy("b-allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.Policy("a-allow", "backend", "ALLOW", false, testmesh.RuleAPI),
			code: CodeAllowed, policy: "demo/a-allow"},
		{name: "selector for another service does not apply", docs: testmesh.Policy("allow", "frontend", "ALLOW", false, testmesh.RuleGET), code: CodeDeniedDefault},
		{name: "no selector: applies to its namespace", docs: testmesh.Policy("allow", "", "ALLOW", false, testmesh.RuleGET), code: CodeAllowed, policy: "demo/allow"},
		{name: "no selector: applies to unknown services of its namespace", docs: testmesh.Policy("allow", "", "ALLOW", false, testmesh.RuleGET),
			mutate: func(a *Attributes) { a.Destination.Service = "ghost" }, code: CodeAllowed},
		{name: "no selector: does not apply to another namespace", docs: testmesh.Policy("allow", "", "ALLOW", false, testmesh.RuleAnyone),
			mutate: func(a *Attributes) { a.Destination.Namespace = "tenant-b" }, code: CodeDeniedDefault},
		{name: "no selector in the root namespace: applies everywhere", docs: testmesh.PolicyIn(testmesh.Root, "allow", "", "ALLOW", false, testmesh.RuleGET),
			mutate: func(a *Attributes) { a.Destination.Service, a.Destination.Namespace = "ghost", "nowhere" }, code: CodeAllowed, policy: testmesh.Root + "/allow"},
		{name: "service policy does not apply to unknown destinations", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET),
			mutate: func(a *Attributes) { a.Destination.Service = "ghost" }, code: CodeDeniedDefault},
		{name: "namespace DENY beats service ALLOW", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.Policy("zz-deny", "", "DENY", false, testmesh.RuleAPI),
			code: CodeDenied, policy: "demo/zz-deny"},
		{name: "root namespace DENY beats service ALLOW", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.PolicyIn(testmesh.Root, "deny", "", "DENY", false, testmesh.RuleAPI),
			code: CodeDenied, policy: testmesh.Root + "/deny"},
		{name: "another namespace's DENY does not apply", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.PolicyIn("tenant-b", "deny", "", "DENY", false, testmesh.RuleAnyone),
			code: CodeAllowed, policy: "demo/allow"},
		{name: "AUDIT never changes the decision", docs: testmesh.Policy("audit", "backend", "AUDIT", false, testmesh.RuleGET), code: CodeDeniedDefault, audits: 1},
		{name: "AUDIT is recorded with an ALLOW", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.Policy("audit", "", "AUDIT", false, testmesh.RuleAPI),
			code: CodeAllowed, audits: 1},
		{name: "dry-run DENY does not deny, but says it would", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET) + testmesh.Policy("deny", "backend", "DENY", true, testmesh.RuleAPI),
			code: CodeAllowed, policy: "demo/allow",
			dryRun: &DryRun{Allow: false, Code: CodeDenied, Policy: "demo/deny", Rule: "api", Changed: true}},
		{name: "dry-run ALLOW does not allow, but says it would", docs: testmesh.Policy("allow", "backend", "ALLOW", true, testmesh.RuleGET),
			code: CodeDeniedDefault, dryRun: &DryRun{Allow: true, Code: CodeAllowed, Policy: "demo/allow", Rule: "gets", Changed: true}},
		{name: "dry-run ALLOW cannot undo a DENY", docs: testmesh.Policy("deny", "backend", "DENY", false, testmesh.RuleGET) + testmesh.Policy("allow", "backend", "ALLOW", true, testmesh.RuleGET),
			code: CodeDenied, dryRun: &DryRun{Allow: false, Code: CodeDenied, Policy: "demo/deny", Rule: "gets"}},
		{name: "dry-run that does not match", docs: testmesh.Policy("deny", "backend", "DENY", true, testmesh.RulePOST),
			code: CodeDeniedDefault, dryRun: &DryRun{Allow: false, Code: CodeDeniedDefault}},
		{name: "dry-run AUDIT", docs: testmesh.Policy("audit", "backend", "AUDIT", true, testmesh.RuleGET),
			code: CodeDeniedDefault, dryRun: &DryRun{Allow: false, Code: CodeDeniedDefault}},
		{name: "no token, a JWT rule would allow: jwt_required", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAdminJWT),
			code: CodeJWTRequired, policy: "demo/allow", rule: "admins"},
		{name: "no token, JWT rule would not allow anyway: plain deny", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAdminJWT),
			mutate: func(a *Attributes) { a.Request.Path = "/other" }, code: CodeDeniedDefault},
		{name: "token present but wrong provider: plain deny", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAdminJWT),
			mutate: func(a *Attributes) {
				a.JWT = token(t, "demo/other", map[string]any{"iss": "https://other.test", "exp": 2000000000})
			}, code: CodeDeniedDefault},
		{name: "from.jwt without providers: a token of the destination's namespace", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAnyJWT),
			mutate: func(a *Attributes) { a.JWT = token(t, "demo/idp", map[string]any{"iss": "https://idp.test"}) }, code: CodeAllowed, rule: "any-token"},
		{name: "from.jwt without providers: a token of the root namespace", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAnyJWT),
			mutate: func(a *Attributes) {
				a.JWT = token(t, testmesh.Root+"/corp", map[string]any{"iss": "https://corp.test"})
			}, code: CodeAllowed},
		{name: "from.jwt without providers: another namespace's token does not count", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAnyJWT),
			mutate: func(a *Attributes) { a.JWT = token(t, "tenant-a/evil", map[string]any{"iss": "https://evil.test"}) }, code: CodeDeniedDefault},
		{name: "from.jwt names a provider of the root namespace", docs: testmesh.Provider(testmesh.Root, "corp", "https://corp.test", "") +
			testmesh.Policy("allow", "backend", "ALLOW", false, "  - {name: corp, from: {jwt: {providers: [corp]}}}"),
			mutate: func(a *Attributes) {
				a.JWT = token(t, testmesh.Root+"/corp", map[string]any{"iss": "https://corp.test"})
			}, code: CodeAllowed, rule: "corp"},
		{name: "no provider verifies tokens for the destination: no 401", docs: testmesh.PolicyIn(testmesh.Root, "allow", "", "ALLOW", false, testmesh.RuleAnyJWT),
			mutate: func(a *Attributes) { a.Destination.Namespace = "tenant-b" }, code: CodeDeniedDefault},
		{name: "a root namespace provider verifies tokens everywhere: 401", docs: testmesh.Provider(testmesh.Root, "corp", "https://corp.test", "") +
			testmesh.PolicyIn(testmesh.Root, "allow", "", "ALLOW", false, testmesh.RuleAnyJWT),
			mutate: func(a *Attributes) { a.Destination.Namespace = "tenant-b" }, code: CodeJWTRequired},
		{name: "explicit DENY is never 401", docs: testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleAdminJWT) + testmesh.Policy("deny", "backend", "DENY", false, testmesh.RuleGET),
			code: CodeDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			def := "DENY"
			if tc.def != "" {
				def = tc.def
			}
			e := compile(t, testmesh.Build(t, tc.docs, def))
			a := request(t)
			if tc.mutate != nil {
				tc.mutate(a)
			}
			d := e.Decide(context.Background(), a)
			wantAllow := tc.code == CodeAllowed || tc.code == CodeAllowedDefault
			if d.Code != tc.code || d.Allow != wantAllow {
				t.Fatalf("decision %s/%v (%s), want %s\n%s", d.Code, d.Allow, d.Reason, tc.code, traceText(e, a))
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

// regoConflict fails to evaluate for request(t): both definitions of v hold, a conflict.
const regoConflict = "package bad\n\ndefault match := false\n\nmatch if v > 1\n\nv := 1 if input.request.method == \"GET\"\n\nv := 2 if input.request.headers[\"x-tenant\"] == \"acme\"\n"

// regoDenyDebug matches when any value of x-debug is "1", however often the header was sent.
const regoDenyDebug = "package m\n\nmatch if \"1\" in input.request.headerValues[\"x-debug\"]\n\nrule := \"debug\"\n"

func TestRego(t *testing.T) {
	admin := func(a *Attributes) {
		a.JWT = token(t, "demo/idp", map[string]any{"iss": "https://idp.test", "sub": "alice", "exp": 2000000000, "roles": []any{"admin"}})
	}
	cases := []struct {
		name   string
		docs   string
		mutate func(*Attributes)
		code   Code
		rule   string
		reason string
		errs   int
	}{
		{"ALLOW by rego", testmesh.Rego("allow", "ALLOW", regoAllowAdmins), admin, CodeAllowed, "admins-by-rego", "admin alice", 0},
		{"rego does not match", testmesh.Rego("allow", "ALLOW", regoAllowAdmins), nil, CodeDeniedDefault, "", "", 0},
		{"DENY by rego", testmesh.Rego("deny", "DENY", regoAllowAdmins) + testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET), admin, CodeDenied, "admins-by-rego", "admin alice", 0},
		{"only match defined", testmesh.Rego("allow", "ALLOW", "package m\nmatch := true\n"), nil, CodeAllowed, "rego", "rego module matched", 0},
		{"match not boolean is false", testmesh.Rego("allow", "ALLOW", "package m\nmatch := \"yes\"\n"), nil, CodeDeniedDefault, "", "", 0},
		{"eval error in ALLOW fails closed", testmesh.Rego("allow", "ALLOW", regoConflict), nil, CodeDeniedDefault, "", "", 1},
		{"eval error in DENY fails closed", testmesh.Rego("deny", "DENY", regoConflict) + testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET), nil, CodeDenied, "rego", "rego evaluation failed (fail closed)", 1},
		{"headerValues has every value of a repeated header", testmesh.Rego("deny", "DENY", regoDenyDebug) + testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET),
			func(a *Attributes) { a.Request.Headers = map[string][]string{"x-debug": {"0", "1"}} }, CodeDenied, "debug", "", 0},
		{"headers keeps the joined text", testmesh.Rego("allow", "ALLOW", "package m\nmatch if input.request.headers[\"x-debug\"] == \"0,1\"\n"),
			func(a *Attributes) { a.Request.Headers = map[string][]string{"x-debug": {"0", "1"}} }, CodeAllowed, "rego", "", 0},
		{"rules and rego: a rule matching is enough", strings.Replace(testmesh.Rego("allow", "ALLOW", regoAllowAdmins), "  rego:", "  rules: [{name: gets, to: {methods: [GET]}}]\n  rego:", 1), nil, CodeAllowed, "gets", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := compile(t, testmesh.Build(t, tc.docs))
			a := request(t)
			if tc.mutate != nil {
				tc.mutate(a)
			}
			d := e.Decide(context.Background(), a)
			if d.Code != tc.code || (tc.rule != "" && d.Rule != tc.rule) || (tc.reason != "" && d.Reason != tc.reason) || len(d.Errors) != tc.errs {
				t.Fatalf("decision = %+v\nwant code %s rule %q reason %q errors %d\n%s", d, tc.code, tc.rule, tc.reason, tc.errs, traceText(e, a))
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
		// Builtins that allocate without bound in one uninterruptible call (budget.go).
		{"bits.lsh is not available", "package p\n\nmatch if bits.lsh(1, 1000000000000) > 0\n", 3, "rego line 3: bits.lsh is not available"},
		{"strings.render_template is not available", "package p\n\nmatch if {\n\tstrings.render_template(\"{{range 1000000000}}x{{end}}\", {}) != \"\"\n}\n", 4, "strings.render_template is not available"},
		{"graph.reachable_paths is not available", "package p\n\nmatch if count(graph.reachable_paths({}, {})) > 0\n", 3, "graph.reachable_paths is not available"},
		{"sprintf with a wide field", "package p\n\nmatch if {\n\tsprintf(\"%999999999d\", [1]) != \"\"\n}\n", 4, "rego line 4: sprintf: width or precision 999999999 is above 256"},
		{"sprintf with a width from an argument", "package p\n\nmatch if {\n\tx := sprintf(\"%*d\", [1000000000, 1])\n\tx != \"\"\n}\n", 4, "\"*\""},
		{"sprintf with a precision from an argument", "package p\n\nmatch if {\n\tsprintf(\"%.[1]*f\", [1000000000, 1.5]) != \"\"\n}\n", 4, "\"*\""},
		{"sprintf with a format from the input", "package p\n\nmatch if {\n\tsprintf(input.request.path, []) != \"\"\n}\n", 4, "format must be a literal string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := testmesh.Build(t, testmesh.Rego("p", "ALLOW", tc.module))
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
	m1 := testmesh.Build(t, testmesh.Rego("p", "ALLOW", regoAllowAdmins))
	if ps := c.Check(m1); len(ps) > 0 {
		t.Fatal(ps)
	}
	e1, ps := c.Compile(m1)
	if ps != nil {
		t.Fatal(ps)
	}
	m2 := testmesh.Build(t, testmesh.Rego("p", "ALLOW", regoAllowAdmins)+testmesh.Policy("other", "", "ALLOW", false, testmesh.RuleGET))
	e2, ps := c.Compile(m2)
	if ps != nil {
		t.Fatal(ps)
	}
	if e1.policies[0].rego != e2.policies[1].rego {
		t.Error("an unchanged module was compiled again")
	}
	e3, ps := c.Compile(testmesh.Build(t, testmesh.Rego("p", "ALLOW", strings.Replace(regoAllowAdmins, "GET", "POST", 1))))
	if ps != nil {
		t.Fatal(ps)
	}
	if e3.policies[0].rego == e1.policies[0].rego || len(c.rego) != 1 {
		t.Errorf("changed module reused, or unused ones kept (%d cached)", len(c.rego))
	}
}

// TestTrace: every rule of every applying policy is evaluated, each failed part named in the
// order the rule tests it; policies for other services are listed without being evaluated; a
// failing Rego module counts as a match for a DENY policy, as in Decide.
func TestTrace(t *testing.T) {
	e := compile(t, testmesh.Build(t,
		testmesh.Policy("allow", "backend", "ALLOW", false, "  - {name: r, from: {namespaces: [prod]}, to: {methods: [POST], paths: [\"/x\"]}}\n"+testmesh.RuleGET)+
			testmesh.Policy("front", "frontend", "ALLOW", false, testmesh.RuleGET)+
			testmesh.Rego("rego-deny", "DENY", regoConflict)))
	trace := e.Trace(context.Background(), request(t))
	by := map[string]Evaluation{}
	for _, p := range trace {
		by[p.Policy] = p
	}
	if len(trace) != 3 {
		t.Fatalf("trace has %d policies, want every policy of the mesh", len(trace))
	}
	allow := by["demo/allow"]
	if !allow.Applies || !allow.Matched || len(allow.Rules) != 2 || allow.Rules[0].Matched || !allow.Rules[1].Matched {
		t.Fatalf("allow = %+v", allow)
	}
	var fields []string
	for _, m := range allow.Rules[0].Mismatches {
		fields = append(fields, m.Field)
	}
	if got := strings.Join(fields, ","); got != "from.namespaces,to.methods,to.paths" {
		t.Errorf("mismatches %s, want every failed part in cost order", got)
	}
	if front := by["demo/front"]; front.Applies || front.Rules != nil || front.Selector.String() != "demo/frontend" {
		t.Errorf("front = %+v", front)
	}
	if r := by["demo/rego-deny"]; !r.Matched || r.Rego == nil || r.Rego.Error == "" {
		t.Errorf("rego-deny = %+v (a failing module must fail closed)", r)
	}
}
