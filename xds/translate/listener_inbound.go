package translate

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// routeTimeout bounds a request to the local application.
const routeTimeout = 30 * time.Second

// Filter names, as Envoy knows them.
const (
	filterLocalRateLimit = "envoy.filters.http.local_ratelimit"
	filterExtAuthz       = "envoy.filters.http.ext_authz"
	filterRouter         = "envoy.filters.http.router"
)

// inbound builds the listener mesh traffic arrives on, and the cluster of the local app.
//
// STRICT: one filter chain, TLS with a client certificate required. PERMISSIVE: a TLS inspector
// picks the TLS chain for TLS connections and a plaintext chain otherwise; both authorize every
// request (plaintext callers simply have no principal).
func (t *translator) inbound() {
	w := t.p.Workload.Spec
	name := InboundListenerName(w.InboundPort)
	t.source(name, t.p.Workload, t.p.Service)
	in := target{service: t.p.Service, port: t.p.Workload.ServedPort(), app: w.AppPort, listener: name}
	l := &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(w.Address, w.InboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
	}
	tlsChain := &listenerv3.FilterChain{
		Name:            "mtls",
		Filters:         []*listenerv3.Filter{t.inboundHCM(in, true)},
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
			Filters:          []*listenerv3.Filter{t.inboundHCM(in, false)},
		}}
	} else {
		l.FilterChains = []*listenerv3.FilterChain{tlsChain}
	}
	t.res.Listeners = append(t.res.Listeners, l)
	t.appCluster(w.AppPort, t.p.Service, in.port)
}

// target is one service port a proxy serves: its destination service and port (what
// authorization and rate limits key on), the application port behind it, and the listener that
// carries it.
type target struct {
	service  *model.ServiceDoc
	port     uint32
	app      uint32
	listener string
}

// serviceName names the proxy in traces: its service, or its service account for a workload
// that serves none.
func (t *translator) serviceName() string {
	if t.p.Service != nil {
		return t.p.Service.Metadata.Name
	}
	return t.p.Workload.Spec.ServiceAccount
}

// inboundHCM is the HTTP connection manager of the inbound listener. Its filters, in order:
// local rate limit (when a RateLimitPolicy selects the service), ext_authz (unless the mesh's
// authorization mode is OFF), router.
func (t *translator) inboundHCM(in target, mtls bool) *listenerv3.Filter {
	var filters []*hcmv3.HttpFilter
	if limits := t.rateLimits(in); len(limits) > 0 {
		filters = append(filters, t.httpFilter(filterLocalRateLimit, t.localRateLimit(in, limits)))
	}
	var perFilter map[string]*anypb.Any
	if t.authzEnforced() {
		filters = append(filters, t.httpFilter(filterExtAuthz, t.extAuthz(in)))
		perFilter = map[string]*anypb.Any{filterExtAuthz: t.any(t.extAuthzPerRoute(in))}
	} else {
		// The listener's shape still depends on the Mesh document.
		t.source(in.listener, t.p.Mesh.Config)
	}
	filters = append(filters, t.router())

	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: in.listener,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "inbound",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AppClusterName(in.app)},
						Timeout:          durationpb.New(routeTimeout),
					}},
					Decorator: spanName("inbound", model.RefOf(in.service)),
				}},
				TypedPerFilterConfig: perFilter,
			}},
			ValidateClusters: wrapperspb.Bool(false),
		}},
		HttpFilters: filters,
		// Paths are normalised before authorization sees them, so "/a/../admin" cannot slip past
		// a policy on "/admin/*".
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		// The caller's address is the peer's: nothing in front of the inbound listener is trusted
		// to set X-Forwarded-For.
		UseRemoteAddress: wrapperspb.Bool(true),
		Tracing:          t.tracing("inbound"),
	}
	if mtls {
		// The application learns the caller's SPIFFE ID from X-Forwarded-Client-Cert; whatever a
		// caller sent in that header is replaced.
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
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
