package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// A delta (incremental) client is sent only the resources that changed.
func TestDeltaClientSeesOnlyChangedResources(t *testing.T) {
	f := newFixture(t, meshDocs)
	svid := f.ca.Issue(t, "spiffe://example.org/ns/shop/sa/web", time.Hour)
	conn := f.dial(t, f.ca.ClientTLS(svid, controlPlaneID))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resps := make(chan *discoveryv3.DeltaDiscoveryResponse, 16)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(resps)
				return
			}
			resps <- r
		}
	}()
	node := &corev3.Node{Id: "web-1.shop"}
	send := func(typeURL, nonce string) {
		t.Helper()
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResponseNonce: nonce}); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		select {
		case r, ok := <-resps:
			if !ok {
				t.Fatal("stream closed")
			}
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no delta response")
		}
		return nil
	}
	resourceNames := func(r *discoveryv3.DeltaDiscoveryResponse) []string {
		var out []string
		for _, res := range r.GetResources() {
			out = append(out, res.GetName())
		}
		slices.Sort(out)
		return out
	}

	send(resource.ClusterType, "")
	cds := recv()
	if got := resourceNames(cds); len(got) != 3 {
		t.Fatalf("initial clusters %v", got)
	}
	send(resource.ClusterType, cds.GetNonce())
	send(resource.EndpointType, "")
	eds := recv()
	send(resource.EndpointType, eds.GetNonce())

	// Turning tracing on adds one cluster; the three unchanged ones are not resent.
	f.mesh.Publish(buildMesh(t, strings.Replace(meshDocs, "spec: {trustDomain: example.org}",
		"spec: {trustDomain: example.org, tracing: {enabled: true, collector: \"127.0.0.1:4317\"}}", 1)))
	cds = recv()
	if got := resourceNames(cds); !slices.Equal(got, []string{"portcullis-otel"}) || len(cds.GetRemovedResources()) != 0 {
		t.Fatalf("delta after enabling tracing: resources %v removed %v; want only portcullis-otel", got, cds.GetRemovedResources())
	}
	send(resource.ClusterType, cds.GetNonce())
	waitFor(t, func() bool {
		st := f.ledger.Status()
		return len(st) == 1 && st[0].Delta && st[0].Types[resource.ClusterType].Acked == cds.GetSystemVersionInfo()
	}, "the delta ACK in the ledger")

	// Nothing else arrives: endpoints did not change.
	select {
	case r := <-resps:
		t.Fatalf("unexpected delta for %s: %v", r.GetTypeUrl(), resourceNames(r))
	case <-time.After(200 * time.Millisecond):
	}
}

// SotW and delta streams are numbered apart by go-control-plane, so the first of each is
// stream 1 in both: a proxy on one must never be mistaken for a proxy on the other.
func TestSotWAndDeltaStreamsWithTheSameID(t *testing.T) {
	f := newFixture(t, meshDocs+`---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: web-2, namespace: shop}
spec: {service: web, inboundPort: 15002, appPort: 8080}
`)
	sotw := f.ads(t, "spiffe://example.org/ns/shop/sa/web", "web-1.shop", nil)
	sotw.send(resource.ClusterType, "", "", nil)
	r := sotw.mustRecv()

	svid := f.ca.Issue(t, "spiffe://example.org/ns/shop/sa/web", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	delta, err := discoveryv3.NewAggregatedDiscoveryServiceClient(f.dial(t, f.ca.ClientTLS(svid, controlPlaneID))).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "web-2.shop"}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	d, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResponseNonce: d.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	sotw.send(resource.ClusterType, r.GetVersionInfo(), r.GetNonce(), nil)
	waitFor(t, func() bool {
		acked := map[string]string{}
		for _, p := range f.ledger.Status() {
			if p.Connected {
				acked[p.Node] = p.Types[resource.ClusterType].Acked
			}
		}
		return len(acked) == 2 && acked["web-1.shop"] == r.GetVersionInfo() && acked["web-2.shop"] == d.GetSystemVersionInfo()
	}, "both proxies connected with their own ACKs")
}
