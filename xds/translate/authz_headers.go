package translate

import (
	"slices"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/portcullis/portcullis/xds/model"
)

// authzHeadersAlways are the request headers the authorization service reads whatever the
// documents say: the W3C trace context its span joins when Envoy does not trace the call, and
// X-Forwarded-For, which the verified rate limits' trusted hops read.
var authzHeadersAlways = []string{"traceparent", "tracestate", "x-forwarded-for"}

// authzHeaders is the allow list of request headers Envoy sends the authorization service
// (ext_authz allowed_headers): those the decisions for this proxy's destinations read — the
// headers their policies' conditions name (dry runs included), where their JWT and API key
// providers look for credentials, and authzHeadersAlways. Every other header (cookies, other
// credentials) stays out of the check: less for Envoy to encode and the service to decode per
// request, and nothing the service does not need crosses to it. nil, every header, when a
// Rego module is in scope: it reads input.request.headers as a whole.
//
// It must be a superset of what the service reads, or a header a DENY rule tests goes missing:
// it is computed from the same resolved documents the service decides with, and a document
// change reaches the filter over ECDS, like the policy reaches the service. Names are matched
// without regard to case (Envoy's are lower case; an HTTP/1 request's may not be).
func (t *translator) authzHeaders() *matcherv3.ListStringMatcher {
	names := slices.Clone(authzHeadersAlways)
	add := func(name string) {
		if name = strings.ToLower(name); !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	var docs []model.Object
	for _, svc := range t.inboundServices {
		for _, pol := range svc.AuthorizationPolicies {
			if pol.Spec.Rego != nil {
				t.source(filterExtAuthz, pol)
				return nil
			}
			docs = append(docs, pol)
			for _, r := range pol.Spec.Rules {
				for i := range r.When {
					if h := r.When[i].HeaderName(); h != "" {
						add(h)
					}
				}
			}
		}
		// The providers' locations with the model's defaults filled in (Authorization, x-api-key).
		for _, p := range svc.JWTProviders {
			docs = append(docs, p)
			for _, h := range p.Spec.FromHeaders {
				add(h.Name)
			}
			if len(p.Spec.FromCookies) > 0 {
				add("cookie")
			}
		}
		for _, p := range svc.APIKeyProviders {
			docs = append(docs, p)
			add(p.Spec.Header)
		}
	}
	t.source(filterExtAuthz, docs...)
	slices.Sort(names)
	list := &matcherv3.ListStringMatcher{Patterns: make([]*matcherv3.StringMatcher, len(names))}
	for i, n := range names {
		list.Patterns[i] = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}, IgnoreCase: true}
	}
	return list
}
