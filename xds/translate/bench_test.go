package translate

import (
	"testing"

	"github.com/portcullis/portcullis/test/meshgen"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// BenchmarkTranslate is the cost of one proxy (3 upstreams, rate limits off) in a 500-service,
// 1,000-workload mesh.
func BenchmarkTranslate(b *testing.B) {
	spec := meshgen.Spec{TrustDomain: "bench.test", Services: 500, Workloads: 1000, Upstreams: 3, AuthzTimeoutMs: 250}
	var docs []model.Document
	for name, content := range spec.Files() {
		ds, ps := source.Decode(name, []byte(content))
		if ps != nil {
			b.Fatal(ps)
		}
		docs = append(docs, ds...)
	}
	mesh, ps := source.Build(docs)
	if ps != nil {
		b.Fatal(ps)
	}
	proxy, err := model.NewProxy(model.NewMeshContext(mesh), mesh.Workload(meshgen.NodeID(0)))
	if err != nil {
		b.Fatal(err)
	}
	in := Input{Proxy: proxy, Endpoints: map[model.Ref][]model.Endpoint{}}
	for i := 1; i <= 3; i++ {
		ref := model.Ref{Namespace: "load", Name: meshgen.ServiceName(i)}
		in.Endpoints[ref] = []model.Endpoint{{Address: "10.0.0.1", Port: 15006, ServicePort: 8080, Workload: meshgen.NodeID(i)}}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Translate(in, testOptions); err != nil {
			b.Fatal(err)
		}
	}
}
