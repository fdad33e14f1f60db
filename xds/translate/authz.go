package translate

import (
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// ExtAuthzTypeURL is the type of the ext_authz filter's configuration, the one type its ECDS
// resource may have.
const ExtAuthzTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"

// extAuthzFilter is the ext_authz filter of an inbound connection manager. Its configuration —
// the mesh's failure mode, timeout and body buffering — comes over ECDS (the resource named
// filterExtAuthz), so a change to Mesh.spec.authz reaches open connections without touching the
// listener; routes enable it and name the destination.
func extAuthzFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: filterExtAuthz, ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{
		ConfigDiscovery: &corev3.ExtensionConfigSource{ConfigSource: adsSource(), TypeUrls: []string{ExtAuthzTypeURL}},
	}}
}

// authzExtension adds the ext_authz filter's ECDS resource when an inbound listener uses it.
func (t *translator) authzExtension() {
	if !t.inboundAuthz {
		return
	}
	t.res.Extensions = append(t.res.Extensions, &corev3.TypedExtensionConfig{Name: filterExtAuthz, TypedConfig: t.any(t.extAuthz())})
	t.source(filterExtAuthz, t.p.Mesh.Config)
	t.jwtExtension()
}

// extAuthz configures the ext_authz filter: gRPC to the control plane's authorization service
// through a cluster with HTTP/2 keepalive (one connection, not one per call), the caller's
// certificate included so the service sees its SPIFFE ID, the mesh's timeout and failure mode.
// When authorization is unreachable and the mesh fails closed, requests get 503 — not the 403 of
// a policy denial — so an outage is never mistaken for a policy.
func (t *translator) extAuthz() *extauthzv3.ExtAuthz {
	authz := t.p.Mesh.Config.Spec.Authz
	cfg := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
			Timeout:         durationpb.New(authz.Timeout.Duration),
			RetryPolicy:     t.authzRetry(authz.Timeout.Duration),
		}},
		TransportApiVersion:    corev3.ApiVersion_V3,
		FailureModeAllow:       authz.FailureMode == model.FailOpen,
		IncludePeerCertificate: true,
		IncludeTlsSession:      true,
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		StatPrefix:             "portcullis",
		// One entry per header line: Envoy's plain header map joins a header sent twice into
		// "1,1", which a policy on "1" does not match while the application reads a "1".
		EncodeRawHeaders: true,
		AllowedHeaders:   t.authzHeaders(),
	}
	if cfg.FailureModeAllow {
		// Let the application see that a request was let through unchecked.
		cfg.FailureModeAllowHeaderAdd = true
	}
	if n := authz.MaxRequestBytes; n > 0 {
		cfg.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: n, AllowPartialMessage: true}
	}
	return cfg
}

// authzRetry retries a call (a Check, or a global rate limit call) that no server saw — the connection refused or reset,
// the stream refused, the server going away (UNAVAILABLE) — on a new connection, within the
// call's timeout: a replica that stops (a rolling restart) costs no request.
//
// Envoy makes the back-off's max_interval the per-try timeout of a gRPC service's retries
// (Http::Utility::convertCoreToRouteRetryPolicy). It is the call's whole timeout: with 50ms, a
// Check that took longer (a Rego module near its budget, a JWKS fetch for an unknown key id)
// was cut, evaluated again twice, and answered 503 — three decisions' work for none. Two
// retries from 10ms never back off that far.
func (t *translator) authzRetry(timeout time.Duration) *corev3.RetryPolicy {
	return &corev3.RetryPolicy{
		RetryOn:    "connect-failure,refused-stream,reset,unavailable",
		NumRetries: wrapperspb.UInt32(2),
		RetryBackOff: &corev3.BackoffStrategy{
			BaseInterval: durationpb.New(10 * time.Millisecond),
			MaxInterval:  durationpb.New(max(timeout, 10*time.Millisecond)),
		},
		// Another instance when there is one (several authz replicas behind one name).
		RetryHostPredicate: []*corev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &corev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: t.any(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: 3,
	}
}

// extAuthzPerRoute names the destination for the authorization service, and the verified
// attributes the route's rate limits key on (model.ContextKeyRateLimit), which it returns in an
// allowed request's dynamic metadata. With the mesh's authorization mode OFF it turns the filter
// off for the route: no request is authorized, and turning authorization back on reaches open
// connections at their next request.
func (t *translator) extAuthzPerRoute(in target, rateLimitKeys []string) *extauthzv3.ExtAuthzPerRoute {
	if t.p.Mesh.Config.Spec.Authz.Mode == model.AuthzOff {
		return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}
	}
	ext := map[string]string{
		model.ContextKeyService:   in.service.Ref.Name,
		model.ContextKeyNamespace: in.service.Ref.Namespace,
		model.ContextKeyPort:      strconv.Itoa(int(in.port)),
	}
	if len(rateLimitKeys) > 0 {
		ext[model.ContextKeyRateLimit] = strings.Join(rateLimitKeys, ",")
	}
	return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
		CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: ext},
	}}
}
