package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portcullis/portcullis/xds/bootstrap"
)

// webMeta registers a replica of the web workload, named name, through node metadata.
func webMeta(t *testing.T, name string, pad int) *structpb.Struct {
	t.Helper()
	meta, err := structpb.NewStruct(map[string]any{bootstrap.MetadataWorkloadKey: map[string]any{
		"metadata": map[string]any{"name": name, "namespace": "shop", "labels": map[string]any{"pad": strings.Repeat("x", pad)}},
		"spec":     map[string]any{"service": "web", "address": "127.0.0.8", "inboundPort": 15003, "appPort": 8080},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return meta
}

// Each limit ends the stream that would pass it, with a status that names it; a proxy within
// them is served.
func TestLimits(t *testing.T) {
	f := newFixture(t, meshDocs, func(c *PlaneConfig) {
		c.Limits = Limits{NodeBytes: 2048, ResourceNames: 4, StreamsPerNode: 2, NodesPerIdentity: 3}
	})
	const web = "spiffe://example.org/ns/shop/sa/web"

	t.Run("a node too large to keep", func(t *testing.T) {
		c := f.ads(t, web, "web-big.shop", webMeta(t, "web-big", 4096))
		c.send(resource.ClusterType, "", "", nil)
		wantEnd(t, c, codes.InvalidArgument, "more than the 2048 allowed")
	})
	t.Run("a type the server does not serve", func(t *testing.T) {
		c := f.ads(t, web, "web-1.shop", nil)
		c.send(resource.ClusterType, "", "", nil)
		c.mustRecv()
		c.send("type.googleapis.com/made.up.Type", "", "", nil)
		wantEnd(t, c, codes.InvalidArgument, "is not served")
	})
	t.Run("too many names in a state-of-the-world request", func(t *testing.T) {
		c := f.ads(t, web, "web-1.shop", nil)
		c.sendFor(resource.EndpointType, []string{"a", "b", "c", "d", "e"}, "", "", nil)
		wantEnd(t, c, codes.ResourceExhausted, "5 type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment names in one request")
	})
	t.Run("delta subscriptions add up", func(t *testing.T) {
		d := f.delta(t, f.ca.Issue(t, web, time.Hour), "web-1.shop")
		d.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"a", "b", "c"}})
		d.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"d"}, ResourceNamesUnsubscribe: []string{"a"}})
		d.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"a", "b", "e"}})
		if err := d.end(t); !strings.Contains(err.Error(), "more than the 4 ") {
			t.Fatalf("stream ended with %v", err)
		}
	})
	t.Run("streams per node", func(t *testing.T) {
		var open []*adsClient
		for range 2 {
			c := f.ads(t, web, "web-1.shop", nil)
			c.send(resource.ClusterType, "", "", nil)
			c.mustRecv()
			open = append(open, c)
		}
		c := f.ads(t, web, "web-1.shop", nil)
		c.send(resource.ClusterType, "", "", nil)
		wantEnd(t, c, codes.ResourceExhausted, "node web-1.shop has 2 streams open")
		for _, o := range open {
			_ = o.stream.CloseSend()
		}
	})
	t.Run("nodes per identity", func(t *testing.T) {
		waitFor(t, func() bool { regs, _ := f.registry.Current(); return len(regs) == 0 }, "earlier nodes to expire")
		for i := range 3 {
			name := fmt.Sprintf("web-r%d", i)
			c := f.ads(t, web, name+".shop", webMeta(t, name, 0))
			c.send(resource.ClusterType, "", "", nil)
			c.mustRecv()
		}
		c := f.ads(t, web, "web-r3.shop", webMeta(t, "web-r3", 0))
		c.send(resource.ClusterType, "", "", nil)
		wantEnd(t, c, codes.ResourceExhausted, web+" has 3 nodes registered")
		// Another identity is not held back by this one.
		cart := f.ads(t, "spiffe://example.org/ns/shop/sa/cart", "cart-1.shop", cartMeta(t))
		cart.send(resource.ClusterType, "", "", nil)
		cart.mustRecv()
	})
	t.Run("a request larger than MaxRequestBytes", func(t *testing.T) {
		c := f.ads(t, web, "web-1.shop", nil)
		c.sendFor(resource.EndpointType, []string{strings.Repeat("n", MaxRequestBytes)}, "", "", nil)
		wantEnd(t, c, codes.ResourceExhausted, "larger than max")
	})
}

// What a node makes the server keep goes when the node does: nodes registered and gone leave no
// registration, ledger entry or watch record behind. go-control-plane keeps a record for every
// node id a watch was ever opened for, until it is cleared; a stream that named a new node id in
// each request left one per id, never cleared (80 MB to 464 MB of RSS from one workload).
func TestNodeStateIsFreedWhenNodesGo(t *testing.T) {
	f := newFixture(t, meshDocs)
	const n = 20
	for i := range n {
		name := fmt.Sprintf("web-c%d", i)
		c := f.ads(t, "spiffe://example.org/ns/shop/sa/web", name+".shop", webMeta(t, name, 0))
		c.send(resource.ClusterType, "", "", nil)
		r := c.mustRecv()
		c.send(resource.ClusterType, r.GetVersionInfo(), r.GetNonce(), nil)
		// Then a request naming a node id nobody registered.
		c.node = &corev3.Node{Id: fmt.Sprintf("ghost-%d.shop", i)}
		c.send(resource.ListenerType, "", "", nil)
		_ = c.stream.CloseSend()
	}
	cache := f.plane.ADS.opts.Cache
	waitFor(t, func() bool { return len(cache.GetStatusKeys()) >= 1 }, "the nodes' watches")
	waitFor(t, func() bool {
		regs, _ := f.registry.Current()
		return len(regs) == 0 && len(f.ledger.Status()) == 0 && len(cache.GetStatusKeys()) == 0
	}, "every trace of the gone nodes to be dropped")
	f.plane.ADS.mu.Lock()
	streams := len(f.plane.ADS.streams)
	f.plane.ADS.mu.Unlock()
	if streams != 0 {
		t.Errorf("%d streams still held", streams)
	}
}
