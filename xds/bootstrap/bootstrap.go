package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	downstreamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/translate"
)

// DefaultControlPlaneAddr is where the control plane serves ADS and the certificate service, and
// where agents dial, unless told otherwise.
const DefaultControlPlaneAddr = "127.0.0.1:15010"

// MetadataWorkloadKey is the node metadata key under which an agent registers its workload
// (service, ports, upstreams) when no Workload document describes it.
const MetadataWorkloadKey = "portcullis.workload"

// Options describe one proxy's bootstrap.
type Options struct {
	// NodeID is "<workload>.<namespace>"; Cluster the service name.
	NodeID  string
	Cluster string
	// Identity is the workload's SPIFFE ID; it names the SDS certificate the proxy presents.
	Identity spiffeid.ID
	// ControlPlaneAddress is host:port of ADS; ControlPlaneID the SPIFFE ID it must present.
	ControlPlaneAddress string
	ControlPlaneID      spiffeid.ID
	// SDSSocket is the agent's SDS unix socket.
	SDSSocket string
	// AdminAddress is host:port of Envoy's admin interface; port 0 lets the OS choose.
	AdminAddress string
	// Delta selects incremental xDS (DELTA_GRPC) instead of state of the world.
	Delta bool
	// Workload, when set, is registered through node metadata, for proxies that no Workload
	// document describes.
	Workload *model.WorkloadDoc
}

// Build returns the bootstrap for opts.
func Build(o Options) (*bootstrapv3.Bootstrap, error) {
	if o.NodeID == "" || o.Identity.IsZero() || o.ControlPlaneID.IsZero() || o.SDSSocket == "" {
		return nil, errors.New("bootstrap: node id, identity, control plane ID and SDS socket are required")
	}
	adminHost, adminPort, err := splitHostPort(o.AdminAddress)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: admin address: %w", err)
	}
	xds, err := xdsCluster(o)
	if err != nil {
		return nil, err
	}
	sds, err := sdsCluster(o.SDSSocket)
	if err != nil {
		return nil, err
	}
	node := &corev3.Node{Id: o.NodeID, Cluster: o.Cluster}
	if o.Workload != nil {
		w, err := workloadStruct(o.Workload)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: workload metadata: %w", err)
		}
		node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{MetadataWorkloadKey: structpb.NewStructValue(w)}}
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		// Wait for the control plane however long it takes: a proxy without its configuration
		// must not report ready (PITFALLS: initial_fetch_timeout).
		InitialFetchTimeout: durationpb.New(0),
	}
	b := &bootstrapv3.Bootstrap{
		Node: node,
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: adminHost, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: adminPort},
		}}}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   apiType,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: translate.XDSCluster},
				}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{sds, xds}},
	}
	if b.OverloadManager, err = overload(); err != nil {
		return nil, err
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}

// maxDownstreamConnections caps the connections one proxy accepts, so a flood exhausts a
// budget instead of the host's file descriptors and memory.
const maxDownstreamConnections = 50000

func overload() (*overloadv3.OverloadManager, error) {
	cfg, err := translate.Any(&downstreamv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: maxDownstreamConnections})
	if err != nil {
		return nil, err
	}
	return &overloadv3.OverloadManager{ResourceMonitors: []*overloadv3.ResourceMonitor{{
		Name:       "envoy.resource_monitors.global_downstream_max_connections",
		ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: cfg},
	}}}, nil
}

func workloadStruct(w *model.WorkloadDoc) (*structpb.Struct, error) {
	raw, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return structpb.NewStruct(m)
}

// JSON renders the bootstrap in the JSON form Envoy reads with -c.
func JSON(b *bootstrapv3.Bootstrap) ([]byte, error) {
	out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return out, nil
}

func sdsCluster(socket string) (*clusterv3.Cluster, error) {
	h2, err := translate.HTTP2Options(false)
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                 translate.SDSCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: translate.SDSCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: socket}}},
				}},
			}}}},
		},
		TypedExtensionProtocolOptions: h2,
	}, nil
}

func xdsCluster(o Options) (*clusterv3.Cluster, error) {
	host, port, err := splitHostPort(o.ControlPlaneAddress)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: control plane address: %w", err)
	}
	kind := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		kind = clusterv3.Cluster_STATIC
	}
	tlsCtx, err := translate.Any(&tlsv3.UpstreamTlsContext{
		CommonTlsContext: translate.CommonTLS(o.Identity, []spiffeid.ID{o.ControlPlaneID}, []string{"h2"}),
	})
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	h2, err := translate.HTTP2Options(true)
	if err != nil {
		return nil, err
	}
	return &clusterv3.Cluster{
		Name:                          translate.XDSCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: kind},
		ConnectTimeout:                durationpb.New(2 * time.Second),
		LoadAssignment:                translate.StaticAssignment(translate.XDSCluster, host, port),
		TransportSocket:               &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}},
		TypedExtensionProtocolOptions: h2,
	}, nil
}

func splitHostPort(s string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port of %q: %w", s, err)
	}
	return host, uint32(port), nil
}
