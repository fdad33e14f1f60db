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

// Routes and the ext_authz filter configuration of web-1.shop (meshDocs).
var (
	webRoutes  = []string{"inbound|8080|web.shop", "outbound|19001|cart.shop"}
	webFilters = []string{"envoy.filters.http.ext_authz", "envoy.filters.http.jwt_authn"}
)

const rateLimitDoc = `---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: web-limits, namespace: shop}
spec:
  selector: {service: web}
  limits: [{name: all, bucket: {maxTokens: 10, fillInterval: 1s}}]
`

// failOpen is meshDocs with authorization failing open.
var failOpen = strings.Replace(meshDocs, "spec: {trustDomain: example.org}", "spec: {trustDomain: example.org, authz: {failureMode: OPEN}}", 1)

// A state-of-the-world client gets routes (RDS) and the ext_authz filter configuration (ECDS)
// by name over ADS, as Envoy asks for them once it has the listeners; a rate limit then changes
// only the routes, an authorization setting only the filter configuration, and listeners are not
// sent again.
func TestSotWServesRoutesAndFilterConfig(t *testing.T) {
	f := newFixture(t, meshDocs)
	c := f.ads(t, "spiffe://example.org/ns/shop/sa/web", "web-1.shop", nil)
	ack := func(names []string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		r := c.mustRecv()
		c.sendFor(r.GetTypeUrl(), names, r.GetVersionInfo(), r.GetNonce(), nil)
		return r
	}
	c.send(resource.ClusterType, "", "", nil)
	ack(nil)
	c.send(resource.ListenerType, "", "", nil)
	lds := ack(nil)
	c.sendFor(resource.RouteType, webRoutes, "", "", nil)
	rds := ack(webRoutes)
	if got := sorted(names(t, rds)); !slices.Equal(got, webRoutes) {
		t.Fatalf("routes %v, want %v", got, webRoutes)
	}
	c.sendFor(resource.ExtensionConfigType, webFilters, "", "", nil)
	ecds := ack(webFilters)
	if got := sorted(names(t, ecds)); !slices.Equal(got, webFilters) {
		t.Fatalf("filter configurations %v, want %v", got, webFilters)
	}

	for _, change := range []struct {
		name, docs, typeURL string
		previous            **discoveryv3.DiscoveryResponse
	}{
		{"a rate limit", meshDocs + rateLimitDoc, resource.RouteType, &rds},
		{"failing open", failOpen + rateLimitDoc, resource.ExtensionConfigType, &ecds},
	} {
		f.mesh.Publish(buildMesh(t, change.docs))
		r := c.mustRecv()
		if r.GetTypeUrl() != change.typeURL || r.GetVersionInfo() == (*change.previous).GetVersionInfo() {
			t.Fatalf("%s: got %s version %s; want a new %s", change.name, r.GetTypeUrl(), r.GetVersionInfo(), change.typeURL)
		}
		c.sendFor(r.GetTypeUrl(), map[string][]string{resource.RouteType: webRoutes, resource.ExtensionConfigType: webFilters}[r.GetTypeUrl()], r.GetVersionInfo(), r.GetNonce(), nil)
		*change.previous = r
		if extra, err := c.recv(300 * time.Millisecond); extra != nil || err != nil {
			t.Fatalf("%s: also sent %s (%v)", change.name, extra.GetTypeUrl(), err)
		}
	}
	waitFor(t, func() bool {
		st := f.ledger.Status()[0]
		return st.Synced() && st.Types[resource.RouteType].Acked == rds.GetVersionInfo() &&
			st.Types[resource.ExtensionConfigType].Acked == ecds.GetVersionInfo() && st.Types[resource.ListenerType].Acked == lds.GetVersionInfo()
	}, "the ledger to record the RDS and ECDS ACKs, listeners unchanged")
}

// sorted sorts resource names: a state-of-the-world response lists them in no set order.
func sorted(names []string) []string {
	slices.Sort(names)
	return names
}

// A delta client subscribed to routes and the filter configuration is sent only the route that
// changed.
func TestDeltaServesOnlyTheChangedRoute(t *testing.T) {
	f := newFixture(t, meshDocs)
	svid := f.ca.Issue(t, "spiffe://example.org/ns/shop/sa/web", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(f.dial(t, f.ca.ClientTLS(svid, controlPlaneID))).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "web-1.shop"}
	// recv returns a response and the names of the resources it carries.
	recv := func() (*discoveryv3.DeltaDiscoveryResponse, []string) {
		t.Helper()
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, res := range r.GetResources() {
			got = append(got, res.GetName())
		}
		slices.Sort(got)
		return r, got
	}
	subscribe := func(typeURL string, names []string) {
		t.Helper()
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNamesSubscribe: names}); err != nil {
			t.Fatal(err)
		}
		r, got := recv()
		if !slices.Equal(got, names) {
			t.Fatalf("%s: got %v, want %v", typeURL, got, names)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typeURL, ResponseNonce: r.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	subscribe(resource.RouteType, webRoutes)
	subscribe(resource.ExtensionConfigType, webFilters)

	f.mesh.Publish(buildMesh(t, meshDocs+rateLimitDoc))
	if r, got := recv(); r.GetTypeUrl() != resource.RouteType || !slices.Equal(got, webRoutes[:1]) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("after a rate limit: %s %v, removed %v; want only route %s", r.GetTypeUrl(), got, r.GetRemovedResources(), webRoutes[0])
	}
}
