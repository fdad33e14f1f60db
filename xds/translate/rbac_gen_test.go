package translate

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/test/authztest"
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
	// providers is how many JWT providers verify the backend's tokens: 0, 1 (idp, in demo) or 2
	// (and idp2, in the root namespace); jwtShape an inexpressible setting of idp's ("cookie",
	// "skew"); revoked adds a CredentialRevocation of a jti and a subject (genRevoked*).
	providers int
	jwtShape  string
	revoked   bool
	// tokenRequired: an ALLOW policy of the backend asks for a token under a default of DENY, so
	// a request without one goes to ext_authz (which answers 401).
	tokenRequired bool
}

func (s *genSet) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "defaultDecision %s, expressible %v %s, providers %d %s, revoked %v, tokenRequired %v\n",
		s.defaultDecision, s.expressible, s.why, s.providers, s.jwtShape, s.revoked, s.tokenRequired)
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
	if r.IntN(2) == 0 {
		s.providers, s.revoked = 1+r.IntN(2), r.IntN(4) == 0
		switch r.IntN(20) {
		case 0:
			s.jwtShape, s.expressible, s.why = "cookie", false, "demo/idp: jwt location"
		case 1:
			s.jwtShape, s.expressible, s.why = "skew", false, "demo/idp: jwt clock skew"
		}
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
		// The providers a from.jwt of the policy may name: its namespace's, else the root's.
		var names []string
		if s.providers > 0 && p.Metadata.Namespace == genNamespace {
			names = append(names, "idp")
		}
		if s.providers > 1 {
			names = append(names, "idp2")
		}
		for range 1 + r.IntN(3) {
			p.Spec.Rules = append(p.Spec.Rules, genRule(r, names, s.providers > 0))
		}
		why := ""
		if to := p.Spec.Rules[0].To; to != nil {
			to.Ports = nil // a rule for another port is dropped whatever else it says
		}
		switch r.IntN(40) {
		case 0:
			p.Spec.Action, why = model.ActionAudit, "audit"
		case 1, 10, 11:
			p.Spec.DryRun = true // shadow rules: expressible
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
		case 7, 8, 9:
			if s.providers == 0 {
				break // no token reaches the backend: the rule never matches, whatever it tests
			}
			c := []model.ClaimMatch{
				{Claim: "realm.roles", ValueMatch: model.ValueMatch{Contains: ptr("admin")}},
				{Claim: "level", ValueMatch: model.ValueMatch{Equals: ptr("3")}},
				{Claim: "tier", ValueMatch: model.ValueMatch{Matches: ptr("g.*")}},
			}[r.IntN(3)]
			why = map[string]string{"realm.roles": "jwt claim path", "level": "jwt claim value", "tier": "jwt claim matches"}[c.Claim]
			rule := &p.Spec.Rules[0]
			if rule.From == nil {
				rule.From = &model.Source{}
			}
			if rule.From.JWT == nil {
				rule.From.JWT = &model.JWTRequirement{}
			}
			rule.From.JWT.Claims = append(rule.From.JWT.Claims, c)
		}
		if why != "" && applies && s.expressible {
			s.expressible, s.why = false, p.Metadata.Namespace+"/"+p.Metadata.Name+": "+why
		}
		if applies && s.providers > 0 && p.Spec.Action == model.ActionAllow && s.defaultDecision == model.DecisionDeny {
			for _, rule := range p.Spec.Rules {
				s.tokenRequired = s.tokenRequired || rule.From != nil && rule.From.JWT != nil
			}
		}
		s.policies = append(s.policies, p)
	}
	return s
}

// genClaimTests are the expressible claim tests: top-level claims against strings.
var genClaimTests = []model.ClaimMatch{
	{Claim: "tier", ValueMatch: model.ValueMatch{Equals: ptr("gold")}},
	{Claim: "tier", ValueMatch: model.ValueMatch{In: []string{"gold", "silver"}}},
	{Claim: "tier", ValueMatch: model.ValueMatch{Contains: ptr("gold")}},
	{Claim: "scope", ValueMatch: model.ValueMatch{Contains: ptr("read")}},
	{Claim: "groups", ValueMatch: model.ValueMatch{Equals: ptr("admins")}},
	{Claim: "groups", ValueMatch: model.ValueMatch{Contains: ptr("admins")}},
}

// genRule generates an expressible rule: each part present with some probability. providers
// are those a from.jwt may name; with jwt, the rule may ask for a token.
func genRule(r *rand.Rand, providers []string, jwt bool) model.Rule {
	var rule model.Rule
	from := &model.Source{}
	if jwt && r.IntN(3) == 0 {
		from.JWT = &model.JWTRequirement{}
		if len(providers) > 0 && r.IntN(2) == 0 {
			from.JWT.Providers = some(r, providers, 2)
		}
		for range r.IntN(3) {
			from.JWT.Claims = append(from.JWT.Claims, pick(r, genClaimTests))
		}
	}
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
	if len(from.Principals)+len(from.NotPrincipals)+len(from.Namespaces)+len(from.NotNamespaces) > 0 || from.JWT != nil {
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
	// token says what the request's token is ("" none); claims and provider are those of a
	// token a provider of the set verifies (nil and "" otherwise).
	token    string
	claims   map[string]any
	provider string
}

func (q *genRequest) String() string {
	proto := "HTTP/1.1"
	if q.h2 {
		proto = "HTTP/2"
	}
	return fmt.Sprintf("%s %s %q host %q from %q token %q claims %v headers %q", proto, q.method, q.target, q.host, q.caller, q.token, q.claims, q.headers)
}

func genRequestFor(r *rand.Rand, set *genSet) *genRequest {
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
	genToken(r, set, q)
	// HTTP/2 carries what HTTP/1.1's codec refuses: a lower-case method, for one.
	q.h2 = q.caller != "" && r.IntN(4) == 0
	return q
}

// The JWT vocabulary: idp (namespace demo, audience backend, ES256) and idp2 (the root
// namespace, no audience, EdDSA) with their issuers, and a key no provider has, with idp's kid.
const (
	genIssuer  = "https://idp.test"
	genIssuer2 = "https://idp2.test"
)

type genKeySet struct{ idp, idp2, outsider *authztest.Key }

// panicTB lets key generation and signing, which cannot fail here, run outside a test.
type panicTB struct{}

func (panicTB) Helper()                           {}
func (panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

var genKeys = sync.OnceValue(func() *genKeySet {
	return &genKeySet{
		idp:      authztest.NewKey(panicTB{}, "ES256", "k1"),
		idp2:     authztest.NewKey(panicTB{}, "EdDSA", "k2"),
		outsider: authztest.NewKey(panicTB{}, "ES256", "k1"),
	}
})

// genRevokedJTI and genRevokedSubject are what a set's CredentialRevocation names: a jti, and
// the subject's tokens issued before genRevokedBefore.
var (
	genRevokedJTI     = "revoked-jti"
	genRevokedSubject = "mallory"
	genRevokedBefore  = time.Now().Add(-time.Hour).Truncate(time.Second)
)

// Claim values a token may carry: strings, words, lists, lists in lists, numbers, objects.
var (
	genTiers   = []any{"gold", "silver", "bronze", []any{"gold"}, []any{[]any{"gold"}}, "gold silver", 3, nil, []any{"x", "silver"}}
	genScopes2 = []any{"read write", "write", []any{"read"}, "reader", nil}
	genGroups  = []any{"admins", []any{"ops", "admins"}, []any{map[string]any{"name": "admins"}}, "admins ops", nil}
)

// genToken adds a token to the request (or none): valid ones from either provider with
// generated claims, refused ones (expired, not yet valid, no exp, another audience, issuer or
// key, unsigned, altered), revoked ones, and spellings only ext_authz decides.
func genToken(r *rand.Rand, set *genSet, q *genRequest) {
	k := genKeys()
	now := time.Now()
	claims := map[string]any{"iss": genIssuer, "sub": pick(r, []string{"alice", "bob"}), "aud": "backend",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": fmt.Sprintf("j%d", r.IntN(1000))}
	for name, vals := range map[string][]any{"tier": genTiers, "scope": genScopes2, "groups": genGroups} {
		if v := pick(r, vals); v != nil {
			claims[name] = v
		}
	}
	if r.IntN(8) == 0 {
		claims["realm"] = map[string]any{"roles": []any{"admin"}}
	}
	key, provider := k.idp, "demo/idp"
	if r.IntN(3) == 0 {
		key, provider, claims["iss"] = k.idp2, genRoot+"/idp2", genIssuer2
		delete(claims, "aud")
	}
	sign := func(c map[string]any) string { return key.Sign(panicTB{}, c, nil) }
	with := func(kv ...any) map[string]any {
		c := maps.Clone(claims)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	var value string
	verified := false
	switch n := r.IntN(20); {
	case n < 8:
		if set.tokenRequired {
			q.plain = false
		}
		return
	case n < 14:
		q.token, value, verified = "valid", "Bearer "+sign(claims), true
	case n == 14:
		refused := map[string]map[string]any{
			"expired":          with("exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix()),
			"not yet valid":    with("nbf", now.Add(time.Hour).Unix()),
			"no exp":           with("exp", nil),
			"another audience": with("aud", "frontend"),
			"another issuer":   with("iss", "https://evil.test"),
		}
		q.token = pick(r, slices.Sorted(maps.Keys(refused)))
		value = "Bearer " + sign(refused[q.token])
	case n == 15:
		q.token = pick(r, []string{"another key", "unsigned", "altered"})
		switch q.token {
		case "another key":
			value = "Bearer " + k.outsider.Sign(panicTB{}, claims, nil)
		case "unsigned":
			value = "Bearer " + authztest.Unsigned(panicTB{}, claims)
			// Its signature segment is empty: not the compact JWS the token route's gate
			// takes, so ext_authz decides it, on either listener.
			q.plain = false
		default:
			parts := strings.Split(sign(claims), ".")
			value = "Bearer " + parts[0] + "." + authztest.Segment(panicTB{}, with("sub", "root")) + "." + parts[2]
		}
	case n == 16:
		q.token = pick(r, []string{"revoked jti", "revoked subject", "subject revoked earlier"})
		c := map[string]string{"revoked jti": "jti", "revoked subject": "sub", "subject revoked earlier": "sub"}[q.token]
		v := map[string]string{"jti": genRevokedJTI, "sub": genRevokedSubject}[c]
		iat := now.Unix()
		if q.token == "revoked subject" {
			iat = genRevokedBefore.Add(-time.Hour).Unix()
		}
		claims[c], claims["iat"] = v, iat
		value, verified = "Bearer "+sign(claims), true
		if set.revoked {
			q.plain = false // a revocation's jtis and subjects go to ext_authz
		}
	default:
		tok := sign(claims)
		q.token, q.plain = pick(r, []string{"bearer", "two headers", "two spaces", "padded"}), false
		switch q.token {
		case "bearer":
			value = "bearer " + tok
		case "two headers":
			q.headers = append(q.headers, [2]string{"Authorization", "Bearer " + tok})
			value = "Bearer " + sign(with("tier", "gold"))
		case "two spaces":
			value = "Bearer  " + tok
		default:
			value = "Bearer " + tok + "=="
		}
	}
	q.headers = append(q.headers, [2]string{"Authorization", value})
	// A token is verified where its provider verifies the backend's tokens.
	if verified && (provider == "demo/idp" || set.providers > 1) && set.providers > 0 {
		q.claims, q.provider = claims, provider
	}
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
	k := genKeys()
	if set.providers > 0 {
		jt, jm := meta(model.KindJWTProvider, genNamespace, "idp")
		idp := &model.JWTProviderDoc{TypeMeta: jt, Metadata: jm, Spec: model.JWTProviderSpec{
			Issuer: genIssuer, Audiences: []string{"backend"}, JWKS: model.JWKSSource{Inline: authztest.JWKS(k.idp)},
		}}
		switch set.jwtShape {
		case "cookie":
			idp.Spec.FromCookies = []string{"session"}
		case "skew":
			idp.Spec.ClockSkew = &model.Duration{Duration: 1500 * time.Millisecond}
		}
		add(idp)
	}
	if set.providers > 1 {
		jt, jm := meta(model.KindJWTProvider, genRoot, "idp2")
		add(&model.JWTProviderDoc{TypeMeta: jt, Metadata: jm, Spec: model.JWTProviderSpec{
			Issuer: genIssuer2, Algorithms: []string{"EdDSA"}, JWKS: model.JWKSSource{Inline: authztest.JWKS(k.idp2)},
		}})
	}
	if set.revoked {
		rt, rm := meta(model.KindCredentialRevocation, genNamespace, "revoked")
		expires := model.Time{Time: time.Now().Add(24 * time.Hour).Truncate(time.Second)}
		add(&model.CredentialRevocationDoc{TypeMeta: rt, Metadata: rm, Spec: model.CredentialRevocationSpec{JWTs: []model.JWTRevocation{
			{Issuer: genIssuer, JTI: genRevokedJTI, Expires: expires},
			{Issuer: genIssuer, Subject: genRevokedSubject, IssuedBefore: &model.Time{Time: genRevokedBefore}, Expires: expires},
		}}})
	}
	return model.Build(docs)
}
