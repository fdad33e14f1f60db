package policy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
	"github.com/portcullis/portcullis/xds/model"
)

// TestOperators runs one ALLOW rule against one request per case: the rule must match exactly
// when want says so (the mesh default is DENY).
func TestOperators(t *testing.T) {
	roles := map[string]any{"iss": "https://idp.test", "sub": "alice", "exp": 2000000000,
		"realm_access": map[string]any{"roles": []any{"admin", "dev"}}, "scope": "read write",
		"level": 42, "verified": true, "groups": []any{map[string]any{"name": "ops"}}}
	withJWT := func(provider string) func(*Attributes) {
		return func(a *Attributes) { a.JWT = token(t, provider, roles) }
	}
	at := func(s string) func(*Attributes) {
		return func(a *Attributes) {
			tm, err := time.Parse(time.RFC3339, s)
			if err != nil {
				t.Fatal(err)
			}
			a.Request.Time = tm
		}
	}
	set := func(f func(*Attributes)) func(*Attributes) { return f }
	repeated := func(name string, vals ...string) func(*Attributes) {
		return func(a *Attributes) { a.Request.Headers = map[string][]string{name: vals} }
	}
	cases := []struct {
		name   string
		rule   string
		mutate func(*Attributes)
		want   bool
	}{
		// from.principals
		{"principal exact", `from: {principals: ["spiffe://portcullis.local/ns/demo/sa/frontend"]}`, nil, true},
		{"principal exact other", `from: {principals: ["spiffe://portcullis.local/ns/demo/sa/other"]}`, nil, false},
		{"principal prefix", `from: {principals: ["spiffe://portcullis.local/ns/demo/*"]}`, nil, true},
		{"principal suffix", `from: {principals: ["*/sa/frontend"]}`, nil, true},
		{"principal suffix other", `from: {principals: ["*/sa/backend"]}`, nil, false},
		{"principal any authenticated", `from: {principals: ["*"]}`, nil, true},
		{"principal any, unauthenticated", `from: {principals: ["*"]}`, set(func(a *Attributes) { _ = a.Source.SetPrincipal("") }), false},
		{"principals list is OR", `from: {principals: ["*/sa/x", "*/sa/frontend"]}`, nil, true},
		{"notPrincipals excludes", `from: {notPrincipals: ["*/sa/frontend"]}`, nil, false},
		{"notPrincipals other", `from: {notPrincipals: ["*/sa/x"]}`, nil, true},
		{"notPrincipals * means unauthenticated only", `from: {notPrincipals: ["*"]}`, set(func(a *Attributes) { _ = a.Source.SetPrincipal("") }), true},
		// from.namespaces
		{"namespace", `from: {namespaces: [demo]}`, nil, true},
		{"namespace other", `from: {namespaces: [prod]}`, nil, false},
		{"notNamespaces", `from: {notNamespaces: [demo]}`, nil, false},
		{"namespaces need a workload ID", `from: {namespaces: [demo]}`, set(func(a *Attributes) { _ = a.Source.SetPrincipal("spiffe://portcullis.local/custom") }), false},
		// from.jwt
		{"jwt required, absent", `from: {jwt: {}}`, nil, false},
		{"jwt required, present", `from: {jwt: {}}`, withJWT("demo/idp"), true},
		{"jwt provider matches", `from: {jwt: {providers: [idp]}}`, withJWT("demo/idp"), true},
		{"jwt provider other", `from: {jwt: {providers: [idp]}}`, withJWT("demo/other"), false},
		{"claim list contains", `from: {jwt: {claims: [{claim: realm_access.roles, contains: admin}]}}`, withJWT("demo/idp"), true},
		{"claim list contains missing", `from: {jwt: {claims: [{claim: realm_access.roles, contains: root}]}}`, withJWT("demo/idp"), false},
		{"claim list equals any element", `from: {jwt: {claims: [{claim: realm_access.roles, equals: dev}]}}`, withJWT("demo/idp"), true},
		{"claim in", `from: {jwt: {claims: [{claim: sub, in: [bob, alice]}]}}`, withJWT("demo/idp"), true},
		{"claim in misses", `from: {jwt: {claims: [{claim: sub, in: [bob]}]}}`, withJWT("demo/idp"), false},
		{"claim scope word", `from: {jwt: {claims: [{claim: scope, contains: write}]}}`, withJWT("demo/idp"), true},
		{"claim scope not a substring", `from: {jwt: {claims: [{claim: scope, contains: rit}]}}`, withJWT("demo/idp"), false},
		{"claim scope equals is whole", `from: {jwt: {claims: [{claim: scope, equals: read}]}}`, withJWT("demo/idp"), false},
		{"claim matches is anchored", `from: {jwt: {claims: [{claim: sub, matches: "ali"}]}}`, withJWT("demo/idp"), false},
		{"claim matches", `from: {jwt: {claims: [{claim: sub, matches: "al.*"}]}}`, withJWT("demo/idp"), true},
		{"claim number", `from: {jwt: {claims: [{claim: level, equals: "42"}]}}`, withJWT("demo/idp"), true},
		{"claim boolean", `from: {jwt: {claims: [{claim: verified, equals: "true"}]}}`, withJWT("demo/idp"), true},
		{"claim through list of objects", `from: {jwt: {claims: [{claim: groups.name, contains: ops}]}}`, withJWT("demo/idp"), true},
		{"claims all must hold", `from: {jwt: {claims: [{claim: sub, equals: alice}, {claim: level, equals: "1"}]}}`, withJWT("demo/idp"), false},
		// to
		{"method", `to: {methods: [GET, HEAD]}`, nil, true},
		{"method other", `to: {methods: [POST]}`, nil, false},
		{"notMethods", `to: {notMethods: [GET]}`, nil, false},
		{"path exact", `to: {paths: [/api/items]}`, nil, true},
		{"path exact not prefix", `to: {paths: [/api]}`, nil, false},
		{"path prefix", `to: {paths: ["/api/*"]}`, nil, true},
		{"path prefix needs the slash", `to: {paths: ["/api/*"]}`, set(func(a *Attributes) { a.Request.Path = "/apix" }), false},
		{"path prefix any depth", `to: {paths: ["/api/*"]}`, set(func(a *Attributes) { a.Request.Path = "/api/a/b/c" }), true},
		{"path glob one segment", `to: {paths: ["/users/*/orders"]}`, set(func(a *Attributes) { a.Request.Path = "/users/42/orders" }), true},
		{"path glob one segment only", `to: {paths: ["/users/*/orders"]}`, set(func(a *Attributes) { a.Request.Path = "/users/4/2/orders" }), false},
		{"path glob any depth", `to: {paths: ["/files/**"]}`, set(func(a *Attributes) { a.Request.Path = "/files/a/b.txt" }), true},
		{"path glob any depth, zero", `to: {paths: ["/files/**"]}`, set(func(a *Attributes) { a.Request.Path = "/files" }), true},
		{"path glob middle", `to: {paths: ["/a/**/z"]}`, set(func(a *Attributes) { a.Request.Path = "/a/b/c/z" }), true},
		{"path glob middle misses", `to: {paths: ["/a/**/z"]}`, set(func(a *Attributes) { a.Request.Path = "/a/b/c/y" }), false},
		{"path in-segment wildcard", `to: {paths: ["/files/*.pdf"]}`, set(func(a *Attributes) { a.Request.Path = "/files/report.pdf" }), true},
		{"path in-segment wildcard misses", `to: {paths: ["/files/*.pdf"]}`, set(func(a *Attributes) { a.Request.Path = "/files/x/report.pdf" }), false},
		{"notPaths", `to: {notPaths: ["/api/*"]}`, nil, false},
		{"ports", `to: {ports: [8080]}`, nil, true},
		{"ports other", `to: {ports: [9090]}`, nil, false},
		{"host exact", `to: {hosts: [backend.demo]}`, nil, true},
		{"host is case-insensitive", `to: {hosts: [Backend.Demo]}`, nil, true},
		{"host suffix", `to: {hosts: ["*.demo"]}`, nil, true},
		{"host prefix", `to: {hosts: ["backend.*"]}`, nil, true},
		{"host suffix needs a label", `to: {hosts: ["*.backend.demo"]}`, nil, false},
		// when
		{"header equals", `when: [{header: X-Tenant, equals: acme}]`, nil, true},
		{"header absent", `when: [{header: x-missing, matches: ".*"}]`, nil, false},
		{"header present and empty matches .*", `when: [{header: x-empty, matches: ".*"}]`, set(func(a *Attributes) { a.Request.Headers = map[string][]string{"x-empty": {""}} }), true},
		// A header sent more than once is a list: a condition matches when any value does, so a
		// DENY on one value cannot be passed by repeating the header (the values are never
		// joined into "1,1").
		{"repeated header, equals any value", `when: [{header: x-debug, equals: "1"}]`, repeated("x-debug", "1", "1"), true},
		{"repeated header, equals the second value", `when: [{header: x-debug, equals: "1"}]`, repeated("x-debug", "0", "1"), true},
		{"repeated header, no value equals", `when: [{header: x-debug, equals: "1"}]`, repeated("x-debug", "0", "2"), false},
		{"repeated header is not the joined text", `when: [{header: x-debug, equals: "1,1"}]`, repeated("x-debug", "1", "1"), false},
		{"repeated header, in", `when: [{header: x-debug, in: ["1", "yes"]}]`, repeated("x-debug", "no", "yes"), true},
		{"repeated header, matches", `when: [{header: x-debug, matches: "[1-9]"}]`, repeated("x-debug", "0", "7"), true},
		{"repeated header, contains a word of a value", `when: [{header: x-scope, contains: write}]`, repeated("x-scope", "read", "read write"), true},
		{"repeated header, contains no word", `when: [{header: x-scope, contains: rit}]`, repeated("x-scope", "read", "read write"), false},
		{"attribute query", `when: [{attribute: request.query.debug, equals: "1"}]`, set(func(a *Attributes) { a.Request.Query = "debug=1&x=2" }), true},
		{"attribute query repeated", `when: [{attribute: request.query.tag, contains: b}]`, set(func(a *Attributes) { a.Request.Query = "tag=a&tag=b" }), true},
		{"attribute destination.port", `when: [{attribute: destination.port, in: ["8080", "8443"]}]`, nil, true},
		{"attribute source.namespace", `when: [{attribute: source.namespace, equals: demo}]`, nil, true},
		{"attribute jwt.claims nested", `when: [{attribute: jwt.claims.realm_access.roles, contains: dev}]`, withJWT("demo/idp"), true},
		// A top-level claim literally named "realm_access.roles" does not stand in for the nested
		// one; with both, the path is ambiguous and matches nothing.
		{"claim named with dots is not the nested path", `from: {jwt: {claims: [{claim: realm_access.roles, contains: admin}]}}`, set(func(a *Attributes) {
			a.JWT = token(t, "demo/idp", map[string]any{"iss": "https://idp.test", "sub": "mallory", "exp": 2000000000, "realm_access.roles": []any{"admin"}, "realm_access": map[string]any{"roles": []any{"viewer"}}})
		}), false},
		{"attribute jwt.providers", `when: [{attribute: jwt.providers, contains: demo/idp}]`, withJWT("demo/idp"), true},
		{"attribute jwt absent", `when: [{attribute: jwt.subject, matches: ".*"}]`, nil, false},
		{"sourceIPs CIDR", `when: [{sourceIPs: [10.0.0.0/8]}]`, nil, true},
		{"sourceIPs IP", `when: [{sourceIPs: [10.1.2.3]}]`, nil, true},
		{"sourceIPs miss", `when: [{sourceIPs: [192.168.0.0/16, "::1"]}]`, nil, false},
		{"sourceIPs IPv4-mapped", `when: [{sourceIPs: [10.0.0.0/8]}]`, set(func(a *Attributes) { a.Source.Address = netip.MustParseAddr("::ffff:10.9.9.9") }), true},
		{"sourceIPs unknown address", `when: [{sourceIPs: [0.0.0.0/0]}]`, set(func(a *Attributes) { a.Source.Address = netip.Addr{} }), false},
		{"notSourceIPs", `when: [{notSourceIPs: [10.0.0.0/8]}]`, nil, false},
		{"time in window", `when: [{time: {start: "09:00", end: "17:00", days: [Mon, Tue]}}]`, nil, true},
		{"time wrong day", `when: [{time: {start: "09:00", end: "17:00", days: [Tue]}}]`, nil, false},
		{"time end excluded", `when: [{time: {start: "09:00", end: "10:00"}}]`, nil, false},
		{"time start included", `when: [{time: {start: "10:00", end: "11:00"}}]`, nil, true},
		{"time zone", `when: [{time: {start: "09:00", end: "10:00", timeZone: America/New_York}}]`, at("2026-01-05T14:30:00Z"), true},
		{"time wraps midnight, evening", `when: [{time: {start: "22:00", end: "06:00", days: [Mon]}}]`, at("2026-01-05T23:00:00Z"), true},
		{"time wraps midnight, next morning belongs to Mon", `when: [{time: {start: "22:00", end: "06:00", days: [Mon]}}]`, at("2026-01-06T05:00:00Z"), true},
		{"time wraps midnight, Mon morning belongs to Sun", `when: [{time: {start: "22:00", end: "06:00", days: [Mon]}}]`, at("2026-01-05T05:00:00Z"), false},
		{"time until 24:00", `when: [{time: {start: "20:00", end: "24:00"}}]`, at("2026-01-05T23:59:00Z"), true},
		{"time unknown", `when: [{time: {start: "00:00", end: "24:00"}}]`, set(func(a *Attributes) { a.Request.Time = time.Time{} }), false},
		// a rule's parts AND
		{"from and to both match", `{from: {namespaces: [demo]}, to: {methods: [GET]}}`, nil, true},
		{"from matches, to does not", `{from: {namespaces: [demo]}, to: {methods: [POST]}}`, nil, false},
		{"all when conditions hold", `when: [{header: x-tenant, equals: acme}, {sourceIPs: [10.0.0.0/8]}]`, nil, true},
		{"one when condition fails", `when: [{header: x-tenant, equals: acme}, {sourceIPs: [11.0.0.0/8]}]`, nil, false},
		{"methods AND paths", `to: {methods: [GET], paths: [/other]}`, nil, false},
		{"empty rule matches everything", `{}`, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rule := tc.rule
			if !strings.HasPrefix(rule, "{") {
				rule = "{" + rule + "}"
			}
			e := compile(t, testmesh.Build(t, `apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
  - `+rule+"\n"))
			a := request(t)
			if tc.mutate != nil {
				tc.mutate(a)
			}
			d := e.Decide(context.Background(), a)
			if d.Allow != tc.want {
				t.Fatalf("allow = %v (%s: %s), want %v\n%s", d.Allow, d.Code, d.Reason, tc.want, traceText(e, a))
			}
		})
	}
}

// TestEveryAttributePathHasAGetter keeps the engine in step with the schema's attribute paths.
func TestEveryAttributePathHasAGetter(t *testing.T) {
	for _, p := range model.AttributePaths() {
		if strings.HasSuffix(p, ".") {
			p += "x"
		}
		if _, err := getterFor(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// traceText is every policy's trace for a request, for failure messages (authz/policy/explain
// renders it for people).
func traceText(e *Engine, a *Attributes) string {
	var b strings.Builder
	for _, p := range e.Trace(context.Background(), a) {
		fmt.Fprintf(&b, "%s %s applies=%v matched=%v\n", p.Action, p.Policy, p.Applies, p.Matched)
		for _, r := range p.Rules {
			fmt.Fprintf(&b, "  rule %s matched=%v %v\n", r.Rule, r.Matched, r.Mismatches)
		}
		if p.Rego != nil {
			fmt.Fprintf(&b, "  rego %+v\n", *p.Rego)
		}
	}
	return b.String()
}

func TestNormalizePath(t *testing.T) {
	cases := []struct {
		in, path, query string
		err             error
	}{
		{"/", "/", "", nil},
		{"/api/items", "/api/items", "", nil},
		{"/api/items?x=1&y=2", "/api/items", "x=1&y=2", nil},
		{"/api/items#frag", "/api/items", "", nil},
		{"/api//items", "/api/items", "", nil},
		{"//api///items/", "/api/items/", "", nil},
		{"/api/./items", "/api/items", "", nil},
		{"/api/../admin", "/admin", "", nil},
		{"/api/items/..", "/api/", "", nil},
		{"/../../etc/passwd", "/etc/passwd", "", nil},
		{"/api/%2e%2e/admin", "/admin", "", nil},
		{"/api%2Fadmin", "/api/admin", "", nil},
		{"/api/%252e%252e/admin", "/api/%2e%2e/admin", "", nil},
		{"/caf%C3%A9", "/café", "", nil},
		{"/a/.../b", "/a/.../b", "", nil},
		{"/a/.hidden", "/a/.hidden", "", nil},
		{"/api/items/", "/api/items/", "", nil},
		{"/a?b?c", "/a", "b?c", nil},
		{"*", "*", "", nil},
		{"", "", "", ErrPathEmpty},
		{"?x=1", "", "", ErrPathEmpty},
		{"api/items", "", "", ErrPathRelative},
		{"/api/%zz", "", "", ErrPathEncoding},
		{"/api/%2", "", "", ErrPathEncoding},
		{"/api\\admin", "", "", ErrPathForbidden},
		{"/api%5cadmin", "", "", ErrPathForbidden},
		{"/api%00", "", "", ErrPathForbidden},
		{"/api\x01", "", "", ErrPathForbidden},
		// Tomcat and Jetty resolve "..;" (a dot segment with path parameters) as "..".
		{"/api/..;/admin", "", "", ErrPathDotParams},
		{"/api/.;x/admin", "", "", ErrPathDotParams},
		{"/api/%2e%2e;/admin", "", "", ErrPathDotParams},
		{"/api/%2e%2e%3b/admin", "", "", ErrPathDotParams},
		{"/api;v=1/items", "/api;v=1/items", "", nil},
		{"/a/...;/b", "/a/...;/b", "", nil},
		// Bytes that are not UTF-8 once decoded: "%c0%ae" is an overlong "." to lax decoders.
		{"/%c0%ae%c0%ae/admin", "", "", ErrPathUTF8},
		{"/api/%ff", "", "", ErrPathUTF8},
		{"/api/\xff", "", "", ErrPathUTF8},
		{"/caf\xc3\xa9", "/caf\xc3\xa9", "", nil},
	}
	for _, tc := range cases {
		path, query, err := NormalizePath(tc.in)
		if path != tc.path || query != tc.query || err != tc.err {
			t.Errorf("NormalizePath(%q) = %q, %q, %v; want %q, %q, %v", tc.in, path, query, err, tc.path, tc.query, tc.err)
		}
	}
}

func TestCheckMethod(t *testing.T) {
	for m, want := range map[string]string{
		"GET": "", "DELETE": "", "M-SEARCH": "", "UPDATEREDIRECTREF": "", "CUSTOM_1": "",
		"delete": "not upper case", "Delete": "not upper case", "": "empty",
		"GET /x": "not an HTTP token", "DEL\x00": "not an HTTP token", "GÉT": "not an HTTP token",
		strings.Repeat("A", 33): "longer than 32",
	} {
		err := CheckMethod(m)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CheckMethod(%q) = %v, want %q", m, err, want)
		}
	}
}

func TestHostWithoutPort(t *testing.T) {
	for in, want := range map[string]string{
		"Backend.Demo:8080": "backend.demo", "backend": "backend", "[::1]:80": "::1", "[::1]": "::1",
		"example.com.": "example.com", "10.0.0.1:443": "10.0.0.1",
	} {
		if got := HostWithoutPort(in); got != want {
			t.Errorf("HostWithoutPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecisionIDs(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := NewDecisionID(testmesh.Monday10.Add(time.Duration(i) * time.Millisecond))
		if len(id) != 26 || strings.Trim(id, crockford) != "" {
			t.Fatalf("id %q is not a ULID", id)
		}
		if seen[id] || id[:10] < prev {
			t.Fatalf("id %q repeated or out of time order", id)
		}
		seen[id], prev = true, id[:10]
	}
}

// FuzzNormalizePath checks the normaliser's invariants on arbitrary request targets: no dot
// segments, no empty segments, a leading "/", and nothing left to do on a second pass when the
// result has no "%" (decoding happens once, by design).
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x//y/", "/%2e%2e/%2F", "/a?b#c", "/a/./b/.", "*", "/%252e", "/a\\b", "/..%2f..%2fetc", "/..;/a", "/%c0%ae", "/a;b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		path, query, err := NormalizePath(target)
		if err != nil {
			return
		}
		if path == "*" {
			return
		}
		if !strings.HasPrefix(path, "/") || strings.Contains(path, "//") || strings.Contains(path, "\\") {
			t.Fatalf("%q → %q", target, path)
		}
		if !utf8.ValidString(path) {
			t.Fatalf("%q → %q is not UTF-8", target, path)
		}
		for _, seg := range strings.Split(path[1:], "/") {
			base, _, _ := strings.Cut(seg, ";")
			if seg == "." || seg == ".." || base == "." || base == ".." {
				t.Fatalf("%q → %q has a dot segment", target, path)
			}
		}
		if strings.ContainsAny(query, "#") {
			t.Fatalf("query %q keeps a fragment", query)
		}
		if !strings.Contains(path, "%") {
			again, _, err := NormalizePath(path)
			if err != nil || again != path {
				t.Fatalf("not idempotent: %q → %q → %q (%v)", target, path, again, err)
			}
		}
	})
}

// FuzzCheckMethod checks what CheckMethod lets through: a method of at most 32 token characters
// with no lower-case letter, so a policy on DELETE sees every spelling an application could
// take for DELETE.
func FuzzCheckMethod(f *testing.F) {
	for _, s := range []string{"GET", "delete", "Delete", "M-SEARCH", "", "GET /", "DEL\x00", "GÉT", "PATCH"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, m string) {
		err := CheckMethod(m)
		if err != nil {
			return
		}
		if m == "" || len(m) > maxMethodLen || strings.ToUpper(m) != m {
			t.Fatalf("CheckMethod(%q) accepted it", m)
		}
		for i := 0; i < len(m); i++ {
			if !isTokenChar(m[i]) {
				t.Fatalf("CheckMethod(%q) accepted byte %q", m, m[i])
			}
		}
	})
}

// FuzzHeaderConditions checks header lists against a DENY on one value, through a compiled
// engine: whatever values a header is sent with, in whatever order, the request is denied
// exactly when one of them is the value (a rule's equals, and Rego over headerValues).
func FuzzHeaderConditions(f *testing.F) {
	// A budget no fuzzing worker starved of CPU runs out of: this is about header values.
	e, ps := NewCompiler(Options{RegoBudget: time.Minute}).Compile(testmesh.Build(f, testmesh.Policy("allow-all", "backend", "ALLOW", false, "    - {}")+`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-debug, namespace: demo}
spec:
  selector: {service: backend}
  action: DENY
  rules: [{name: debug, when: [{header: x-debug, equals: "1"}]}]
---
`+testmesh.Rego("deny-debug-rego", "DENY", "package m\nmatch if \"2\" in input.request.headerValues[\"x-debug\"]\n")))
	if ps != nil {
		f.Fatal(ps)
	}
	for _, s := range []string{"1", "0\n1", "1,1", "0\n0", "", "2", "0\n2\n1", " 1", "1 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lines string) {
		vals := strings.Split(lines, "\n")
		if len(vals) > 16 {
			return
		}
		a := request(t)
		a.Request.Headers = map[string][]string{"x-debug": vals}
		d := e.Decide(context.Background(), a)
		want := slices.Contains(vals, "1") || slices.Contains(vals, "2")
		if d.Allow == want || len(d.Errors) > 0 {
			t.Fatalf("x-debug %q: decision %s (%s, errors %v), want denied=%v", vals, d.Code, d.Reason, d.Errors, want)
		}
	})
}
