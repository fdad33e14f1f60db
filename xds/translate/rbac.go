package translate

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// The two RBAC filters of every inbound connection manager, in this order before ext_authz: the
// first denies what a DENY policy matches, the second lets through only what an ALLOW policy
// matches (under a mesh default of DENY). Their listener configuration has no rules (they let
// everything through) and names their stats (http.inbound.rbac.deny.allowed, ...); a route
// decided in Envoy configures them (RBACPerRoute), so a policy change is a route (RDS) change.
const (
	filterRBACDeny  = "portcullis.rbac.deny"
	filterRBACAllow = "portcullis.rbac.allow"
)

// AuthzPlacement says where the policies of one inbound route are decided under the mesh's
// engine `auto`.
type AuthzPlacement struct {
	// Native is set when Envoy's RBAC filters decide the route's plain requests.
	Native bool `json:"native"`
	// Shape is the first shape found that RBAC cannot express exactly, one of the NotNative
	// constants ("rego", "jwt", "time", ...); "" when Native.
	Shape string `json:"shape,omitempty"`
	// Reason is the shape where it was found: the policy, rule condition and attribute.
	Reason string `json:"reason,omitempty"`
}

// notNative places a route on ext_authz for the reason given.
func notNative(reason string) AuthzPlacement {
	return AuthzPlacement{Shape: shapeOf(reason), Reason: reason}
}

// shapes are the NotNative constants, for shapeOf.
var shapes = []string{
	NotNativeRego, NotNativeJWTKeys, NotNativeJWTLocation, NotNativeJWTIssuer, NotNativeJWTSkew, NotNativeJWTClaimPath,
	NotNativeJWTClaimValue, NotNativeJWTClaimMatches, NotNativeAudit, NotNativeTime,
	NotNativeHosts, NotNativeAttribute, NotNativeHeaderRegex, NotNativeHeaderName, NotNativeSourceIPv6,
	NotNativeVerifiedKeys, NotNativeRegexpSize, NotNativeNonASCII, NotNativeAPIKey, NotNativeAPIKeyProvider,
}

// shapeOf finds the shape in a reason: its last part ("demo/p: when[0]: attribute
// request.query.id" → "attribute"), the longest shape it is or starts with.
func shapeOf(reason string) string {
	last := reason
	if i := strings.LastIndex(reason, ": "); i >= 0 {
		last = reason[i+2:]
	}
	found := ""
	for _, s := range shapes {
		if (last == s || strings.HasPrefix(last, s+" ")) && len(s) > len(found) {
			found = s
		}
	}
	return found
}

// Shapes that keep a route on ext_authz; Reason starts with one of them after the policy name.
const (
	NotNativeRego = "rego"
	// Envoy's jwt_authn verifies the tokens of a service's requests only when it verifies them as
	// the authorization service does (jwt.go): keys it is given (inline ones), one header read by
	// every provider, no two providers with one issuer, a clock skew of whole seconds.
	NotNativeJWTKeys     = "jwt keys"
	NotNativeJWTLocation = "jwt location"
	NotNativeJWTIssuer   = "jwt issuer shared"
	NotNativeJWTSkew     = "jwt clock skew"
	// Claims: a top-level claim tested with equals, in or contains against strings.
	NotNativeJWTClaimPath    = "jwt claim path"    // a nested claim ("realm_access.roles")
	NotNativeJWTClaimValue   = "jwt claim value"   // a number or boolean literal
	NotNativeJWTClaimMatches = "jwt claim matches" // a regular expression
	NotNativeAudit           = "audit"
	NotNativeTime            = "time"
	NotNativeHosts           = "hosts" // with a port, an IPv6 literal or a trailing dot
	NotNativeAttribute       = "attribute"
	NotNativeHeaderRegex     = "header matches"
	NotNativeHeaderName      = "header name"
	NotNativeSourceIPv6      = "sourceIPs IPv6"
	NotNativeVerifiedKeys    = "verified rate limits" // the limits key on attributes ext_authz returns
	NotNativeRegexpSize      = "regexp size"          // over what Envoy's RE2 accepts
	NotNativeNonASCII        = "non-ASCII pattern"    // RE2 refuses invalid UTF-8; native routes see ASCII only

	// from.apiKey, and an APIKeyProvider acting on the service: keys are verified (and invalid
	// or revoked ones refused) for every request.
	NotNativeAPIKey         = "api key"
	NotNativeAPIKeyProvider = "api key provider"
)

// maxRegexp bounds the length of a regular expression made from a policy. Envoy refuses one
// whose RE2 program has more than 100 instructions; measured, the program of the expressions
// made here is at most 4 more than their length.
const maxRegexp = 90

// The requests a native route decides: the engine reads them exactly as Envoy's RBAC filters
// do. Everything else falls through to the route's ext_authz twin, whose answer (often 400)
// stays the engine's: a path that still has percent-encoding, dot or empty segments, ";",
// non-ASCII or a query the authorization service refuses; a method it may refuse; a header a
// policy reads that was sent twice or holds a "," (the engine tests each line; how Envoy's
// matchers combine lines differs between matchers and releases) or bytes outside printable
// ASCII; an authority that is not a host name with a numeric port. Sending more to ext_authz
// is always faithful; the expressions stay small because Envoy refuses a regular expression
// whose RE2 program exceeds 100 instructions.
const (
	// plainTarget is a target of RFC 3986 pchars, "/" and "?" without "%" and ";": what
	// policy.NormalizePath returns unchanged unless it has dot or empty segments (dotOrEmpty),
	// with a query url.ParseQuery accepts.
	plainTarget = `/[A-Za-z0-9._~!$&'()*+,=:@/?-]*`
	// dotOrEmpty finds a "." or ".." segment, or an empty one ("//"), anywhere in the target
	// (in the query too: more than needed, never less).
	dotOrEmpty = `.*/\.{1,2}(?:[/?].*)?|.*//.*`
	// knownMethod is a method policy.CheckMethod accepts; other canonical ones go to ext_authz.
	knownMethod = `GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH`
	// plainAuthority is a host name with an optional numeric port: what policy.HostWithoutPort
	// reads as the name, lower-cased, with one trailing dot removed.
	plainAuthority = `[A-Za-z0-9.-]+(?::[0-9]+)?`
	// plainHeader is a header value read the same either way: printable ASCII without ",".
	plainHeader = `[ -+\--~]*`
)

// rbacRoute is the outcome of translating the policies of one service port for Envoy.
type rbacRoute struct {
	deny, allow *rbacfilterv3.RBACPerRoute // allow nil under a mesh default of ALLOW
	gate        []*routev3.HeaderMatcher   // what a request needs to be decided natively
	jwt         *jwtScope                  // how Envoy verifies the service's tokens; nil without providers
	// tokenRequired: under a default of DENY an ALLOW policy asks for a token, and the service
	// answers a request without one 401, which RBAC cannot: such requests go to ext_authz.
	tokenRequired bool
}

// nativeAuthz translates the policies that apply to a service port (the engine's selection:
// model.ResolvedService.AuthorizationPolicies) into RBAC, or says why it cannot. The engine
// denies when a DENY policy matches, else allows when an ALLOW policy matches, else applies the
// mesh default; the two filters make the same decision.
func nativeAuthz(svc *model.ResolvedService, port uint32, defaultDecision model.Decision, rateLimitKeys []string, root string, keys func(*model.JWTProviderDoc) (string, error)) (*rbacRoute, AuthzPlacement) {
	if len(rateLimitKeys) > 0 {
		return nil, notNative(NotNativeVerifiedKeys)
	}
	if len(svc.APIKeyProviders) > 0 {
		return nil, notNative(NotNativeAPIKeyProvider + " " + model.RefOf(svc.APIKeyProviders[0]).String())
	}
	var jwt *jwtScope
	if len(svc.JWTProviders) > 0 {
		var reason string
		if jwt, reason = newJWTScope(svc, root, keys); jwt == nil {
			return nil, notNative(reason)
		}
	}
	rt := &rbacTranslator{port: port, headers: map[string]bool{}, jwtScope: jwt}
	tokenRequired := false // see rbacRoute
	deny := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
	allow := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	// Dry-run policies are the filters' shadow rules, which decide nothing and report their
	// result in the request's metadata, from which the decision log's dry_run is written
	// (authz/server's envoyDryRun): the DENY filter's are the dry-run DENY policies, the ALLOW
	// filter's the ALLOW policies, enforced and dry-run (their result is what the ALLOW side
	// would decide were the dry runs enforced).
	dryDeny := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
	dryAllow := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	for _, pol := range svc.AuthorizationPolicies {
		name := model.RefOf(pol).String()
		switch {
		case pol.Spec.Rego != nil:
			return nil, notNative(name + ": " + NotNativeRego)
		case pol.Spec.Action == model.ActionAudit:
			return nil, notNative(name + ": " + NotNativeAudit)
		}
		into := []*rbacv3.RBAC{allow, dryAllow}
		switch {
		case pol.Spec.DryRun && pol.Spec.Action == model.ActionDeny:
			into = []*rbacv3.RBAC{dryDeny}
		case pol.Spec.DryRun:
			into = []*rbacv3.RBAC{dryAllow}
		case pol.Spec.Action == model.ActionDeny:
			into = []*rbacv3.RBAC{deny}
		}
		rt.ns = model.RefOf(pol).Namespace
		for i := range pol.Spec.Rules {
			r := &pol.Spec.Rules[i]
			if into[0] == allow && r.From != nil && r.From.JWT != nil && defaultDecision != model.DecisionAllow {
				tokenRequired = true
			}
			p, ok, reason := rt.rule(r)
			if reason != "" {
				return nil, notNative(name + ": " + reason)
			}
			if !ok {
				continue // never matches this port
			}
			key := name + "/" + r.RuleName(i)
			for _, rules := range into {
				q := p
				if prev, dup := rules.Policies[key]; dup {
					q = orIDs(prev.Principals[0], p)
				}
				rules.Policies[key] = &rbacv3.Policy{
					Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
					Principals:  []*rbacv3.Principal{q},
				}
			}
		}
	}
	out := &rbacRoute{jwt: jwt, deny: &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{Rules: deny, RulesStatPrefix: model.RBACDenyPrefix}}}
	dryRun := len(dryAllow.Policies) > len(allow.Policies)
	if len(dryDeny.Policies) > 0 || dryRun {
		// Even without dry-run DENY policies: the DENY filter always runs, and its shadow result
		// tells the decision log that dry runs apply when it denies before the ALLOW filter.
		out.deny.Rbac.ShadowRules, out.deny.Rbac.ShadowRulesStatPrefix = dryDeny, model.RBACDenyPrefix
	}
	if defaultDecision == model.DecisionAllow && (len(allow.Policies) > 0 || dryRun) {
		// Under a default of ALLOW the ALLOW policies change no decision, but the decision log
		// names the one that matched (authz/server's access log): a last policy matching the rest.
		for _, rules := range []*rbacv3.RBAC{allow, dryAllow} {
			rules.Policies[model.NativeDefaultPolicyID] = &rbacv3.Policy{
				Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
			}
		}
	}
	if defaultDecision != model.DecisionAllow || len(allow.Policies) > 0 {
		out.allow = &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{Rules: allow, RulesStatPrefix: model.RBACAllowPrefix}}
		if dryRun {
			out.allow.Rbac.ShadowRules, out.allow.Rbac.ShadowRulesStatPrefix = dryAllow, model.RBACAllowPrefix
		}
	}
	notDotOrEmpty := regexHeader(":path", dotOrEmpty)
	notDotOrEmpty.InvertMatch = true
	out.gate = []*routev3.HeaderMatcher{regexHeader(":path", plainTarget), notDotOrEmpty, regexHeader(":method", knownMethod)}
	if rt.authority {
		out.gate = append(out.gate, regexHeader(":authority", plainAuthority))
	}
	out.tokenRequired = jwt != nil && tokenRequired
	for _, h := range slices.Sorted(maps.Keys(rt.headers)) {
		m := regexHeader(h, plainHeader)
		m.TreatMissingHeaderAsEmpty = true
		out.gate = append(out.gate, m)
	}
	return out, AuthzPlacement{Native: true}
}

// rbacTranslator translates rules for one destination port and collects the headers they read.
type rbacTranslator struct {
	port    uint32
	headers map[string]bool
	// authority is set when a rule reads the host: the native route then takes only a plain
	// authority (plainAuthority).
	authority bool
	// jwtScope is how Envoy verifies the service's tokens; nil when no provider verifies them.
	jwtScope *jwtScope
	// ns is the namespace of the policy whose rules are translated: its from.jwt names
	// providers from there.
	ns string
}

// rule translates one rule to a principal that matches what the rule matches. ok is false when
// the rule can never match on this port; reason is set when the rule is not expressible.
func (rt *rbacTranslator) rule(r *model.Rule) (p *rbacv3.Principal, ok bool, reason string) {
	if !asciiRule(r) {
		return nil, false, NotNativeNonASCII
	}
	var all []*rbacv3.Principal
	// match adds the matcher of a list (negated for the not-lists); the first list that is not
	// expressible sets reason, and the lists after it are not translated.
	match := func(list []string, negate bool, translate func([]string) (*rbacv3.Principal, string)) {
		if len(list) == 0 || reason != "" {
			return
		}
		p, why := translate(list)
		if reason = why; why != "" {
			return
		}
		if negate {
			p = notID(p)
		}
		all = append(all, p)
	}
	if f := r.From; f != nil {
		if f.APIKey != nil {
			return nil, false, NotNativeAPIKey
		}
		if f.JWT != nil {
			p, never, why := rt.jwt(f.JWT, rt.ns)
			switch {
			case why != "":
				return nil, false, "from.jwt." + why
			case never:
				return nil, false, ""
			}
			all = append(all, p)
		}
		match(f.Principals, false, expressible(principals))
		match(f.NotPrincipals, true, expressible(principals))
		match(f.Namespaces, false, namespaces)
		match(f.NotNamespaces, true, namespaces)
	}
	if t := r.To; t != nil && reason == "" {
		if match(t.Hosts, false, hosts); len(t.Hosts) > 0 {
			rt.authority = true
		}
		if reason == "" && len(t.Ports) > 0 && !slices.Contains(t.Ports, rt.port) {
			return nil, false, "" // the route's port is fixed: the rule never matches here
		}
		match(t.Methods, false, expressible(methods))
		match(t.NotMethods, true, expressible(methods))
		match(t.Paths, false, paths)
		match(t.NotPaths, true, paths)
	}
	if reason != "" {
		return nil, false, reason
	}
	for k := range r.When {
		c, never, reason := rt.condition(&r.When[k])
		if reason != "" {
			return nil, false, fmt.Sprintf("when[%d]: %s", k, reason)
		}
		if never {
			return nil, false, ""
		}
		all = append(all, c)
	}
	return andIDs(all...), true, ""
}

// expressible adapts a translation every list has.
func expressible(translate func([]string) *rbacv3.Principal) func([]string) (*rbacv3.Principal, string) {
	return func(list []string) (*rbacv3.Principal, string) { return translate(list), "" }
}

// asciiRule reports whether every pattern and value of a rule is printable ASCII.
func asciiRule(r *model.Rule) bool {
	var all []string
	var values []*model.ValueMatch
	if f := r.From; f != nil {
		all = slices.Concat(f.Principals, f.NotPrincipals, f.Namespaces, f.NotNamespaces)
		if f.JWT != nil {
			all = append(all, f.JWT.Providers...)
			for i := range f.JWT.Claims {
				all = append(all, f.JWT.Claims[i].Claim)
				values = append(values, &f.JWT.Claims[i].ValueMatch)
			}
		}
	}
	if t := r.To; t != nil {
		all = slices.Concat(all, t.Methods, t.NotMethods, t.Paths, t.NotPaths, t.Hosts)
	}
	for i := range r.When {
		all = append(all, r.When[i].Header, r.When[i].Attribute)
		values = append(values, &r.When[i].ValueMatch)
	}
	for _, v := range values {
		all = append(all, v.In...)
		for _, s := range []*string{v.Equals, v.Contains, v.Matches} {
			if s != nil {
				all = append(all, *s)
			}
		}
	}
	for _, s := range all {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				return false
			}
		}
	}
	return true
}

// headerName is a header a native route may read: not a pseudo-header, not "host" (the engine
// sees it as ":authority").
var headerName = regexp.MustCompile(`^[a-z0-9-]+$`)

// condition translates one when condition; never is set when it can match no request.
func (rt *rbacTranslator) condition(c *model.Condition) (p *rbacv3.Principal, never bool, reason string) {
	switch {
	case c.Time != nil:
		return nil, false, NotNativeTime
	case len(c.SourceIPs) > 0:
		return sourceIPs(c.SourceIPs)
	case len(c.NotSourceIPs) > 0:
		p, never, reason := sourceIPs(c.NotSourceIPs)
		if reason != "" {
			return nil, false, reason
		}
		if never {
			return anyPrincipal(), false, ""
		}
		return notID(p), false, ""
	}
	name := c.HeaderName()
	if name == "" {
		return nil, false, NotNativeAttribute + " " + c.Attribute
	}
	if !headerName.MatchString(name) || name == "host" {
		return nil, false, NotNativeHeaderName + " " + name
	}
	var values []*matcherv3.StringMatcher
	switch v := &c.ValueMatch; {
	case v.Equals != nil:
		values = append(values, exact(*v.Equals))
	case v.In != nil:
		for _, s := range v.In {
			values = append(values, exact(s))
		}
	case v.Contains != nil:
		// A space-separated word of the value (an OAuth scope); "" is no word.
		if *v.Contains == "" {
			return nil, true, ""
		}
		re := `(?:.* )?` + regexp.QuoteMeta(*v.Contains) + `(?: .*)?`
		if len(re) > maxRegexp {
			return nil, false, NotNativeRegexpSize
		}
		values = append(values, regex(re))
	default:
		return nil, false, NotNativeHeaderRegex
	}
	if len(values) == 0 {
		return nil, true, ""
	}
	rt.headers[name] = true
	ids := make([]*rbacv3.Principal, len(values))
	for i, m := range values {
		ids[i] = headerPrincipal(name, m)
	}
	return orIDs(ids...), false, ""
}

// sourceIPs matches the direct peer's address. The engine reads an IPv4-mapped IPv6 peer as
// IPv4, Envoy as IPv6: each IPv4 range is matched in both forms. IPv6 ranges are left to
// ext_authz (one covering ::ffff:0:0/96 would match a mapped peer in Envoy and not in the
// engine).
func sourceIPs(list []string) (p *rbacv3.Principal, never bool, reason string) {
	var ids []*rbacv3.Principal
	for _, s := range list {
		var pfx netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if pfx, err = netip.ParsePrefix(s); err != nil {
				return nil, false, NotNativeAttribute + " sourceIPs " + s // validated by the model: unreachable
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, false, NotNativeAttribute + " sourceIPs " + s
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		pfx = pfx.Masked()
		if !pfx.Addr().Is4() {
			return nil, false, NotNativeSourceIPv6
		}
		mapped := netip.PrefixFrom(netip.AddrFrom16(pfx.Addr().As16()), pfx.Bits()+96)
		for _, q := range []netip.Prefix{pfx, mapped} {
			ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(q)}})
		}
	}
	if len(ids) == 0 {
		return nil, true, ""
	}
	return orIDs(ids...), false, ""
}

// principals matches SPIFFE IDs as pattern.Principal does: exact, "prefix*", "*suffix", "*" any
// authenticated workload. Mesh certificates carry one SPIFFE ID (a URI SAN, checked against the
// trust domain by the listener's validation context), which is what RBAC's principal_name
// reads first.
func principals(list []string) *rbacv3.Principal {
	ids := make([]*rbacv3.Principal, 0, len(list))
	for _, s := range list {
		var m *matcherv3.StringMatcher
		switch {
		case s == "*":
			m = prefix("spiffe://")
		case strings.HasPrefix(s, "*"):
			m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s[1:]}}
		case strings.HasSuffix(s, "*"):
			m = prefix(s[:len(s)-1])
		default:
			m = exact(s)
		}
		ids = append(ids, authenticated(m))
	}
	return orIDs(ids...)
}

// namespaces matches the namespace the engine derives from a workload ID,
// spiffe://<td>/ns/<namespace>/sa/<account>.
func namespaces(list []string) (*rbacv3.Principal, string) {
	ids := make([]*rbacv3.Principal, len(list))
	for i, ns := range list {
		re := `spiffe://[^/]+/ns/` + regexp.QuoteMeta(ns) + `/sa/[^/]+`
		if len(re) > maxRegexp {
			return nil, NotNativeRegexpSize
		}
		ids[i] = authenticated(regex(re))
	}
	return orIDs(ids...), ""
}

// hosts matches a plain authority as pattern.Host matches the engine's host (lower case,
// without port and one trailing dot): exact, "*.suffix" or "prefix.*", a wildcard standing for
// at least one character.
func hosts(list []string) (*rbacv3.Principal, string) {
	const port = `\.?(?::[0-9]+)?`
	ids := make([]*rbacv3.Principal, len(list))
	for i, h := range list {
		h = strings.ToLower(h)
		var re string
		switch {
		case strings.ContainsAny(h, ":[]") || strings.HasSuffix(h, "."):
			return nil, NotNativeHosts // a port, an IPv6 literal, or a dot the engine's host never ends with
		case strings.HasPrefix(h, "*."):
			re = `(?i)[^:]+` + regexp.QuoteMeta(h[1:]) + port
		case strings.HasSuffix(h, ".*"):
			// The rest must be more than the one trailing dot the engine removes.
			re = `(?i)` + regexp.QuoteMeta(h[:len(h)-1]) + `(?:[^:.][^:]*|\.[^:]+)(?::[0-9]+)?`
		default:
			re = `(?i)` + regexp.QuoteMeta(h) + port
		}
		if len(re) > maxRegexp {
			return nil, NotNativeRegexpSize
		}
		ids[i] = headerPrincipal(":authority", regex(re))
	}
	return orIDs(ids...), ""
}

func methods(list []string) *rbacv3.Principal {
	ids := make([]*rbacv3.Principal, len(list))
	for i, m := range list {
		ids[i] = headerPrincipal(":method", exact(m))
	}
	return orIDs(ids...)
}

// paths matches normalised paths as pattern.Path does.
func paths(list []string) (*rbacv3.Principal, string) {
	ids := make([]*rbacv3.Principal, len(list))
	for i, p := range list {
		var m *matcherv3.StringMatcher
		switch {
		case !strings.Contains(p, "*"):
			m = exact(p)
		case strings.HasSuffix(p, "/*") && strings.Count(p, "*") == 1:
			m = prefix(p[:len(p)-1])
		default:
			re := globRegexp(p)
			if len(re) > maxRegexp {
				return nil, NotNativeRegexpSize
			}
			m = regex(re)
		}
		ids[i] = &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: m},
		}}}
	}
	return orIDs(ids...), ""
}

// globRegexp is the RE2 expression (matched in full) of a path glob: "**" any number of
// segments (to the end when last), "*" one non-empty segment, "*" inside a segment any
// characters but "/".
func globRegexp(p string) string {
	var b strings.Builder
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		switch {
		case s == "**" && i == len(segs)-1:
			b.WriteString(`(?:/.*)?`)
		case s == "**":
			b.WriteString(`(?:/[^/]*)*`)
		case s == "*":
			b.WriteString(`/[^/]+`)
		default:
			parts := strings.Split(s, "*")
			for j := range parts {
				parts[j] = regexp.QuoteMeta(parts[j])
			}
			b.WriteString("/" + strings.Join(parts, `[^/]*`))
		}
	}
	return b.String()
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func regex(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

func regexHeader(name, re string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regex(re)}}
}

func headerPrincipal(name string, m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
		Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m},
	}}}
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func cidr(p netip.Prefix) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

func anyPrincipal() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func notID(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}

// andIDs matches when all match; with none, always.
func andIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	switch len(ids) {
	case 0:
		return anyPrincipal()
	case 1:
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func orIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

// nativeRoutes returns the routes that have Envoy decide the plain requests of a service port
// (engine auto, policies expressible), to go before the ext_authz route like them, and records
// where the route's policies are decided; none when ext_authz decides them all. Where providers
// verify the service's tokens there are two: one for requests with a token, which jwt_authn
// verifies (a token no provider verifies is refused, 401), and one for requests without an
// Authorization header at all. (One route letting both through jwt_authn, with allow_missing,
// would not do: Envoy then accepts a token whose audience its provider refuses.)
func (t *translator) nativeRoutes(name string, in target, rateLimitKeys []string, extAuthz *routev3.Route) []*routev3.Route {
	authz := t.p.Mesh.Config.Spec.Authz
	if authz.Mode == model.AuthzOff || authz.Engine != model.EngineAuto {
		return nil
	}
	if t.res.Authz == nil {
		t.res.Authz = map[string]AuthzPlacement{}
	}
	r, placement := nativeAuthz(in.service, in.port, t.p.Mesh.Config.Spec.DefaultDecision, rateLimitKeys, t.p.Mesh.RootNamespace, t.opts.JWKS)
	t.res.Authz[name] = placement
	if r == nil {
		return nil
	}
	native := proto.Clone(extAuthz).(*routev3.Route)
	native.Match.Headers = r.gate
	native.TypedPerFilterConfig[filterExtAuthz] = t.any(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}})
	// The decision id Envoy's decision is logged under (authz/server's access log), to the
	// application and the client as ext_authz gives its own; whatever the client sent is replaced.
	id := []*corev3.HeaderValueOption{{
		Header:       &corev3.HeaderValue{Key: model.HeaderDecisionID, Value: "%STREAM_ID%"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	native.RequestHeadersToAdd = append(native.RequestHeadersToAdd, id...)
	native.ResponseHeadersToAdd = append(native.ResponseHeadersToAdd, id...)
	native.TypedPerFilterConfig[filterRBACDeny] = t.any(r.deny)
	if r.allow != nil {
		native.TypedPerFilterConfig[filterRBACAllow] = t.any(r.allow)
	}
	jwt := r.jwt
	if jwt == nil {
		return []*routev3.Route{native}
	}
	t.addJWTScope(jwt)
	withToken := proto.Clone(native).(*routev3.Route)
	// The token header first: it tells the two routes apart at the least cost.
	withToken.Match.Headers = append([]*routev3.HeaderMatcher{jwt.tokenGate()}, r.gate...)
	t.jwtRequirements[name] = jwt.requirement()
	withToken.TypedPerFilterConfig[filterJWT] = t.any(&jwtauthnv3.PerRouteConfig{
		RequirementSpecifier: &jwtauthnv3.PerRouteConfig_RequirementName{RequirementName: name},
	})
	// Once jwt_authn has verified the token (and, with revocations, picked the route again),
	// a token a revocation names no longer matches: ext_authz's route decides it.
	withToken.Match.DynamicMetadata = jwt.notRevoked()
	if r.tokenRequired {
		return []*routev3.Route{withToken}
	}
	native.Match.Headers = append([]*routev3.HeaderMatcher{jwt.noTokenGate()}, r.gate...)
	return []*routev3.Route{withToken, native}
}
