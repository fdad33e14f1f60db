package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// outbound builds the local listener (127.0.0.1:<localPort>) through which the application
// calls one upstream, the upstream's cluster and its endpoints. Retries are off: a retry policy
// is the application's decision, not the mesh's.
func (t *translator) outbound(i int) {
	u := t.p.Workload.Spec.Upstreams[i]
	svc, port, err := t.p.Mesh.ResolveUpstream(model.RefOf(t.p.Workload).Namespace, u)
	if err != nil {
		t.fail("spec.upstreams[%d]: %w", i, err)
		return
	}
	ref := model.RefOf(svc)
	cluster := t.outboundCluster(svc, port.Port)
	t.outboundEndpoints(cluster, ref, port.Port)
	name := OutboundListenerName(u.LocalPort, ref)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_" + ref.Name + "_" + ref.Namespace,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    ref.Name + "." + ref.Namespace,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
						Timeout:          durationpb.New(routeTimeout),
					}},
					Decorator: spanName("outbound", ref),
				}},
			}},
			ValidateClusters: wrapperspb.Bool(false),
		}},
		HttpFilters: []*hcmv3.HttpFilter{t.router()},
		// The application is the only client of this listener; drop any client-cert header it
		// sends so it cannot impersonate another workload to the upstream's application.
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE,
		Tracing:                  t.tracing("outbound"),
	}
	t.res.Listeners = append(t.res.Listeners, &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress("127.0.0.1", u.LocalPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: t.any(hcm)},
			}},
		}},
	})
	t.source(name, t.p.Workload, svc)
}
