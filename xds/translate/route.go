package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// adsSource is where listeners fetch their routes (RDS) and filter configurations (ECDS): the
// ADS stream. No initial fetch timeout: a listener stays warming until it has them, rather than
// going live without routes or without its authorization filter. The snapshot is checked to hold
// every name a listener refers to, so they come with it.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		InitialFetchTimeout:   durationpb.New(0),
	}
}

// rds makes a connection manager take its routes from the route configuration named name.
func rds(name string) *hcmv3.HttpConnectionManager_Rds {
	return &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: name}}
}

// routeConfig adds a route configuration.
func (t *translator) routeConfig(name string, vhosts []*routev3.VirtualHost) {
	t.res.Routes = append(t.res.Routes, &routev3.RouteConfiguration{
		Name:             name,
		VirtualHosts:     vhosts,
		ValidateClusters: wrapperspb.Bool(false),
	})
}

// inboundRoute builds the route configuration of one service port a proxy serves, and returns
// its name: every request to the local application, with the per-route settings of the filters
// every inbound listener has — ext_authz naming the destination and the verified attributes the
// rate limits key on (or disabled, when the mesh's authorization mode is OFF), the service's rate
// limits when a RateLimitPolicy selects it, and its CORS policy.
func (t *translator) inboundRoute(in target) string {
	name := InboundRouteName(in.app, in.service.Ref)
	perFilter := map[string]*anypb.Any{}
	keys := t.rateLimitRoute(in.service, perFilter)
	perFilter[filterExtAuthz] = t.any(t.extAuthzPerRoute(in, keys))
	for _, pol := range in.service.RateLimitPolicies {
		t.source(name, pol)
	}
	if cors := corsPolicy(in.service); cors != nil {
		perFilter[filterCORS] = t.any(cors)
	}
	route := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AppClusterName(in.app)},
			Timeout:          durationpb.New(routeTimeout),
		}},
		Decorator:            spanName("inbound", in.service.Ref),
		TypedPerFilterConfig: perFilter,
	}
	routes := append(t.nativeRoutes(name, in, keys, route), route)
	t.routeConfig(name, []*routev3.VirtualHost{{Name: "inbound", Domains: []string{"*"}, Routes: routes}})
	t.source(name, in.service.Doc, t.p.Mesh.Config)
	if t.p.Mesh.Config.Spec.Authz.Mode != model.AuthzOff {
		// Not in the route's bytes: the route names the destination, and the authorization
		// service applies these to its requests. Recorded so that a policy's status counts the
		// proxies it protects.
		for _, pol := range in.service.AuthorizationPolicies {
			t.source(name, pol)
		}
		for _, p := range in.service.JWTProviders {
			t.source(name, p)
		}
		for _, p := range in.service.APIKeyProviders {
			t.source(name, p)
		}
	}
	return name
}

// outboundVirtualHost sends every request of an outbound listener or chain to one upstream.
func (t *translator) outboundVirtualHost(cluster string, ref model.Ref) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    ref.Name + "." + ref.Namespace,
		Domains: []string{"*"},
		Routes:  []*routev3.Route{t.clusterRoute(cluster, ref)},
	}
}
