package translate

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portcullis/portcullis/xds/model"
)

// Timeouts and limits of generated clusters, documented in docs/xds.md.
const (
	connectTimeout          = 2 * time.Second
	outlierConsecutiveLocal = 5
	outlierInterval         = 10 * time.Second
	outlierBaseEjection     = 30 * time.Second
	outlierMaxEjectPct      = 50
	// Retries may add at most this share of the active requests (at least retryMinConcurrency
	// at once): Envoy's default of 3 retries at once turned an instance's death under 300 rps
	// into refused retries.
	retryBudgetPercent  = 25
	retryMinConcurrency = 10
	keepaliveInterval   = 30 * time.Second
	keepaliveTimeout    = 10 * time.Second
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// appCluster reaches the workload's own application on 127.0.0.1.
func (t *translator) appCluster(port uint32, svc *model.ResolvedService, svcPort uint32) {
	name := AppClusterName(port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment:       StaticAssignment(name, "127.0.0.1", port),
	}
	if svc.HTTP2(svcPort) {
		c.TypedExtensionProtocolOptions = t.http2Options(false)
	}
	t.res.Clusters = append(t.res.Clusters, c)
	t.source(name, t.p.Workload, svc.Doc)
}

// outboundCluster reaches one port of an upstream service over mesh mTLS: EDS endpoints (the
// upstream's connected proxies), its SPIFFE IDs required, HTTP/2 or HTTP/1.1 by ALPN, a retry
// budget for the route's safe retries, and outlier detection on connection-level failures only.
//
// An instance is ejected for failing to connect, resetting or timing out — what a dead or
// wedged instance does — and never for the 5xx it answers: a mesh instance answers 503 when the
// authorization service is down (fail closed), and ejecting healthy instances for that (the fault
// suite saw it) leaves the caller with fewer instances for 30 s after authorization is back, or
// none when the only one left is the one that then dies.
func (t *translator) outboundCluster(svc *model.ResolvedService, port uint32) string {
	ref := svc.Ref
	name := OutboundClusterName(ref, port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
		ConnectTimeout: durationpb.New(connectTimeout),
		OutlierDetection: &clusterv3.OutlierDetection{
			SplitExternalLocalOriginErrors:         true,
			ConsecutiveLocalOriginFailure:          wrapperspb.UInt32(outlierConsecutiveLocal),
			EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100),
			EnforcingConsecutive_5Xx:               wrapperspb.UInt32(0),
			EnforcingConsecutiveGatewayFailure:     wrapperspb.UInt32(0),
			EnforcingSuccessRate:                   wrapperspb.UInt32(0),
			Interval:                               durationpb.New(outlierInterval),
			BaseEjectionTime:                       durationpb.New(outlierBaseEjection),
			MaxEjectionPercent:                     wrapperspb.UInt32(outlierMaxEjectPct),
		},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent:       &typev3.Percent{Value: retryBudgetPercent},
				MinRetryConcurrency: wrapperspb.UInt32(retryMinConcurrency),
			},
		}}},
		TransportSocket: t.upstreamTLS(svc.IDs, ref.Name+"."+ref.Namespace, []string{"h2", "http/1.1"}),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: t.any(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			}},
		})},
	}
	t.res.Clusters = append(t.res.Clusters, c)
	t.source(name, svc.Doc)
	return name
}

// authzCluster reaches the control plane's ext_authz service: HTTP/2 with keepalive, mTLS
// requiring the control plane's SPIFFE ID. A proxy with no inbound listener has no ext_authz
// filter and needs none; with authorization OFF the filter is there but no route calls it.
func (t *translator) authzCluster() {
	if !t.inboundAuthz {
		return
	}
	c := t.addressCluster(AuthzCluster, t.opts.AuthzAddress)
	if c == nil {
		return
	}
	c.TransportSocket = t.upstreamTLS([]spiffeid.ID{t.opts.AuthzID}, "", []string{"h2"})
	c.TypedExtensionProtocolOptions = t.http2Options(true)
	t.res.Clusters = append(t.res.Clusters, c)
}

// tracingCluster reaches the OTLP gRPC collector when tracing is on.
func (t *translator) tracingCluster() {
	tr := t.p.Mesh.Config.Spec.Tracing
	if !tr.Enabled {
		return
	}
	c := t.addressCluster(TracingCluster, tr.Collector)
	if c == nil {
		return
	}
	c.TypedExtensionProtocolOptions = t.http2Options(true)
	t.res.Clusters = append(t.res.Clusters, c)
	t.source(TracingCluster, t.p.Mesh.Config)
}

// addressCluster is a cluster of one host:port: STATIC for an IP, STRICT_DNS for a name.
func (t *translator) addressCluster(name, hostPort string) *clusterv3.Cluster {
	host, portStr, err := net.SplitHostPort(hostPort)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || host == "" {
		t.fail("cluster %s: invalid address %q", name, hostPort)
		return nil
	}
	kind := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		kind = clusterv3.Cluster_STATIC
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: kind},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment:       StaticAssignment(name, host, uint32(port)),
	}
}

// http2Options makes a cluster speak HTTP/2, with connection keepalive for long-lived gRPC.
func (t *translator) http2Options(keepalive bool) map[string]*anypb.Any {
	opts, err := HTTP2Options(keepalive)
	if err != nil {
		t.fail("%w", err)
	}
	return opts
}

// HTTP2Options are the typed_extension_protocol_options of a cluster that speaks HTTP/2, with
// connection keepalive for long-lived gRPC streams when asked.
func HTTP2Options(keepalive bool) (map[string]*anypb.Any, error) {
	h2 := &corev3.Http2ProtocolOptions{}
	if keepalive {
		h2.ConnectionKeepalive = &corev3.KeepaliveSettings{
			Interval: durationpb.New(keepaliveInterval),
			Timeout:  durationpb.New(keepaliveTimeout),
		}
	}
	opts, err := Any(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
		}},
	})
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{httpProtocolOptionsKey: opts}, nil
}

// StaticAssignment is the load assignment of a cluster with one fixed host.
func StaticAssignment(cluster, host string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(host, port)}}},
	}
}

func lbEndpoint(host string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: socketAddress(host, port),
	}}}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
