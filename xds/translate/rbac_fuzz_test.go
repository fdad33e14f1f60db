package translate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// FuzzRBACTranslation drives the policy generator of the differential test from the fuzzer's
// seeds, on the in-process side only (Envoy is TestRBACDecidesAsTheEngine's part). For each
// generated set it checks that the translator does not panic, claims a route native exactly
// when the generator made every applicable policy expressible, emits configuration that passes
// Envoy's proto validation with regular expressions under Envoy's size limit; and that for the
// plain requests a native route decides, the RBAC it emits — read by rbacEval, a model of the
// matchers it uses, with Go's regexp for RE2 — decides as the engine (authz/policy) does. The
// model is not Envoy: header joining, SAN order and RE2 itself are the Envoy test's to check.
func FuzzRBACTranslation(f *testing.F) {
	for i := range 8 {
		f.Add(uint64(i), uint64(i*7919+1))
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		r := rand.New(rand.NewPCG(a, b))
		set := genPolicySet(r)
		m, problems := genMesh(set, model.EngineAuto, 18080)
		if len(problems) > 0 {
			t.Fatalf("generated mesh refused: %v\n%s", problems, set)
		}
		svc := model.NewMeshContext(m).Service(model.Ref{Namespace: genNamespace, Name: genService})
		route, placement := nativeAuthz(svc, genPort, set.defaultDecision, nil, genRoot, jwt.EnvoyJWKS)
		if placement.Native != set.expressible {
			t.Fatalf("the translator says native=%v (%s), the generator expressible=%v (%s)\n%s", placement.Native, placement.Reason, set.expressible, set.why, set)
		}
		if !placement.Native {
			if route != nil || placement.Reason == "" || placement.Shape == "" {
				t.Fatalf("not native, yet a route (%v), or no reason (%q) or shape (%q)", route != nil, placement.Reason, placement.Shape)
			}
			return
		}
		for _, cfg := range []*rbacfilterv3.RBACPerRoute{route.deny, route.allow} {
			if cfg == nil {
				continue
			}
			if err := cfg.ValidateAll(); err != nil {
				t.Fatalf("invalid RBAC: %v\n%s", err, set)
			}
		}
		engine, problems := policy.Compile(m)
		if len(problems) > 0 {
			t.Fatal(problems)
		}
		for range 40 {
			q := genRequestFor(r, set)
			if !q.plain || set.providers > 0 && q.token != "" && q.claims == nil {
				continue // ext_authz decides it, or jwt_authn refuses its token
			}
			a := engineAttributes(t, q)
			want := engine.Decide(context.Background(), a).Allow
			if got := rbacAllows(t, route, q); got != want {
				t.Fatalf("%s: RBAC allows=%v, the engine %v\n%s", q, got, want, set)
			}
		}
	})
}

// engineAttributes are a plain request's attributes as the authorization service reads them
// from Envoy (which leaves a plain request as it is).
func engineAttributes(t *testing.T, q *genRequest) *policy.Attributes {
	a := &policy.Attributes{Destination: policy.Destination{Service: genService, Namespace: genNamespace, Port: genPort}}
	if err := a.Source.SetPrincipal(q.caller); err != nil {
		t.Fatal(err)
	}
	a.Source.Address = netip.MustParseAddr("127.0.0.1")
	a.Request.Method = q.method
	var err error
	if a.Request.Path, a.Request.Query, err = policy.NormalizePath(q.target); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	a.Request.Host = policy.HostWithoutPort(q.host)
	if q.claims != nil {
		if a.JWT, err = jwt.NewToken([]string{q.provider}, q.claims); err != nil {
			t.Fatal(err)
		}
	}
	a.Request.Headers = map[string][]string{}
	for _, kv := range q.headers {
		// Envoy removes a value's surrounding whitespace.
		name := strings.ToLower(kv[0])
		a.Request.Headers[name] = append(a.Request.Headers[name], strings.TrimSpace(kv[1]))
	}
	return a
}

// rbacAllows evaluates the two filters of a native route on a request: a DENY policy matching
// denies, then (when configured) no ALLOW policy matching denies.
func rbacAllows(t *testing.T, route *rbacRoute, q *genRequest) bool {
	if anyPolicy(t, route.deny, q) {
		return false
	}
	return route.allow == nil || anyPolicy(t, route.allow, q)
}

func anyPolicy(t *testing.T, cfg *rbacfilterv3.RBACPerRoute, q *genRequest) bool {
	for _, p := range cfg.GetRbac().GetRules().GetPolicies() {
		if len(p.GetPermissions()) != 1 || !p.GetPermissions()[0].GetAny() || len(p.GetPrincipals()) != 1 {
			t.Fatalf("unexpected policy shape %v", p)
		}
		if rbacEval(t, p.GetPrincipals()[0], q) {
			return true
		}
	}
	return false
}

// rbacEval models Envoy's matching of the principals the translator emits.
func rbacEval(t *testing.T, p *rbacv3.Principal, q *genRequest) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return true
	case *rbacv3.Principal_AndIds:
		for _, x := range id.AndIds.GetIds() {
			if !rbacEval(t, x, q) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_OrIds:
		for _, x := range id.OrIds.GetIds() {
			if rbacEval(t, x, q) {
				return true
			}
		}
		return false
	case *rbacv3.Principal_NotId:
		return !rbacEval(t, id.NotId, q)
	case *rbacv3.Principal_Authenticated_:
		return q.caller != "" && stringMatch(t, id.Authenticated.GetPrincipalName(), q.caller)
	case *rbacv3.Principal_UrlPath:
		path, _, _ := strings.Cut(q.target, "?")
		return stringMatch(t, id.UrlPath.GetPath(), path)
	case *rbacv3.Principal_Header:
		v, ok := headerLine(id.Header, q)
		return ok && stringMatch(t, id.Header.GetStringMatch(), v)
	case *rbacv3.Principal_SourcedMetadata:
		m := id.SourcedMetadata.GetMetadataMatcher()
		if id.SourcedMetadata.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC || m.GetFilter() != model.JWTAuthnMetadata || len(m.GetPath()) == 0 || m.GetPath()[0].GetKey() != model.JWTPayloadKey || m.GetInvert() {
			t.Fatalf("the translator emitted a metadata matcher the model does not know: %v", m)
		}
		if q.claims == nil {
			return false
		}
		var v any = q.claims
		for _, seg := range m.GetPath()[1:] {
			obj, ok := v.(map[string]any)
			if !ok {
				return false
			}
			if v, ok = obj[seg.GetKey()]; !ok {
				return false
			}
		}
		return valueMatch(t, m.GetValue(), v)
	case *rbacv3.Principal_DirectRemoteIp:
		pfx := netip.PrefixFrom(netip.MustParseAddr(id.DirectRemoteIp.GetAddressPrefix()), int(id.DirectRemoteIp.GetPrefixLen().GetValue()))
		return pfx.Contains(netip.MustParseAddr("127.0.0.1"))
	}
	t.Fatalf("the translator emitted a principal the model does not know: %v", p)
	return false
}

// valueMatch models Envoy's ValueMatcher on a JSON value (the verified payload as jwt_authn puts
// it in dynamic metadata: numbers are numbers, never strings).
func valueMatch(t *testing.T, m *matcherv3.ValueMatcher, v any) bool {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_PresentMatch:
		return p.PresentMatch
	case *matcherv3.ValueMatcher_StringMatch:
		s, ok := v.(string)
		return ok && stringMatch(t, p.StringMatch, s)
	case *matcherv3.ValueMatcher_ListMatch:
		list, ok := v.([]any)
		return ok && slices.ContainsFunc(list, func(e any) bool { return valueMatch(t, p.ListMatch.GetOneOf(), e) })
	case *matcherv3.ValueMatcher_OrMatch:
		return slices.ContainsFunc(p.OrMatch.GetValueMatchers(), func(x *matcherv3.ValueMatcher) bool { return valueMatch(t, x, v) })
	}
	t.Fatalf("the translator emitted a value matcher the model does not know: %v", m)
	return false
}

// headerLine is a header as Envoy's matchers read it: the values of its lines joined with ",".
func headerLine(h *routev3.HeaderMatcher, q *genRequest) (string, bool) {
	switch h.GetName() {
	case ":method":
		return q.method, true
	case ":authority":
		return q.host, true
	}
	var vals []string
	for _, kv := range q.headers {
		if strings.EqualFold(kv[0], h.GetName()) {
			vals = append(vals, strings.TrimSpace(kv[1]))
		}
	}
	return strings.Join(vals, ","), len(vals) > 0
}

func stringMatch(t *testing.T, m *matcherv3.StringMatcher, s string) bool {
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == p.Exact
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, p.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, p.Suffix)
	case *matcherv3.StringMatcher_SafeRegex:
		re := p.SafeRegex.GetRegex()
		if len(re) > maxRegexp {
			t.Fatalf("regexp %q is longer than %d", re, maxRegexp)
		}
		return regexp.MustCompile(`^(?:` + re + `)$`).MatchString(s)
	}
	t.Fatalf("the translator emitted a string matcher the model does not know: %v", m)
	return false
}

// FuzzGlobRegexp checks a path glob's regular expression against the engine's own matcher for
// any pattern the model accepts and any plain path.
func FuzzGlobRegexp(f *testing.F) {
	for _, c := range [][2]string{
		{"/files/*/r*.pdf", "/files/x/r1.pdf"}, {"/docs/**", "/docs"}, {"/**/x", "/a/b/x"}, {"/a/*/b", "/a//b"},
		{"/a*b*c/*", "/abc/"}, {"/x/**/y/**", "/x/y"}, {"/*.*", "/a.b"}, {"/**", "/"},
	} {
		f.Add(c[0], c[1])
	}
	plain := regexp.MustCompile(`^(?:` + plainTarget + `)$`)
	dots := regexp.MustCompile(`^(?:` + dotOrEmpty + `)$`)
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if !plain.MatchString(path) || dots.MatchString(path) || strings.Contains(path, "?") {
			return // not a path a native route decides
		}
		doc := &model.AuthorizationPolicyDoc{
			TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindAuthorizationPolicy},
			Metadata: model.ObjectMeta{Namespace: genNamespace, Name: "p"},
			Spec:     model.AuthorizationPolicySpec{Action: model.ActionAllow, Rules: []model.Rule{{To: &model.Operation{Paths: []string{pattern}}}}},
		}
		if len(doc.Validate()) > 0 {
			return
		}
		set := &genSet{defaultDecision: model.DecisionDeny, policies: []*model.AuthorizationPolicyDoc{doc}}
		m, problems := genMesh(set, model.EngineAuto, 18080)
		if len(problems) > 0 {
			return
		}
		engine, problems := policy.Compile(m)
		if len(problems) > 0 {
			return
		}
		a := &policy.Attributes{Destination: policy.Destination{Service: genService, Namespace: genNamespace, Port: genPort}}
		a.Request.Method, a.Request.Path = "GET", path
		want := engine.Decide(context.Background(), a).Allow
		rt := &rbacTranslator{port: genPort, headers: map[string]bool{}}
		p, ok, reason := rt.rule(&doc.Spec.Rules[0])
		if reason != "" || !ok {
			return // left to ext_authz
		}
		got := rbacEval(t, p, &genRequest{method: "GET", target: path})
		if got != want {
			t.Fatalf("pattern %q, path %q: RBAC %v, the engine %v (%s)", pattern, path, got, want, fmt.Sprint(p))
		}
	})
}
