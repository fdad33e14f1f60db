package translate

import (
	"math"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	exprv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// Descriptor keys of the local rate limit filter.
const (
	rlKeyLimit     = "limit"
	rlKeyPath      = "path"
	rlKeyHeader    = "header"
	rlKeyPrincipal = "principal"
	// rlAbsent is the descriptor value of requests without the header a limit is split by: they
	// share one bucket.
	rlAbsent = "-"
)

// rateLimitFilter is the local rate limit filter of an inbound connection manager: off, with no
// bucket of its own. A route whose service a RateLimitPolicy selects turns it on with the
// service's limits (localRateLimit, per route), so a changed limit is a route change.
func rateLimitFilter() *localrlv3.LocalRateLimit {
	return &localrlv3.LocalRateLimit{StatPrefix: rlStatPrefix}
}

// rlStatPrefix names the filter's counters (ratelimit.http_local_rate_limit.rate_limited, which
// the agent reports).
const rlStatPrefix = "ratelimit"

// localRateLimit is the per-route configuration of the local rate limit filter in which every
// limit is a descriptor with its own token bucket: a request is counted against every limit
// whose descriptor it produces (the whole service; a path prefix; one bucket per header value or calling principal).
// The filter's default bucket is unlimited and consumed only when no descriptor matches, so it
// never limits on its own.
func (t *translator) localRateLimit(svc *model.ResolvedService) *localrlv3.LocalRateLimit {
	cfg := &localrlv3.LocalRateLimit{
		StatPrefix: rlStatPrefix,
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     math.MaxUint32,
			TokensPerFill: wrapperspb.UInt32(math.MaxUint32),
			FillInterval:  durationpb.New(1e9),
		},
		FilterEnabled:                   percent100("portcullis.ratelimit.enabled"),
		FilterEnforced:                  percent100("portcullis.ratelimit.enforced"),
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		EnableXRatelimitHeaders:         commonrlv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header: &corev3.HeaderValue{Key: "x-ratelimit-service", Value: svc.Ref.Name},
		}},
	}
	var maxKeys uint32
	for _, l := range svc.RateLimits {
		base := []*routev3.RateLimit_Action{genericKey(rlKeyLimit, l.Name)}
		entries := []*commonrlv3.RateLimitDescriptor_Entry{{Key: rlKeyLimit, Value: l.Name}}
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
		switch {
		case l.By == nil:
			cfg.RateLimits = append(cfg.RateLimits, &routev3.RateLimit{Actions: base})
		case l.By.Header != "":
			maxKeys = max(maxKeys, l.By.MaxKeys)
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
			cfg.RateLimits = append(cfg.RateLimits,
				&routev3.RateLimit{Actions: append(slices.Clone(base), present)},
				&routev3.RateLimit{Actions: append(slices.Clone(base), absent)})
			entries = append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: rlKeyHeader})
		case l.By.SourcePrincipal:
			maxKeys = max(maxKeys, l.By.MaxKeys)
			// The peer's URI SAN is its SPIFFE ID. Plaintext requests (PERMISSIVE) have none and
			// are not split: skip_if_error drops the descriptor for them.
			cfg.RateLimits = append(cfg.RateLimits, &routev3.RateLimit{Actions: append(base, &routev3.RateLimit_Action{
				ActionSpecifier: &routev3.RateLimit_Action_Extension{Extension: &corev3.TypedExtensionConfig{
					Name: "envoy.rate_limit_descriptors.expr",
					TypedConfig: t.any(&exprv3.Descriptor{
						DescriptorKey: rlKeyPrincipal,
						SkipIfError:   true,
						ExprSpecifier: &exprv3.Descriptor_Text{Text: "connection.uri_san_peer_certificate"},
					}),
				}},
			})})
			entries = append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: rlKeyPrincipal})
		}
		perFill := l.Bucket.TokensPerFill
		if perFill == 0 {
			perFill = l.Bucket.MaxTokens
		}
		cfg.Descriptors = append(cfg.Descriptors, &commonrlv3.LocalRateLimitDescriptor{
			Entries: entries,
			TokenBucket: &typev3.TokenBucket{
				MaxTokens:     l.Bucket.MaxTokens,
				TokensPerFill: wrapperspb.UInt32(perFill),
				FillInterval:  durationpb.New(l.Bucket.FillInterval.Duration),
			},
		})
	}
	if maxKeys > 0 {
		cfg.MaxDynamicDescriptors = wrapperspb.UInt32(maxKeys)
	}
	return cfg
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
