package translate

import (
	"regexp"
	"strconv"
	"strings"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// filterCORS is the CORS filter, first in every inbound connection manager: it answers a
// preflight before rate limits and authorization (a browser's preflight carries no credentials),
// and its response headers reach every answer, the 429s and 401s of the filters after it
// included, so scripts on an allowed origin can read why a request failed.
const filterCORS = "envoy.filters.http.cors"

// corsPolicy is the per-route CORS policy of a service (Service.spec.cors), or nil. Preflights
// from origins it does not allow are answered by Envoy without CORS headers — the browser then
// refuses the request — rather than forwarded to the application.
func corsPolicy(svc *model.ResolvedService) *corsv3.CorsPolicy {
	c := svc.Doc.Spec.CORS
	if c == nil {
		return nil
	}
	p := &corsv3.CorsPolicy{
		AllowMethods:                 strings.Join(c.AllowMethods, ","),
		AllowHeaders:                 strings.Join(c.AllowHeaders, ","),
		ExposeHeaders:                strings.Join(c.ExposeHeaders, ","),
		AllowCredentials:             wrapperspb.Bool(c.AllowCredentials),
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	if c.MaxAge != nil {
		p.MaxAge = strconv.FormatInt(int64(c.MaxAge.Seconds()), 10)
	}
	for _, s := range c.AllowOrigins {
		o, err := model.ParseCORSOrigin(s)
		if err != nil {
			continue // validation refused it; unreachable
		}
		p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, originMatcher(o, s))
	}
	return p
}

// originMatcher matches an allowed origin: exactly (browsers send origins lower-case, as
// validation requires them written), or, with a wildcard, by an anchored expression in which "*"
// is one DNS label — never a suffix match, under which "https://evilexample.com" would pass for
// "https://*.example.com".
func originMatcher(o model.CORSOrigin, text string) *matcherv3.StringMatcher {
	switch {
	case o.Any:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
	case o.Wildcard:
		re := "^" + regexp.QuoteMeta(o.Scheme+"://") + `[a-z0-9]([a-z0-9-]*[a-z0-9])?\.` + regexp.QuoteMeta(o.Host)
		if o.Port != "" {
			re += regexp.QuoteMeta(":" + o.Port)
		}
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re + "$"}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: text}}
}
