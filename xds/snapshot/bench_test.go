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

// BenchmarkDocuments is one count of every document's proxies (Ledger.Documents, what a replica
// reports at most once a second while its proxies change) in the mesh of BenchmarkReconcile:
// 1,000 connected proxies that have ACKed their configuration, 1,501 documents.
func BenchmarkDocuments(b *testing.B) {
	f := newFixture(b, meshgen.Spec{TrustDomain: "t.test", Services: 500, Workloads: 1000, Upstreams: 3, AuthzTimeoutMs: 250}, testOpts)
	f.ctl.Reconcile(context.Background())
	for _, st := range f.ledger.Status() {
		f.ledger.Connected(st.Node, "", false)
		for url, t := range st.Types {
			f.ledger.Acked(st.Node, url, t.Published)
		}
	}
	mesh, _ := f.mesh.Current()
	b.ReportAllocs()
	var counts map[string]DocumentCount
	for b.Loop() {
		var settled bool
		if counts, settled = f.ledger.Documents(mesh.Version); !settled {
			b.Fatal("not settled")
		}
	}
	if c := counts["Mesh/default"]; c.Proxies != 1000 || c.Programmed != 1000 || len(counts) != 1501 {
		b.Fatalf("%d documents; the Mesh: %+v", len(counts), c)
	}
}
