package translate

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// ClusterDomain is the DNS suffix of Kubernetes service names that transparent proxies route by
// ("<service>.<namespace>.svc.cluster.local").
const ClusterDomain = "cluster.local"

// transparentInbound builds the listener iptables redirects inbound connections to
// (0.0.0.0:15006): one filter chain per served port, chosen by the connection's original
// destination port, each with the same mTLS, rate limits and authorization as a local proxy's
// inbound listener, forwarding to the application on 127.0.0.1:<targetPort>. A connection to a
// port the workload does not serve matches no chain and is closed.
func (t *translator) transparentInbound() {
	w := t.p.Workload.Spec
	name := InboundListenerName(w.InboundPort)
	permissive := t.p.Mesh.Config.Spec.MTLS.Mode == model.MTLSPermissive
	seen := map[uint32]bool{}
	var chains []*listenerv3.FilterChain
	for _, in := range t.in.Inbound {
		if seen[in.AppPort] {
			continue // one application port, one chain: the first service (by name) keeps it
		}
		seen[in.AppPort] = true
		tgt := target{service: in.Service, port: in.Port, app: in.AppPort}
		route := t.inboundRoute(tgt)
		chainName := route // "inbound|<appPort>|<service>.<namespace>"
		tls := &listenerv3.FilterChain{
			Name:             chainName,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(in.AppPort)},
			Filters:          []*listenerv3.Filter{t.inboundHCM(route, tgt, true)},
			TransportSocket:  t.downstreamTLS(),
		}
		chains = append(chains, tls)
		if permissive {
			tls.FilterChainMatch.TransportProtocol = "tls"
			chains = append(chains, &listenerv3.FilterChain{
				Name:             chainName + "|plaintext",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(in.AppPort), TransportProtocol: "raw_buffer"},
				Filters:          []*listenerv3.Filter{t.inboundHCM(route, tgt, false)},
			})
		}
		t.appCluster(in.AppPort, in.Service, in.Port)
		t.source(name, in.Service.Doc)
	}
	if len(chains) == 0 {
		return // serves nothing: redirected inbound connections are refused
	}
	filters := []*listenerv3.ListenerFilter{t.originalDst()}
	if permissive {
		filters = append(filters, &listenerv3.ListenerFilter{
			Name:       "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: t.any(&tlsinspectorv3.TlsInspector{})},
		})
	}
	t.res.Listeners = append(t.res.Listeners, &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(anyAddress(w.Address), w.InboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters:  filters,
		FilterChains:     chains,
	})
	t.source(name, t.p.Workload, t.p.Mesh.Config)
}

// transparentOutbound builds the listener iptables redirects outbound connections to
// (0.0.0.0:15001). Envoy picks a filter chain by the connection's original destination:
//   - a mesh service's virtual IP and port: straight to that service's cluster;
//   - another IP on a port some mesh service serves: HTTP, routed by Host header
//     ("<svc>", "<svc>.<ns>", "<svc>.<ns>.svc[.cluster.local]", with or without the port);
//     unknown hosts continue to their original destination;
//   - anything else: passed through untouched to its original destination.
//
// Every mesh service port gets a cluster with mTLS, the service's SPIFFE IDs required, like a
// local proxy's upstreams.
func (t *translator) transparentOutbound() {
	w := t.p.Workload.Spec
	name := TransparentOutboundListenerName(w.OutboundPort)
	ns := model.RefOf(t.p.Workload).Namespace
	byPort := map[uint32][]*routev3.VirtualHost{}
	var chains []*listenerv3.FilterChain
	for _, svc := range t.p.Mesh.Services {
		ref := svc.Ref
		for _, port := range svc.Doc.Spec.Ports {
			cluster := t.outboundCluster(svc, port.Port)
			t.outboundEndpoints(cluster, ref, port.Port)
			byPort[port.Port] = append(byPort[port.Port], &routev3.VirtualHost{
				Name:    cluster,
				Domains: hostNames(ref, port.Port, ns, svc.Doc.Spec.Addresses),
				Routes:  []*routev3.Route{t.clusterRoute(cluster, ref)},
			})
			if ranges := cidrs(svc.Doc.Spec.Addresses); len(ranges) > 0 {
				chains = append(chains, &listenerv3.FilterChain{
					Name:             cluster,
					FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port.Port), PrefixRanges: ranges},
					Filters:          []*listenerv3.Filter{t.outboundHCM(cluster, ref, []*routev3.VirtualHost{t.outboundVirtualHost(cluster, ref)})},
				})
				t.source(cluster, svc.Doc)
			}
			t.source(name, svc.Doc)
			t.source(hostRouteName(port.Port), svc.Doc)
		}
	}
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	for _, p := range ports {
		vhosts := append(byPort[p], &routev3.VirtualHost{
			Name:    "passthrough",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: PassthroughCluster},
					Timeout:          durationpb.New(routeTimeout),
				}},
			}},
		})
		route := hostRouteName(p)
		chains = append(chains, &listenerv3.FilterChain{
			Name:             route + "|hosts",
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p)},
			Filters:          []*listenerv3.Filter{t.outboundHCM(route, model.Ref{}, vhosts)},
		})
	}
	slices.SortStableFunc(chains, func(a, b *listenerv3.FilterChain) int { return cmp.Compare(a.GetName(), b.GetName()) })
	t.res.Clusters = append(t.res.Clusters, &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(connectTimeout),
	})
	t.res.Listeners = append(t.res.Listeners, &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(anyAddress(w.Address), w.OutboundPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  []*listenerv3.ListenerFilter{t.originalDst()},
		FilterChains:     chains,
		DefaultFilterChain: &listenerv3.FilterChain{
			Name: "passthrough",
			Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: t.any(&tcpproxyv3.TcpProxy{
					StatPrefix:       "passthrough",
					ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: PassthroughCluster},
				})},
			}},
		},
	})
	t.source(name, t.p.Workload, t.p.Mesh.Config)
}

// hostRouteName is the route configuration of the outbound chain routed by Host on one port.
func hostRouteName(port uint32) string { return "outbound|" + strconv.Itoa(int(port)) }

func (t *translator) originalDst() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.original_dst",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: t.any(&origdstv3.OriginalDst{})},
	}
}

func (t *translator) clusterRoute(cluster string, ref model.Ref) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(routeTimeout),
			RetryPolicy:      t.safeRetries(),
		}},
		Decorator: spanName("outbound", ref),
	}
}

// outboundHCM is the connection manager of an outbound listener or chain, with its route
// configuration (route, by RDS): safe retries only, tracing, and any client-cert header the
// application sends dropped, so it cannot impersonate another workload to the upstream's
// application. ref names the one upstream it reaches, or none for a chain routed by Host.
func (t *translator) outboundHCM(route string, ref model.Ref, vhosts []*routev3.VirtualHost) *listenerv3.Filter {
	prefix := "outbound"
	if ref.Name != "" {
		prefix = "outbound_" + ref.Name + "_" + ref.Namespace
	}
	t.routeConfig(route, vhosts)
	return t.hcmFilter(&hcmv3.HttpConnectionManager{
		StatPrefix:               prefix,
		CodecType:                hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier:           rds(route),
		HttpFilters:              []*hcmv3.HttpFilter{t.router()},
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE,
		Tracing:                  t.tracing("outbound"),
	})
}

// hostNames are the Host header values that name a service port from a workload in namespace
// from: the short name only within the same namespace, as Kubernetes DNS resolves it.
func hostNames(ref model.Ref, port uint32, from string, addrs []string) []string {
	names := []string{ref.Name + "." + ref.Namespace, ref.Name + "." + ref.Namespace + ".svc", ref.Name + "." + ref.Namespace + ".svc." + ClusterDomain}
	if ref.Namespace == from {
		names = append([]string{ref.Name}, names...)
	}
	p := ":" + strconv.Itoa(int(port))
	out := make([]string, 0, 2*(len(names)+len(addrs)))
	for _, n := range names {
		out = append(out, n, n+p)
	}
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil {
			host := ip.String()
			if ip.Is6() {
				host = "[" + host + "]"
			}
			out = append(out, host, netip.AddrPortFrom(ip, uint16(port)).String())
		}
	}
	return out
}

func cidrs(addrs []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		out = append(out, &corev3.CidrRange{AddressPrefix: ip.String(), PrefixLen: wrapperspb.UInt32(uint32(ip.BitLen()))})
	}
	return out
}

// anyAddress is the wildcard of the workload address's family: redirected connections arrive
// on whatever local address iptables chose.
func anyAddress(addr string) string {
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() && !ip.Is4In6() {
		return "::"
	}
	return "0.0.0.0"
}
