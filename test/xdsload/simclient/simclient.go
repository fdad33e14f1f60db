// Package simclient is the simulated proxy of the xDS load tools: one state-of-the-world ADS
// stream that behaves like Envoy (clusters first, then the endpoints of its EDS clusters, then
// listeners, ACKing every response) and reports each ACK, so a tool can time how long a change
// takes to reach many proxies without running as many Envoys.
package simclient

import (
	"context"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
	var edsNames []string
	listenersAsked := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("client %s: %w", node.GetId(), err)
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			names, err := EDSClusters(resp)
			if err != nil {
				return fmt.Errorf("client %s: %w", node.GetId(), err)
			}
			if err := send(ack); err != nil {
				return err
			}
			if edsNames == nil {
				edsNames = names
				if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names}); err != nil {
					return err
				}
			}
			if !listenersAsked {
				listenersAsked = true
				if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType}); err != nil {
					return err
				}
			}
		case resource.EndpointType:
			ack.ResourceNames = edsNames
			if err := send(ack); err != nil {
				return err
			}
		default:
			if err := send(ack); err != nil {
				return err
			}
		}
		if acked != nil {
			acked(resp)
		}
	}
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
