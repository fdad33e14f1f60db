package translate

import (
	"math"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	exprv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// Descriptor keys of the rate limit filters. A Global limit's descriptors start with the
// model.RateLimitEntryLimit and model.RateLimitEntryBucket entries.
const (
	rlKeyLimit     = model.RateLimitEntryLimit
	rlKeyPath      = "path"
	rlKeyHeader    = "header"
	rlKeyPrincipal = "principal"
	// rlKeyCaller is the verified attribute a limit keys on (model.VerifiedKey), read from the
	// authorization decision's dynamic metadata.
	rlKeyCaller = "caller"
	// rlAbsent is the descriptor value of requests without the header a limit is split by: they
	// share one bucket.
	rlAbsent = "-"
)

// The rate limit filters of an inbound connection manager, in their order around ext_authz. Each
// is in every inbound listener, off unless a route configures it, so a changed limit is a route
// change.
const (
	// filterLocalRateLimit counts before authorization: Local limits on what the proxy knows
	// itself (the service, a path, a header, the peer's certificate). It also keeps floods of
	// requests that authorization would deny off the authorization service.
	filterLocalRateLimit = "envoy.filters.http.local_ratelimit"
	// filterVerifiedRateLimit counts allowed requests after authorization: Local limits keyed on
	// what the decision verified (a JWT claim, the client IP).
	filterVerifiedRateLimit = "portcullis.ratelimit.verified"
	// filterGlobalClosed and filterGlobalOpen send Global limits to the rate limit service after
	// authorization, one filter per failure mode (Envoy's is the filter's, not the route's).
	filterGlobalClosed = "portcullis.ratelimit.global_closed"
	filterGlobalOpen   = "portcullis.ratelimit.global_open"
)

// Stat prefixes: the filters' counters, which the agent reports — ratelimit.http_local_rate_limit.
// rate_limited, ratelimit_verified.http_local_rate_limit.rate_limited, and the global filters'
// cluster.<route cluster>.ratelimit.global_<closed|open>.<ok|over_limit|error|failure_mode_allowed>.
const (
	rlStatPrefix         = "ratelimit"
	rlVerifiedStatPrefix = "ratelimit_verified"
	rlGlobalStatPrefix   = "global"
)

// GlobalRateLimitDomain is the filter-level domain of the global rate limit filters; every route
// overrides it with its service ("namespace/name"), which the rate limit service keys buckets by.
const GlobalRateLimitDomain = "portcullis"

// globalRateLimitTimeout bounds a call to the rate limit service (its Redis round trip on
// loopback is a fraction of a millisecond, but a loaded machine can stall a process for tens of
// milliseconds: the same bound as an authorization call by default); past it the limit's failure
// mode applies.
const globalRateLimitTimeout = 250 * time.Millisecond

// localRateLimitFilter is a local rate limit filter of an inbound connection manager: off, with
// no bucket of its own, until a route turns it on (localRateLimit).
func localRateLimitFilter(statPrefix string) *localrlv3.LocalRateLimit {
	return &localrlv3.LocalRateLimit{StatPrefix: statPrefix}
}

// globalRateLimitFilter is a global rate limit filter: gRPC to the rate limit service, which the
// authorization service serves (same cluster, same mTLS), retried like ext_authz. Routes give the
// descriptors and the domain. Fail closed answers 503 — not the 429 of a limit — so an outage is
// never mistaken for a caller's excess.
func (t *translator) globalRateLimitFilter(mode model.FailureMode) *ratelimitv3.RateLimit {
	cfg := &ratelimitv3.RateLimit{
		Domain:  GlobalRateLimitDomain,
		Timeout: durationpb.New(globalRateLimitTimeout),
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
				// Its own timeout, not the Mesh's authorization timeout: this filter is in the
				// listener, which a change to Mesh.spec.authz must not replace.
				RetryPolicy: t.authzRetry(globalRateLimitTimeout),
			},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		FailureModeDeny:                mode == model.FailClosed,
		EnableXRatelimitHeaders:        ratelimitv3.RateLimit_DRAFT_VERSION_03,
		DisableXEnvoyRatelimitedHeader: true,
		EnableRetryAfterHeader:         true,
		StatPrefix:                     rlGlobalStatPrefix + "_" + strings.ToLower(string(mode)),
	}
	if cfg.FailureModeDeny {
		cfg.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
	}
	return cfg
}

// rateLimitRoute adds the per-route configuration of the rate limit filters for a service's
// limits to perFilter, and returns the verified attributes they key on (the route asks the
// authorization service for them).
func (t *translator) rateLimitRoute(svc *model.ResolvedService, perFilter map[string]*anypb.Any) []string {
	var pre, verified, closed, open []model.ResolvedRateLimit
	var keys []string
	for _, l := range svc.RateLimits {
		if k := l.VerifiedKey(); !k.IsZero() && !slices.Contains(keys, k.String()) {
			keys = append(keys, k.String())
		}
		switch {
		case l.Scope == model.ScopeGlobal && l.FailureMode == model.FailClosed:
			closed = append(closed, l)
		case l.Scope == model.ScopeGlobal:
			open = append(open, l)
		case l.Verified():
			verified = append(verified, l)
		default:
			pre = append(pre, l)
		}
	}
	if len(pre) > 0 {
		perFilter[filterLocalRateLimit] = t.any(t.localRateLimit(svc, pre, rlStatPrefix))
	}
	if len(verified) > 0 {
		perFilter[filterVerifiedRateLimit] = t.any(t.localRateLimit(svc, verified, rlVerifiedStatPrefix))
	}
	if len(closed) > 0 {
		perFilter[filterGlobalClosed] = t.any(t.globalRateLimit(svc, closed))
	}
	if len(open) > 0 {
		perFilter[filterGlobalOpen] = t.any(t.globalRateLimit(svc, open))
	}
	slices.Sort(keys)
	return keys
}

// localRateLimit is the per-route configuration of a local rate limit filter in which every
// limit is a descriptor with its own token bucket: a request is counted against every limit
// whose descriptor it produces (the whole service; a path prefix; one bucket per header value,
// calling principal or verified attribute). The filter's default bucket is unlimited and consumed
// only when no descriptor matches, so it never limits on its own.
func (t *translator) localRateLimit(svc *model.ResolvedService, limits []model.ResolvedRateLimit, statPrefix string) *localrlv3.LocalRateLimit {
	cfg := &localrlv3.LocalRateLimit{
		StatPrefix: statPrefix,
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     math.MaxUint32,
			TokensPerFill: wrapperspb.UInt32(math.MaxUint32),
			FillInterval:  durationpb.New(1e9),
		},
		FilterEnabled:                   percent100("portcullis." + statPrefix + ".enabled"),
		FilterEnforced:                  percent100("portcullis." + statPrefix + ".enforced"),
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		EnableXRatelimitHeaders:         commonrlv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header: &corev3.HeaderValue{Key: "x-ratelimit-service", Value: svc.Ref.Name},
		}},
	}
	var maxKeys uint32
	for _, l := range limits {
		actions, entries := t.rateLimitActions(l, false)
		for _, a := range actions {
			cfg.RateLimits = append(cfg.RateLimits, &routev3.RateLimit{Actions: a})
		}
		if l.By != nil {
			maxKeys = max(maxKeys, l.By.MaxKeys)
		}
		cfg.Descriptors = append(cfg.Descriptors, &commonrlv3.LocalRateLimitDescriptor{
			Entries: entries,
			TokenBucket: &typev3.TokenBucket{
				MaxTokens:     l.Bucket.MaxTokens,
				TokensPerFill: wrapperspb.UInt32(l.Bucket.TokensPerFill),
				FillInterval:  durationpb.New(l.Bucket.FillInterval.Duration),
			},
		})
	}
	if maxKeys > 0 {
		cfg.MaxDynamicDescriptors = wrapperspb.UInt32(maxKeys)
	}
	return cfg
}

// globalRateLimit is the per-route configuration of a global rate limit filter: the service as
// the domain, and the limits' descriptors, each carrying its limit's name and bucket.
func (t *translator) globalRateLimit(svc *model.ResolvedService, limits []model.ResolvedRateLimit) *ratelimitv3.RateLimitPerRoute {
	cfg := &ratelimitv3.RateLimitPerRoute{Domain: svc.Ref.String()}
	for _, l := range limits {
		actions, _ := t.rateLimitActions(l, true)
		for _, a := range actions {
			cfg.RateLimits = append(cfg.RateLimits, &routev3.RateLimit{Actions: a})
		}
	}
	return cfg
}

// rateLimitActions returns the action lists generating a limit's descriptor (two for a header:
// present and absent), and, for a local limit, the descriptor entries its bucket matches (a
// wildcard entry, with no value, for a per-value key).
func (t *translator) rateLimitActions(l model.ResolvedRateLimit, global bool) ([][]*routev3.RateLimit_Action, []*commonrlv3.RateLimitDescriptor_Entry) {
	base := []*routev3.RateLimit_Action{genericKey(rlKeyLimit, l.Name)}
	entries := []*commonrlv3.RateLimitDescriptor_Entry{{Key: rlKeyLimit, Value: l.Name}}
	if global {
		base = append(base, genericKey(model.RateLimitEntryBucket, l.Bucket.Entry()))
	}
	if l.PathPrefix != "" {
		prefix := strings.TrimSuffix(l.PathPrefix, "*")
		base = append(base, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{
			HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
				DescriptorKey:   rlKeyPath,
				DescriptorValue: prefix,
				ExpectMatch:     wrapperspb.Bool(true),
				Headers: []*routev3.HeaderMatcher{{
					Name: ":path",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix},
					}},
				}},
			},
		}})
		entries = append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: rlKeyPath, Value: prefix})
	}
	with := func(a *routev3.RateLimit_Action) []*routev3.RateLimit_Action { return append(slices.Clone(base), a) }
	switch {
	case l.By == nil:
		return [][]*routev3.RateLimit_Action{base}, entries
	case l.By.Header != "":
		name := strings.ToLower(l.By.Header)
		present := &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: name, DescriptorKey: rlKeyHeader},
		}}
		absent := &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{
			HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
				DescriptorKey:   rlKeyHeader,
				DescriptorValue: rlAbsent,
				ExpectMatch:     wrapperspb.Bool(false),
				Headers:         []*routev3.HeaderMatcher{{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}},
			},
		}}
		return [][]*routev3.RateLimit_Action{with(present), with(absent)}, append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: rlKeyHeader})
	case l.By.SourcePrincipal:
		// The peer's URI SAN is its SPIFFE ID. Plaintext requests (PERMISSIVE) have none and are
		// not split: skip_if_error drops the descriptor for them.
		return [][]*routev3.RateLimit_Action{with(&routev3.RateLimit_Action{
			ActionSpecifier: &routev3.RateLimit_Action_Extension{Extension: &corev3.TypedExtensionConfig{
				Name: "envoy.rate_limit_descriptors.expr",
				TypedConfig: t.any(&exprv3.Descriptor{
					DescriptorKey: rlKeyPrincipal,
					SkipIfError:   true,
					ExprSpecifier: &exprv3.Descriptor_Text{Text: "connection.uri_san_peer_certificate"},
				}),
			}},
		})}, append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: rlKeyPrincipal})
	default:
		// A verified attribute, from the decision's dynamic metadata. A request authorization did
		// not see (the filter failing open, authorization off) has none: the descriptor is not
		// produced and the limit does not count it.
		return [][]*routev3.RateLimit_Action{with(&routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{
			Metadata: &routev3.RateLimit_Action_MetaData{
				DescriptorKey: rlKeyCaller,
				MetadataKey: &metadatav3.MetadataKey{Key: filterExtAuthz, Path: []*metadatav3.MetadataKey_PathSegment{
					{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: model.MetadataVerified}},
					{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: l.VerifiedKey().String()}},
				}},
				Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
			},
		}})}, append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: rlKeyCaller})
	}
}

func genericKey(key, value string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
		GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: key, DescriptorValue: value},
	}}
}

func percent100(runtimeKey string) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		RuntimeKey:   runtimeKey,
	}
}
