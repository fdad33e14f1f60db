// Package simclient is the simulated proxy of the xDS load tools: one state-of-the-world ADS
// stream that behaves like Envoy (clusters first, then the endpoints of its EDS clusters, then
// listeners, then the routes and filter configurations its listeners name, ACKing every
// response) and reports each ACK, so a tool can time how long a change takes to reach many
// proxies without running as many Envoys.
package simclient

import (
	"context"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

// Run opens an ADS stream on conn for node and ACKs every response until ctx ends, calling
// acked (when set) after each ACK is sent. A stream ended by ctx is not an error.
func Run(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, acked func(*discoveryv3.DiscoveryResponse)) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("client %s: %w", node.GetId(), err)
	}
	send := func(req *discoveryv3.DiscoveryRequest) error {
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("client %s: %w", node.GetId(), err)
		}
		return nil
	}
	// The node goes on the first request only, as Envoy does with set_node_on_first_message_only.
	if err := send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		return err
	}
	// The names this client subscribes to, by type, as Envoy asks for them: EDS from its
	// clusters, RDS and ECDS from its listeners.
	names := map[string][]string{}
	subscribe := func(typeURL string, want []string) error {
		if _, asked := names[typeURL]; asked && slices.Equal(names[typeURL], want) {
			return nil
		}
		names[typeURL] = want
		return send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: want})
	}
	listenersAsked := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("client %s: %w", node.GetId(), err)
		}
		url := resp.GetTypeUrl()
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: url, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names[url]}
		if err := send(ack); err != nil {
			return err
		}
		switch url {
		case resource.ClusterType:
			eds, err := EDSClusters(resp)
			if err != nil {
				return fmt.Errorf("client %s: %w", node.GetId(), err)
			}
			if _, asked := names[resource.EndpointType]; !asked {
				if err := subscribe(resource.EndpointType, eds); err != nil {
					return err
				}
			}
			if !listenersAsked {
				listenersAsked = true
				if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType}); err != nil {
					return err
				}
			}
		case resource.ListenerType:
			routes, filters, err := Discovered(resp)
			if err != nil {
				return fmt.Errorf("client %s: %w", node.GetId(), err)
			}
			if err := subscribe(resource.RouteType, routes); err != nil {
				return err
			}
			if err := subscribe(resource.ExtensionConfigType, filters); err != nil {
				return err
			}
		}
		if acked != nil {
			acked(resp)
		}
	}
}

// Discovered returns the route configurations (RDS) and HTTP filter configurations (ECDS) the
// listeners of an LDS response name, sorted.
func Discovered(resp *discoveryv3.DiscoveryResponse) (routes, filters []string, err error) {
	seen := map[string]bool{}
	for _, a := range resp.GetResources() {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			return nil, nil, err
		}
		for _, chain := range append(l.GetFilterChains(), l.GetDefaultFilterChain()) {
			for _, f := range chain.GetFilters() {
				hcm := resource.GetHTTPConnectionManager(f)
				if name := hcm.GetRds().GetRouteConfigName(); name != "" && !seen["r"+name] {
					seen["r"+name] = true
					routes = append(routes, name)
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetConfigDiscovery() != nil && !seen["f"+hf.GetName()] {
						seen["f"+hf.GetName()] = true
						filters = append(filters, hf.GetName())
					}
				}
			}
		}
	}
	slices.Sort(routes)
	slices.Sort(filters)
	return routes, filters, nil
}

// EDSClusters returns the names of the EDS clusters in a CDS response.
func EDSClusters(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	names := []string{}
	for _, a := range resp.GetResources() {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			return nil, err
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			names = append(names, c.GetName())
		}
	}
	return names, nil
}
