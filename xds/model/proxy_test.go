package model

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// testMesh builds a mesh of a service with two ports, a transparent instance of it, and a rate
// limit on it.
func testMesh(t *testing.T) *Mesh {
	t.Helper()
	docs := []Document{
		{Object: &MeshDoc{TypeMeta: TypeMeta{APIVersion, KindMesh}, Metadata: ObjectMeta{Name: "default"}, Spec: MeshSpec{TrustDomain: "example.org"}}},
		{Object: &ServiceDoc{TypeMeta: TypeMeta{APIVersion, KindService}, Metadata: ObjectMeta{Name: "api", Namespace: "shop"},
			Spec: ServiceSpec{Ports: []ServicePort{{Name: "http", Port: 8080}, {Name: "grpc", Port: 9090, Protocol: ProtocolGRPC}}}}},
		{Object: &WorkloadDoc{TypeMeta: TypeMeta{APIVersion, KindWorkload}, Metadata: ObjectMeta{Name: "api-0", Namespace: "shop"},
			Spec: WorkloadSpec{Mode: ModeTransparent, Service: "api"}}},
		{Object: &RateLimitPolicyDoc{TypeMeta: TypeMeta{APIVersion, KindRateLimitPolicy}, Metadata: ObjectMeta{Name: "limits", Namespace: "shop"},
			Spec: RateLimitPolicySpec{Selector: Selector{Service: "api"}, Limits: []RateLimit{{Name: "all", Bucket: TokenBucket{MaxTokens: 10, FillInterval: Duration{time.Second}}}}}}},
	}
	m, ps := Build(docs)
	if ps != nil {
		t.Fatal(ps)
	}
	return m
}

// NewProxy runs on every core for the proxies of one mesh, whose Workload documents they share:
// it must not write to them. Under -race, defaulting the shared document in place fails here.
func TestNewProxySharesTheMeshReadOnly(t *testing.T) {
	m := testMesh(t)
	mc := NewMeshContext(m)
	w := m.Workload("api-0.shop")
	before, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				p, err := NewProxy(mc, w)
				if err != nil {
					t.Error(err)
					return
				}
				if p.Workload == w {
					t.Error("the proxy holds the mesh's document, not its own copy")
					return
				}
				if _, err := json.Marshal(w); err != nil { // reads it while the others build
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if after, _ := json.Marshal(w); string(after) != string(before) {
		t.Errorf("the mesh's Workload changed:\nbefore %s\nafter  %s", before, after)
	}
}

// A workload its agent registered is defaulted in the proxy, not in the registration the
// controller keeps and translates again at every reconcile.
func TestNewProxyDefaultsItsOwnCopy(t *testing.T) {
	mc := NewMeshContext(testMesh(t))
	reg := &WorkloadDoc{TypeMeta: TypeMeta{APIVersion, KindWorkload}, Metadata: ObjectMeta{Name: "api-1", Namespace: "shop"},
		Spec: WorkloadSpec{Service: "api", InboundPort: 15001, AppPort: 8080}}
	p, err := NewProxy(mc, reg)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Spec.Address != "" || reg.Spec.Mode != "" {
		t.Errorf("the registration was defaulted in place: address %q, mode %q", reg.Spec.Address, reg.Spec.Mode)
	}
	if p.Workload.Spec.Address != "127.0.0.1" || p.Workload.Spec.Mode != ModeLocal {
		t.Errorf("the proxy's workload is not defaulted: address %q, mode %q", p.Workload.Spec.Address, p.Workload.Spec.Mode)
	}
}

// The proxy is resolved: its service with the identities and rate limits the mesh gives it, and
// each upstream's service port, so the translator looks nothing up.
func TestNewProxyResolves(t *testing.T) {
	m := testMesh(t)
	mc := NewMeshContext(m)
	reg := &WorkloadDoc{TypeMeta: TypeMeta{APIVersion, KindWorkload}, Metadata: ObjectMeta{Name: "web-1", Namespace: "shop"},
		Spec: WorkloadSpec{Service: "api", InboundPort: 15001, AppPort: 8080, Upstreams: []Upstream{{Service: "api.shop", Port: 9090, LocalPort: 19001}}}}
	p, err := NewProxy(mc, reg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Service != mc.Service(Ref{"shop", "api"}) || len(p.Service.RateLimits) != 1 || len(p.Service.IDs) != 1 ||
		p.Service.IDs[0].String() != "spiffe://example.org/ns/shop/sa/api" {
		t.Errorf("service not resolved from the mesh context: %+v", p.Service)
	}
	if len(p.Upstreams) != 1 || p.Upstreams[0].Service != p.Service || p.Upstreams[0].Port.Name != "grpc" || p.Upstreams[0].LocalPort != 19001 {
		t.Errorf("upstream not resolved: %+v", p.Upstreams)
	}
	for _, tc := range []struct {
		up   Upstream
		want string
	}{
		{Upstream{Service: "api", LocalPort: 19001}, `model: workload web-1.shop: spec.upstreams[0]: port required: Service "api" has 2 ports`},
		{Upstream{Service: "api", Port: 1, LocalPort: 19001}, `model: workload web-1.shop: spec.upstreams[0]: 1 is not a port of Service "api"`},
		{Upstream{Service: "nope.shop", LocalPort: 19001}, `model: workload web-1.shop: spec.upstreams[0]: Service "nope" not found in namespace "shop"`},
	} {
		bad := *reg
		bad.Spec.Upstreams = []Upstream{tc.up}
		if _, err := NewProxy(mc, &bad); err == nil || err.Error() != tc.want {
			t.Errorf("upstream %+v: %v, want %s", tc.up, err, tc.want)
		}
	}
}
