package translate

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// filterJWT is the jwt_authn filter of every inbound connection manager, before the RBAC
// filters. Its configuration comes over ECDS (the resource of that name): the providers whose
// tokens Envoy verifies on this proxy's native routes, and each such route's requirement, so a
// new provider or key does not replace the listener. Routes without a requirement (every route
// ext_authz decides) skip it.
const filterJWT = "envoy.filters.http.jwt_authn"

// JWTAuthnTypeURL is the type of the jwt_authn filter's ECDS resource.
const JWTAuthnTypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"

// tokenPattern is a compact JWS as the authorization service reads one: three base64url
// segments without padding.
const tokenPattern = `[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`

// jwtCacheSize is how many verified tokens each of Envoy's workers keeps, so a client's token
// costs one signature check, as in the authorization service's cache.
const jwtCacheSize = 1000

// jwtFilter is the jwt_authn filter of an inbound connection manager; its ECDS resource is
// jwtExtension's.
func jwtFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: filterJWT, ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{
		ConfigDiscovery: &corev3.ExtensionConfigSource{ConfigSource: adsSource(), TypeUrls: []string{JWTAuthnTypeURL}},
	}}
}

// jwtScope is how Envoy verifies the tokens of one service's requests when it can do so exactly
// as the authorization service does (authz/jwt's Verify): the service's providers (its
// namespace's and the root namespace's), each with its issuer, audiences, clock skew and the keys
// authz/jwt rewrote for Envoy, all reading one header, with no two sharing an issuer (so a token
// is verified by one provider, as Envoy's requires_any stops at the first).
type jwtScope struct {
	svc  *model.ResolvedService
	root string
	// names are the providers' "namespace/name", the keys of the filter's providers.
	names     []string
	providers map[string]*jwtauthnv3.JwtProvider
	// header (lower case) and prefix are where every provider reads its token.
	header, prefix string
	// revokedJTIs and revokedSubjects are every entry of the revocations that govern these
	// providers' tokens: a token they name goes to ext_authz, which decides on it (nativeRoute).
	revokedJTIs, revokedSubjects []string
}

// newJWTScope builds the service's scope, or says why Envoy cannot verify its tokens as the
// authorization service does. keys is Options.JWKS.
func newJWTScope(svc *model.ResolvedService, root string, keys func(*model.JWTProviderDoc) (string, error)) (*jwtScope, string) {
	sc := &jwtScope{svc: svc, root: root, providers: map[string]*jwtauthnv3.JwtProvider{}}
	issuers := map[string]string{}
	for i, doc := range svc.JWTProviders {
		name := model.RefOf(doc).String()
		s := &doc.Spec
		var jwks string
		err := fmt.Errorf("the control plane gives Envoy no keys")
		if keys != nil {
			jwks, err = keys(doc)
		}
		if err != nil {
			return nil, fmt.Sprintf("%s: %s (%v)", name, NotNativeJWTKeys, err)
		}
		headers := s.FromHeaders // the model's default filled in: Authorization, Bearer
		if len(headers) != 1 || len(s.FromCookies) > 0 {
			return nil, fmt.Sprintf("%s: %s (reads a cookie or more than one header)", name, NotNativeJWTLocation)
		}
		header, prefix := strings.ToLower(headers[0].Name), headers[0].Prefix
		switch {
		case i == 0:
			sc.header, sc.prefix = header, prefix
		case header != sc.header || prefix != sc.prefix:
			return nil, fmt.Sprintf("%s: %s (another provider of the service reads %s %q)", name, NotNativeJWTLocation, sc.header, sc.prefix)
		}
		if other, dup := issuers[s.Issuer]; dup {
			return nil, fmt.Sprintf("%s: %s (with %s)", name, NotNativeJWTIssuer, other)
		}
		issuers[s.Issuer] = name
		skew := model.DefaultClockSkew
		if s.ClockSkew != nil {
			skew = s.ClockSkew.Duration
		}
		// Envoy counts whole seconds, and reads 0 as its default of 60.
		if skew%time.Second != 0 || skew == 0 {
			return nil, fmt.Sprintf("%s: %s (%s)", name, NotNativeJWTSkew, skew)
		}
		sc.names = append(sc.names, name)
		sc.providers[name] = &jwtauthnv3.JwtProvider{
			Issuer:    s.Issuer,
			Audiences: s.Audiences,
			// The authorization service refuses a token without exp, and never removes it.
			RequireExpiration: true,
			Forward:           true,
			FromHeaders:       []*jwtauthnv3.JwtHeader{{Name: header, ValuePrefix: prefix}},
			ClockSkewSeconds:  uint32(skew / time.Second),
			JwksSourceSpecifier: &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: jwks},
			}},
			PayloadInMetadata:      model.JWTPayloadKey,
			FailedStatusInMetadata: model.JWTFailedKey,
			JwtCacheConfig:         &jwtauthnv3.JwtCacheConfig{JwtCacheSize: jwtCacheSize},
		}
	}
	if len(prefixPattern(sc.prefix)) > maxRegexp {
		return nil, fmt.Sprintf("%s: %s (prefix %q)", sc.names[0], NotNativeRegexpSize, sc.prefix)
	}
	for _, d := range svc.CredentialRevocations {
		for _, e := range d.Spec.JWTs {
			if e.JTI != "" {
				sc.revokedJTIs = append(sc.revokedJTIs, e.JTI)
			} else {
				sc.revokedSubjects = append(sc.revokedSubjects, e.Subject)
			}
		}
	}
	slices.Sort(sc.revokedJTIs)
	slices.Sort(sc.revokedSubjects)
	sc.revokedJTIs, sc.revokedSubjects = slices.Compact(sc.revokedJTIs), slices.Compact(sc.revokedSubjects)
	if len(sc.revokedJTIs)+len(sc.revokedSubjects) > 0 {
		// The route is picked again once the token is verified, so that one a revocation names
		// leaves the native route (notRevoked).
		for _, p := range sc.providers {
			p.ClearRouteCache = true
		}
	}
	return sc, ""
}

// prefixPattern is what the route's gate requires of the token header: the prefix, then a
// token.
func prefixPattern(prefix string) string {
	return regexp.QuoteMeta(prefix) + tokenPattern
}

// tokenGate is what a request with a token needs for Envoy to decide it: one token, in the one
// header the providers read, in the one spelling both read alike (the prefix as configured, one
// token, no spaces around it: the service would also take another case of the prefix, and Envoy
// the first base64url run after it). A header sent twice reads "a,b" here, and fails it.
func (sc *jwtScope) tokenGate() *routev3.HeaderMatcher {
	return regexHeader(sc.header, prefixPattern(sc.prefix))
}

// noTokenGate: no token header at all (an empty one might be read as a token by neither, but
// ext_authz decides it).
func (sc *jwtScope) noTokenGate() *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: sc.header, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true}
}

// requirement has jwt_authn verify the token with the provider whose issuer it names; a token
// that none verifies is refused (401), as the service refuses it.
func (sc *jwtScope) requirement() *jwtauthnv3.JwtRequirement {
	if len(sc.names) == 1 {
		return &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: sc.names[0]}}
	}
	reqs := make([]*jwtauthnv3.JwtRequirement, len(sc.names))
	for i, n := range sc.names {
		reqs[i] = &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: n}}
	}
	return &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{
		RequiresAny: &jwtauthnv3.JwtRequirementOrList{Requirements: reqs},
	}}
}

// notRevoked are the token route's matchers on the verified token: none of the revoked jtis or
// subjects. A subject's entry names its tokens issued before a time, and a jti entry one issuer's
// token: both send more to ext_authz than they revoke, never less. Before jwt_authn has run (the
// route's first pick) the claims are absent, which an inverted matcher lets through.
func (sc *jwtScope) notRevoked() []*matcherv3.MetadataMatcher {
	var out []*matcherv3.MetadataMatcher
	for _, c := range []struct {
		claim  string
		values []string
	}{{"jti", sc.revokedJTIs}, {"sub", sc.revokedSubjects}} {
		if len(c.values) == 0 {
			continue
		}
		ms := make([]*matcherv3.ValueMatcher, len(c.values))
		for i, v := range c.values {
			ms[i] = stringValue(exact(v))
		}
		m := payloadMatcher(c.claim, orValues(ms...))
		m.Invert = true
		out = append(out, m)
	}
	return out
}

// jwt translates from.jwt of a rule of a policy in namespace ns: a token verified by one of the
// named providers (by the issuer each verifies: no two in the scope share one), or by any when
// none is named, whose claims all hold.
func (rt *rbacTranslator) jwt(j *model.JWTRequirement, ns string) (p *rbacv3.Principal, never bool, reason string) {
	sc := rt.jwtScope
	if sc == nil {
		return nil, true, "" // no provider verifies tokens for the service: no request has one
	}
	all := []*rbacv3.Principal{metadataPrincipal(&matcherv3.MetadataMatcher{
		Filter: model.JWTAuthnMetadata,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{pathKey(model.JWTPayloadKey)},
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}},
	})}
	if len(j.Providers) > 0 {
		var issuers []*matcherv3.ValueMatcher
		for _, name := range j.Providers {
			if d := sc.svc.JWTProvider(ns, sc.root, name); d != nil {
				issuers = append(issuers, stringValue(exact(d.Spec.Issuer)))
			}
		}
		if len(issuers) == 0 {
			return nil, true, "" // the named providers verify no token the service sees
		}
		all = []*rbacv3.Principal{metadataPrincipal(payloadMatcher("iss", orValues(issuers...)))}
	}
	for k := range j.Claims {
		c, never, reason := claim(&j.Claims[k])
		if reason != "" {
			return nil, false, fmt.Sprintf("claims[%d]: %s", k, reason)
		}
		if never {
			return nil, true, ""
		}
		all = append(all, c)
	}
	return andIDs(all...), false, ""
}

// jsonLiteral finds the values a number or boolean claim is spelled as: the service compares a
// claim's JSON spelling ("30", "true"), Envoy only strings with strings.
var jsonLiteral = regexp.MustCompile(`^(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false)$`)

// claim translates one claim test. The engine reads a claim at a dot path through objects and
// lists of objects, and a path that also names a literal key is absent: only a top-level claim
// is translated. Its value, or any element of a list, is tested; contains is a word of a string
// value and an element of a list.
func claim(c *model.ClaimMatch) (p *rbacv3.Principal, never bool, reason string) {
	if strings.Contains(c.Claim, ".") {
		return nil, false, NotNativeJWTClaimPath + " " + c.Claim
	}
	var literals []string
	word := false
	switch v := &c.ValueMatch; {
	case v.Equals != nil:
		literals = []string{*v.Equals}
	case v.In != nil:
		literals = v.In
	case v.Contains != nil:
		if *v.Contains == "" {
			return nil, true, ""
		}
		literals, word = []string{*v.Contains}, true
	default:
		return nil, false, NotNativeJWTClaimMatches
	}
	if len(literals) == 0 {
		return nil, true, ""
	}
	ids := make([]*rbacv3.Principal, len(literals))
	for i, s := range literals {
		if jsonLiteral.MatchString(s) {
			return nil, false, NotNativeJWTClaimValue + " " + s
		}
		top := exact(s)
		if word {
			// (?s): a claim, unlike a header, may hold a newline.
			re := `(?s)(?:.* )?` + regexp.QuoteMeta(s) + `(?: .*)?`
			if len(re) > maxRegexp {
				return nil, false, NotNativeRegexpSize
			}
			top = regex(re)
		}
		ids[i] = metadataPrincipal(payloadMatcher(c.Claim, claimValue(top, exact(s))))
	}
	return orIDs(ids...), false, ""
}

// claimValue matches a top-level claim whose value matches top, or that is a list with an element
// matching elem (the engine does not look into a list in a list either).
func claimValue(top, elem *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return orValues(stringValue(top), &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{
		ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: stringValue(elem)}},
	}})
}

func stringValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

// orValues matches when any matches.
func orValues(ms ...*matcherv3.ValueMatcher) *matcherv3.ValueMatcher {
	if len(ms) == 1 {
		return ms[0]
	}
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: ms}}}
}

// payloadMatcher matches a top-level claim of the verified token.
func payloadMatcher(claim string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	return &matcherv3.MetadataMatcher{
		Filter: model.JWTAuthnMetadata,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{pathKey(model.JWTPayloadKey), pathKey(claim)},
		Value:  v,
	}
}

func pathKey(k string) *matcherv3.MetadataMatcher_PathSegment {
	return &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}}
}

// metadataPrincipal matches the request's dynamic metadata (what jwt_authn wrote).
func metadataPrincipal(m *matcherv3.MetadataMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{MetadataMatcher: m}}}
}

// jwtExtension is the jwt_authn filter's ECDS resource: the providers and requirements of this
// proxy's native routes (none: the filter does nothing).
func (t *translator) jwtExtension() {
	cfg := &jwtauthnv3.JwtAuthentication{Providers: t.jwtProviders, RequirementMap: t.jwtRequirements, StripFailureResponse: true}
	t.res.Extensions = append(t.res.Extensions, &corev3.TypedExtensionConfig{Name: filterJWT, TypedConfig: t.any(cfg)})
	t.source(filterJWT, append([]model.Object{t.p.Mesh.Config}, t.jwtDocs...)...)
}

// addJWTScope adds a native route's providers to the filter's configuration, and their documents
// (and the revocations') to its sources.
func (t *translator) addJWTScope(sc *jwtScope) {
	if t.jwtProviders == nil {
		t.jwtProviders, t.jwtRequirements = map[string]*jwtauthnv3.JwtProvider{}, map[string]*jwtauthnv3.JwtRequirement{}
	}
	for name, p := range sc.providers {
		t.jwtProviders[name] = p
	}
	for _, d := range sc.svc.JWTProviders {
		t.jwtDocs = append(t.jwtDocs, d)
	}
	for _, d := range sc.svc.CredentialRevocations {
		t.jwtDocs = append(t.jwtDocs, d)
	}
}

// jwtRefused matches the requests jwt_authn refused. Its metadata cannot tell: with several
// providers, a token one of them verified still carries another's failure.
func (t *translator) jwtRefused() *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
		Name: "envoy.access_loggers.extension_filters.cel",
		ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: t.any(&celv3.ExpressionFilter{
			Expression: `response.code_details.startsWith("jwt_authn_access_denied")`,
		})},
	}}}
}

// jwtRefusal is the local reply every refusal of jwt_authn's is made into: 401, with the
// challenge the authorization service answers an invalid token with. Envoy answers a token for
// another audience 403, where the service (RFC 6750: a token "invalid for other reasons") says
// 401; and its own challenge names the request's host and path.
func (t *translator) jwtRefusal() *hcmv3.LocalReplyConfig {
	return &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
		Filter:     t.jwtRefused(),
		StatusCode: wrapperspb.UInt32(http.StatusUnauthorized),
		HeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer realm="portcullis", error="invalid_token"`},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}}}
}
