package translate

import (
	"slices"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// routeTimeout bounds a request to the local application.
const routeTimeout = 30 * time.Second

// Filter names, as Envoy knows them (the rate limit and CORS filters' are with them).
const (
	filterExtAuthz = "envoy.filters.http.ext_authz"
	filterRouter   = "envoy.filters.http.router"
)

// inbound builds the listener mesh traffic arrives on, its routes, and the cluster of the local
// app.
//
// STRICT: one filter chain, TLS with a client certificate required. PERMISSIVE: a TLS inspector
// picks the TLS chain for TLS connections and a plaintext chain otherwise; both authorize every
// request (plaintext callers simply have no principal), through the same routes.
func (t *translator) inbound() {
	w := t.p.Workload.Spec
	name := InboundListenerName(w.InboundPort)
	t.source(name, t.p.Workload, t.p.Service.Doc, t.p.Mesh.Config)
	in := target{service: t.p.Service, port: t.p.Workload.ServedPort(), app: w.AppPort}
	route := t.inboundRoute(in)
	l := &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(w.Address, w.InboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
	}
	tlsChain := &listenerv3.FilterChain{
		Name:            "mtls",
		Filters:         []*listenerv3.Filter{t.inboundHCM(route, in, true)},
		TransportSocket: t.downstreamTLS(),
	}
	if t.p.Mesh.Config.Spec.MTLS.Mode == model.MTLSPermissive {
		l.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: t.any(&tlsinspectorv3.TlsInspector{})},
		}}
		tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
		l.FilterChains = []*listenerv3.FilterChain{tlsChain, {
			Name:             "plaintext",
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"},
			Filters:          []*listenerv3.Filter{t.inboundHCM(route, in, false)},
		}}
	} else {
		l.FilterChains = []*listenerv3.FilterChain{tlsChain}
	}
	t.res.Listeners = append(t.res.Listeners, l)
	t.appCluster(w.AppPort, t.p.Service, in.port)
}

// target is one service port a proxy serves: its destination service and port (what
// authorization and rate limits key on) and the application port behind it.
type target struct {
	service *model.ResolvedService
	port    uint32
	app     uint32
}

// serviceName names the proxy in traces: its service, or its service account for a workload
// that serves none.
func (t *translator) serviceName() string {
	if t.p.Service != nil {
		return t.p.Service.Ref.Name
	}
	return t.p.Workload.Spec.ServiceAccount
}

// inboundHCM is the HTTP connection manager of an inbound filter chain. Its filters, in order:
// CORS, local rate limit (before authorization), jwt_authn and the two RBAC filters (jwt.go,
// rbac.go), ext_authz, local rate limit on verified
// attributes, the global rate limits (fail closed, fail open), router. All but the router are in
// every inbound listener whatever the documents say: the routes (RDS) switch them on and
// configure them per route, and ext_authz's own settings come over ECDS, so a policy, rate limit,
// CORS or authorization setting changed later reaches the next request on connections already
// open, and the listener stays as it is. CORS and the rate limits are created only for the
// requests of routes that configure them (routeEnabled).
func (t *translator) inboundHCM(route string, in target, mtls bool) *listenerv3.Filter {
	t.inboundAuthz = true
	if !slices.Contains(t.inboundServices, in.service) {
		t.inboundServices = append(t.inboundServices, in.service)
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     "inbound",
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: rds(route),
		HttpFilters: []*hcmv3.HttpFilter{
			routeEnabled(t.httpFilter(filterCORS, &corsv3.Cors{})),
			routeEnabled(t.httpFilter(filterLocalRateLimit, localRateLimitFilter(rlStatPrefix))),
			jwtFilter(),
			t.httpFilter(filterRBACDeny, &rbacfilterv3.RBAC{RulesStatPrefix: model.RBACDenyPrefix}),
			t.httpFilter(filterRBACAllow, &rbacfilterv3.RBAC{RulesStatPrefix: model.RBACAllowPrefix}),
			extAuthzFilter(),
			routeEnabled(t.httpFilter(filterVerifiedRateLimit, localRateLimitFilter(rlVerifiedStatPrefix))),
			routeEnabled(t.httpFilter(filterGlobalClosed, t.globalRateLimitFilter(model.FailClosed))),
			routeEnabled(t.httpFilter(filterGlobalOpen, t.globalRateLimitFilter(model.FailOpen))),
			t.router(),
		},
		// Paths are normalised before authorization sees them, so "/a/../admin" cannot slip past
		// a policy on "/admin/*".
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		// The caller's address is the peer's: nothing in front of the inbound listener is trusted
		// to set X-Forwarded-For. The header goes on as the peer sent it (Envoy would append the
		// peer, or its own host address for a peer on loopback): rate limits keyed on the client
		// IP count a policy's trusted proxy hops from its right.
		UseRemoteAddress: wrapperspb.Bool(true),
		SkipXffAppend:    true,
		// "x_debug" is refused (400, or a reset stream on HTTP/2): servers that map headers to
		// variables (CGI, Nginx's $http_, many frameworks) read it as X-Debug, which a policy
		// on x-debug never sees.
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST,
		},
		Tracing:          t.tracing("inbound"),
		AccessLog:        []*accesslogv3.AccessLog{t.decisionLog(in)},
		LocalReplyConfig: t.jwtRefusal(),
	}
	if mtls {
		// The application learns the caller's SPIFFE ID from X-Forwarded-Client-Cert; whatever a
		// caller sent in that header is replaced.
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
	return t.hcmFilter(hcm)
}

// decisionLog sends the requests the route's RBAC filters decided (engine auto) to the
// authorization service's access log service, which writes their decision-log records
// (authz/server's accesslog.go): the entries of requests whose DENY filter ran with rules or whose
// token jwt_authn refused, tagged with the destination. Requests ext_authz decided are not sent: the service logged them.
func (t *translator) decisionLog(in target) *accesslogv3.AccessLog {
	als := &grpcalsv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName:             model.AccessLogName,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcService: &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AuthzCluster}},
			},
			CustomTags: []*tracingtypev3.CustomTag{
				literalTag(model.AccessLogTagService, in.service.Ref.Name),
				literalTag(model.AccessLogTagNamespace, in.service.Ref.Namespace),
				literalTag(model.AccessLogTagPort, strconv.FormatUint(uint64(in.port), 10)),
			},
		},
		// The request's trace: the decision's span joins it.
		AdditionalRequestHeadersToLog: []string{"traceparent"},
	}
	present := func(filter, key string) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_MetadataFilter{MetadataFilter: &accesslogv3.MetadataFilter{
			// Envoy's default is to log an entry that lacks the key, i.e. every request no
			// filter decided: measured, that was 3 of the 7 points of a core per 1,000 rps the
			// mesh's backend Envoy spent over a bare one (docs/benchmarks.md).
			MatchIfKeyNotFound: wrapperspb.Bool(false),
			Matcher: &matcherv3.MetadataMatcher{
				Filter: filter,
				Path:   []*matcherv3.MetadataMatcher_PathSegment{pathKey(key)},
				Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}},
			},
		}}}
	}
	// Decided in Envoy: by the RBAC filters, or by jwt_authn refusing a token before them. A
	// failure in jwt_authn's metadata alone is no refusal (a token one provider verified, or a
	// revoked one ext_authz decides, carries one); the expression is evaluated only for those.
	refused := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{
		Filters: []*accesslogv3.AccessLogFilter{present(model.JWTAuthnMetadata, model.JWTFailedKey), t.jwtRefused()},
	}}}
	decided := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
		Filters: []*accesslogv3.AccessLogFilter{present("envoy.filters.http.rbac", model.RBACDenyPrefix+"enforced_engine_result"), refused},
	}}}
	return &accesslogv3.AccessLog{
		Name:       "envoy.access_loggers.http_grpc",
		Filter:     decided,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: t.any(als)},
	}
}

// routeEnabled makes f a filter Envoy creates only for requests whose route (or virtual host)
// configures it (HttpFilter.disabled): CORS and the rate limits do nothing without their route's
// configuration, and each filter in the chain costs every request its creation and callbacks —
// together with the authorization filters, 3.8–7.4 points of a core per 1,000 rps
// (docs/benchmarks.md, "Inbound features"). The listener stays as it is: a route that gains a
// CORS policy or a rate limit gains the filter with the route's configuration (RDS). Not for
// the authorization filters: one a route forgot would fail open.
func routeEnabled(f *hcmv3.HttpFilter) *hcmv3.HttpFilter {
	f.Disabled = true
	return f
}

func (t *translator) hcmFilter(hcm *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: t.any(hcm)},
	}
}

func (t *translator) httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: t.any(cfg)}}
}

func (t *translator) router() *hcmv3.HttpFilter {
	return t.httpFilter(filterRouter, &routerv3.Router{})
}
