package snapshot

import (
	"context"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/portcullis/portcullis/test/meshgen"
)

// BenchmarkReconcile is one reconcile after a Mesh document change (the authorization timeout)
// in a mesh of 500 services and 1,000 proxies with 3 upstreams each: every proxy is translated
// again and its snapshot built and set. It is the control plane's share of what test/xdsload
// times, without the gRPC streams.
func BenchmarkReconcile(b *testing.B) {
	f := newFixture(b, meshgen.Spec{TrustDomain: "t.test", Services: 500, Workloads: 1000, Upstreams: 3, AuthzTimeoutMs: 250}, testOpts)
	ctx := context.Background()
	f.ctl.Reconcile(ctx)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		f.spec.AuthzTimeoutMs = 251 + i%2
		f.mesh.Publish(buildMesh(b, f.spec.Files()))
		i++
		b.StartTimer()
		f.ctl.Reconcile(ctx)
	}
	b.StopTimer()
	mesh, _ := f.mesh.Current()
	for _, st := range f.ledger.Status() {
		if st.MeshVersion != mesh.Version || st.Error != "" || st.Types[resource.ClusterType].Published == "" {
			b.Fatalf("%s was not published from the last mesh: %+v", st.Node, st)
		}
	}
}
