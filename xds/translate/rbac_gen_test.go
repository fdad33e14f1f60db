package translate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/xds/model"
)

// The vocabulary policy sets and requests are generated from: a trust domain, the destination
// (backend.demo, service port 8080), callers (a workload ID per namespace, a batch account, an
// ID that is no workload's, and none: a plaintext caller), methods, paths and headers.
const (
	genTrustDomain = "td.test"
	genRoot        = model.DefaultRootNamespace
	genNamespace   = "demo"
	genService     = "backend"
	genPort        = 8080
)

var (
	genCallers = []string{
		"spiffe://td.test/ns/demo/sa/frontend", "spiffe://td.test/ns/demo/sa/batch",
		"spiffe://td.test/ns/ops/sa/admin", "spiffe://td.test/ns/other/sa/frontend",
		"spiffe://td.test/custom/agent", "", // "": no client certificate (PERMISSIVE plaintext)
	}
	genPrincipalPatterns = []string{
		"spiffe://td.test/ns/demo/sa/frontend", "spiffe://td.test/ns/ops/sa/admin", "spiffe://td.test/ns/demo/*",
		"spiffe://td.test/*", "*/sa/batch", "*/frontend", "*", "spiffe://td.test/custom/agent",
	}
	genNamespaces  = []string{"demo", "ops", "other"}
	genMethods     = []string{"GET", "POST", "DELETE", "PUT"}
	genPathPattern = []string{
		"/api/*", "/api/items", "/admin", "/admin/*", "/files/*/r*.pdf", "/docs/**", "/a/*/b", "/", "/**/x",
		"/api/*/edit", "/x.y",
	}
	// genPlainPaths read the same in Envoy and the engine; a native route decides them.
	genPlainPaths = []string{
		"/api/items", "/api/", "/api", "/admin", "/admin/users", "/files/x/r1.pdf", "/files/x/y/r.pdf",
		"/files/x/q.pdf", "/docs", "/docs/a/b", "/a/x/b", "/", "/other", "/x.y", "/a/b/x",
		"/api/items/edit", "/api/items?id=1&b=2", "/admin?debug=1", "/...", "/.well-known/x", "/API/items",
	}
	// genAttackPaths are spellings the two sides could read differently: encodings, dot and
	// empty segments, parameters, non-ASCII, bad queries.
	genAttackPaths = []string{
		"/api/%2e%2e/admin", "/api/../admin", "/api/./items", "//admin", "/api//items", "/ad%6din",
		"/api/items%2F..%2Fadmin", "/a//b", "/api/items;x=1", "/admin/..;/api/items", "/api/items?a=%zz", "/api/items?a;b",
		"/api/%2e%2e%2fadmin", "/docs/%C3%A9", "/docs/\xc3\xa9", "/admin/.", "/admin/..", "/api/items#x",
		"/%2e%2e/admin", "/ADMIN", "/admin%20", "/api/items%00", "/api\\items", "/api/items?x=%2e%2e/admin",
		"/files/x/r1%2Epdf",
	}
	genAttackMethods = []string{"get", "PROPFIND", "Get", "TRACE"}
	genHostPatterns  = []string{"backend", "*.demo.svc", "backend.*", "Backend.Demo", "*.svc"}
	genPlainHosts    = []string{"backend", "BACKEND", "backend.", "backend:8080", "x.demo.svc", "backend.demo", "Backend.Demo.:80", "demo.svc", "backend.demo.svc", "backend..", ".demo.svc"}
	genAttackHosts   = []string{"[::1]:8080", "backend:abc", "backend:", "b\u212aend", "backend\xc3\xa9", "backend:80:90", "[backend]"}
	genTenants       = []string{"acme", "globex", "ACME", "acme ", "initech"}
	genScopes        = []string{"write", "read write", "writer", "read", "write read", ""}
)

// genSet is a generated policy set and what the generator knows about it.
type genSet struct {
	defaultDecision model.Decision
	policies        []*model.AuthorizationPolicyDoc
	// expressible is false when a policy that applies to backend.demo has a shape RBAC cannot
	// express (the translator must then keep the route on ext_authz).
	expressible bool
	// why names the first inexpressible shape the generator put in.
	why string
}

func (s *genSet) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "defaultDecision %s, expressible %v %s\n", s.defaultDecision, s.expressible, s.why)
	for _, p := range s.policies {
		out, _ := yaml.Marshal(p)
		b.WriteString("---\n")
		b.Write(out)
	}
	return b.String()
}

func pick[T any](r *rand.Rand, list []T) T { return list[r.IntN(len(list))] }

// some picks 1 to n distinct elements.
func some[T comparable](r *rand.Rand, list []T, n int) []T {
	var out []T
	for range 1 + r.IntN(n) {
		if v := pick(r, list); !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// genPolicySet generates one to four policies; most are expressible, some carry a shape that is
// not (or apply elsewhere, where whatever they say must not matter).
func genPolicySet(r *rand.Rand) *genSet {
	s := &genSet{defaultDecision: model.DecisionDeny, expressible: true}
	if r.IntN(3) == 0 {
		s.defaultDecision = model.DecisionAllow
	}
	for i := range 1 + r.IntN(4) {
		p := &model.AuthorizationPolicyDoc{
			TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindAuthorizationPolicy},
			Metadata: model.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
		}
		applies := true
		switch r.IntN(6) {
		case 0:
			p.Metadata.Namespace = genRoot
		case 1:
			p.Metadata.Namespace = "other" // applies to other's services only
			applies = false
		case 2, 3:
			p.Metadata.Namespace = genNamespace
		default:
			p.Metadata.Namespace = genNamespace
			p.Spec.Selector = &model.Selector{Service: genService}
		}
		p.Spec.Action = model.ActionAllow
		if r.IntN(3) == 0 {
			p.Spec.Action = model.ActionDeny
		}
		for range 1 + r.IntN(3) {
			p.Spec.Rules = append(p.Spec.Rules, genRule(r))
		}
		why := ""
		if to := p.Spec.Rules[0].To; to != nil {
			to.Ports = nil // a rule for another port is dropped whatever else it says
		}
		switch r.IntN(40) {
		case 0:
			p.Spec.Action, why = model.ActionAudit, "audit"
		case 1:
			p.Spec.DryRun, why = true, "dry run"
		case 2:
			p.Spec.Rules[0].When = append(p.Spec.Rules[0].When, model.Condition{Time: &model.TimeWindow{Start: "00:00", End: "24:00"}})
			why = "time"
		case 3:
			p.Spec.Rego = &model.RegoPolicy{Module: "package p\n\nmatch if input.request.method == \"POST\"\n"}
			why = "rego"
		case 4:
			p.Spec.Rules[0].When = append(p.Spec.Rules[0].When, model.Condition{SourceIPs: []string{"::/0"}})
			why = "sourceIPs IPv6"
		case 5:
			p.Spec.Rules[0].When = append(p.Spec.Rules[0].When, model.Condition{Header: "x-tenant", ValueMatch: model.ValueMatch{Matches: ptr("ac.*")}})
			why = "header matches"
		case 6:
			p.Spec.Rules[0].When = append(p.Spec.Rules[0].When, model.Condition{Attribute: "request.query.id", ValueMatch: model.ValueMatch{Equals: ptr("1")}})
			why = "attribute"
		}
		if why != "" && applies && s.expressible {
			s.expressible, s.why = false, p.Metadata.Namespace+"/"+p.Metadata.Name+": "+why
		}
		s.policies = append(s.policies, p)
	}
	return s
}

// genRule generates an expressible rule: each part present with some probability.
func genRule(r *rand.Rand) model.Rule {
	var rule model.Rule
	from := &model.Source{}
	if r.IntN(2) == 0 {
		from.Principals = some(r, genPrincipalPatterns, 2)
	}
	if r.IntN(5) == 0 {
		from.NotPrincipals = some(r, genPrincipalPatterns, 2)
	}
	if r.IntN(4) == 0 {
		from.Namespaces = some(r, genNamespaces, 2)
	}
	if r.IntN(6) == 0 {
		from.NotNamespaces = some(r, genNamespaces, 2)
	}
	if len(from.Principals)+len(from.NotPrincipals)+len(from.Namespaces)+len(from.NotNamespaces) > 0 {
		rule.From = from
	}
	to := &model.Operation{}
	if r.IntN(2) == 0 {
		to.Methods = some(r, genMethods, 2)
	}
	if r.IntN(6) == 0 {
		to.NotMethods = some(r, genMethods, 2)
	}
	if r.IntN(2) == 0 {
		to.Paths = some(r, genPathPattern, 2)
	}
	if r.IntN(5) == 0 {
		to.NotPaths = some(r, genPathPattern, 2)
	}
	if r.IntN(6) == 0 {
		to.Ports = []uint32{pick(r, []uint32{genPort, 9999})}
	}
	if r.IntN(5) == 0 {
		to.Hosts = some(r, genHostPatterns, 2)
	}
	if len(to.Methods)+len(to.NotMethods)+len(to.Paths)+len(to.NotPaths)+len(to.Ports)+len(to.Hosts) > 0 {
		rule.To = to
	}
	for range r.IntN(3) {
		var c model.Condition
		switch r.IntN(6) {
		case 0:
			c.Header, c.Equals = pick(r, []string{"x-tenant", "X-Tenant"}), ptr(pick(r, genTenants[:2]))
		case 1:
			c.Attribute, c.In = "request.headers.x-tenant", some(r, genTenants[:3], 2)
		case 2:
			c.Header, c.Contains = "x-scope", ptr(pick(r, []string{"write", "read"}))
		case 3:
			c.SourceIPs = []string{pick(r, []string{"127.0.0.1", "10.0.0.0/8", "127.0.0.0/8"})}
		case 4:
			c.NotSourceIPs = []string{pick(r, []string{"127.0.0.1", "10.0.0.0/8"})}
		default:
			c.Header, c.Equals = "x-empty", ptr("")
		}
		rule.When = append(rule.When, c)
	}
	return rule
}

// genRequest is one request as sent on the wire.
type genRequest struct {
	caller  string // SPIFFE ID of the client certificate, "" for plaintext
	host    string // the Host header
	h2      bool   // sent over HTTP/2 (callers with a certificate only)
	method  string
	target  string
	headers [][2]string // in order; a name may repeat
	// plain is set when nothing in it is a spelling Envoy and the engine could read
	// differently: a native route must decide it.
	plain bool
}

func (q *genRequest) String() string {
	proto := "HTTP/1.1"
	if q.h2 {
		proto = "HTTP/2"
	}
	return fmt.Sprintf("%s %s %q host %q from %q headers %q", proto, q.method, q.target, q.host, q.caller, q.headers)
}

func genRequestFor(r *rand.Rand) *genRequest {
	q := &genRequest{caller: pick(r, genCallers), host: "backend", method: pick(r, genMethods), target: pick(r, genPlainPaths), plain: true}
	switch r.IntN(6) {
	case 0, 1:
		q.host = pick(r, genPlainHosts)
	case 2:
		q.host, q.plain = pick(r, genAttackHosts), false
	}
	if r.IntN(4) == 0 {
		q.target, q.plain = pick(r, genAttackPaths), false
	}
	if r.IntN(12) == 0 {
		q.method, q.plain = pick(r, genAttackMethods), false
	}
	switch r.IntN(8) {
	case 0, 1, 2:
		q.headers = append(q.headers, [2]string{pick(r, []string{"x-tenant", "X-Tenant", "X-TENANT"}), pick(r, genTenants)})
	case 3: // the same header twice
		q.headers = append(q.headers, [2]string{"x-tenant", pick(r, genTenants)}, [2]string{"X-Tenant", pick(r, genTenants)})
		q.plain = false
	case 4: // a list in one line
		q.headers = append(q.headers, [2]string{"x-tenant", "acme,globex"})
		q.plain = false
	}
	switch r.IntN(6) {
	case 0, 1:
		q.headers = append(q.headers, [2]string{"x-scope", pick(r, genScopes)})
	case 2:
		q.headers = append(q.headers, [2]string{"x-scope", "read"}, [2]string{"x-scope", "write"})
		q.plain = false
	}
	if r.IntN(5) == 0 {
		q.headers = append(q.headers, [2]string{"x-empty", ""})
	}
	// HTTP/2 carries what HTTP/1.1's codec refuses: a lower-case method, for one.
	q.h2 = q.caller != "" && r.IntN(4) == 0
	return q
}

// genMesh is the mesh of a policy set: backend.demo served by backend-1 (PERMISSIVE, so
// plaintext callers reach it unauthenticated) with its application on appPort.
func genMesh(set *genSet, engine model.AuthzEngine, appPort uint32) (*model.Mesh, model.Problems) {
	meta := func(kind, ns, name string) (model.TypeMeta, model.ObjectMeta) {
		return model.TypeMeta{APIVersion: model.APIVersion, Kind: kind}, model.ObjectMeta{Namespace: ns, Name: name}
	}
	var docs []model.Document
	add := func(o model.Object) { docs = append(docs, model.Document{Object: o}) }
	mt, mm := meta(model.KindMesh, "", "default")
	add(&model.MeshDoc{TypeMeta: mt, Metadata: mm, Spec: model.MeshSpec{
		TrustDomain: genTrustDomain, MTLS: model.MTLSSettings{Mode: model.MTLSPermissive},
		DefaultDecision: set.defaultDecision, Authz: model.AuthzSettings{Engine: engine, Timeout: &model.Duration{Duration: 5 * time.Second}},
	}})
	st, sm := meta(model.KindService, genNamespace, genService)
	add(&model.ServiceDoc{TypeMeta: st, Metadata: sm, Spec: model.ServiceSpec{
		ServiceAccounts: []string{genService}, Ports: []model.ServicePort{{Name: "http", Port: genPort}},
	}})
	wt, wm := meta(model.KindWorkload, genNamespace, "backend-1")
	add(&model.WorkloadDoc{TypeMeta: wt, Metadata: wm, Spec: model.WorkloadSpec{
		Service: genService, Address: "127.0.0.1", InboundPort: 15001, AppPort: appPort, ServicePort: genPort,
	}})
	for _, p := range set.policies {
		add(p)
	}
	return model.Build(docs)
}
