package snapshot

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/test/meshgen"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/translate"
)

type staticRegistry struct {
	mu   sync.Mutex
	regs []Registration
	ch   chan struct{}
}

func (r *staticRegistry) Current() ([]Registration, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch == nil {
		r.ch = make(chan struct{})
	}
	return r.regs, r.ch
}

func (r *staticRegistry) set(regs ...Registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regs = regs
}

func buildMesh(t testing.TB, files map[string]string) *model.Mesh {
	t.Helper()
	var docs []model.Document
	for name, content := range files {
		ds, ps := source.Decode(name, []byte(content))
		if ps != nil {
			t.Fatal(ps)
		}
		docs = append(docs, ds...)
	}
	m, ps := source.Build(docs)
	if ps != nil {
		t.Fatal(ps)
	}
	return m
}

type fixture struct {
	mesh   *source.Publisher
	reg    *staticRegistry
	cache  *Cache
	ledger *Ledger
	ctl    *Controller
	spec   meshgen.Spec
}

func newFixture(t testing.TB, spec meshgen.Spec, opts translate.Options) *fixture {
	t.Helper()
	f := &fixture{mesh: &source.Publisher{}, reg: &staticRegistry{}, spec: spec}
	f.mesh.Publish(buildMesh(t, spec.Files()))
	var err error
	if f.ledger, err = NewLedger(nil); err != nil {
		t.Fatal(err)
	}
	f.cache = NewCache(cache.NewSnapshotCache(true, cache.IDHash{}, nil), f.ledger)
	if f.ctl, err = NewController(f.mesh, f.reg, f.cache, f.ledger, Options{Translate: opts}); err != nil {
		t.Fatal(err)
	}
	var regs []Registration
	for i := range spec.Workloads {
		regs = append(regs, Registration{
			NodeID:    meshgen.NodeID(i),
			Identity:  spiffeid.RequireFromString("spiffe://" + spec.TrustDomain + "/ns/load/sa/" + spec.ServiceAccount(i)),
			Connected: true,
		})
	}
	f.reg.set(regs...)
	return f
}

var testOpts = translate.Options{AuthzAddress: "127.0.0.1:15011", AuthzID: spiffeid.RequireFromString("spiffe://t.test/ns/portcullis-system/sa/controlplane")}

func TestControllerPublishesOnlyChanges(t *testing.T) {
	f := newFixture(t, meshgen.Spec{TrustDomain: "t.test", Services: 3, Workloads: 4, Upstreams: 1, AuthzTimeoutMs: 100}, testOpts)
	ctx := context.Background()
	f.ctl.Reconcile(ctx)
	snap, err := f.cache.GetSnapshot("w-0.load")
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range TypeURLs {
		if len(snap.GetResources(url)) == 0 {
			t.Errorf("the snapshot has no %s", url)
		}
	}

	// An unchanged mesh republished (new object, same content) pushes nothing.
	f.mesh.Publish(buildMesh(t, f.spec.Files()))
	f.ctl.Reconcile(ctx)
	if again, _ := f.cache.GetSnapshot("w-0.load"); again != snap {
		t.Error("unchanged configuration was set again")
	}

	// The authorization timeout is the ext_authz filter's own setting: only the ECDS version
	// moves, and listeners, routes and clusters stay as they are.
	f.spec.AuthzTimeoutMs = 200
	f.mesh.Publish(buildMesh(t, f.spec.Files()))
	f.ctl.Reconcile(ctx)
	next, _ := f.cache.GetSnapshot("w-0.load")
	for _, url := range TypeURLs {
		if moved := next.GetVersion(url) != snap.GetVersion(url); moved != (url == resource.ExtensionConfigType) {
			t.Errorf("%s version moved: %v", url, moved)
		}
	}
	st := f.ledger.Status()
	if len(st) != 4 || st[0].Types[resource.ExtensionConfigType].Published != next.GetVersion(resource.ExtensionConfigType) {
		t.Errorf("ledger = %+v", st)
	}

	// Resources lists every type, each sorted by name.
	res, err := f.ctl.Resources("w-0.load")
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range TypeURLs {
		if len(res[url]) != len(next.GetResources(url)) {
			t.Errorf("Resources: %d of %s, the snapshot has %d", len(res[url]), url, len(next.GetResources(url)))
		}
	}
}

// A snapshot whose listeners name a route or filter configuration it lacks (or that carries one
// no listener names) is refused before the cache sees it: Envoy would keep the listener warming.
func TestSnapshotConsistency(t *testing.T) {
	f := newFixture(t, meshgen.Spec{TrustDomain: "t.test", Services: 2, Workloads: 1, Upstreams: 1, AuthzTimeoutMs: 100}, testOpts)
	mesh, _ := f.mesh.Current()
	mc := model.NewMeshContext(mesh)
	p, err := model.NewProxy(mc, mesh.Workload("w-0.load"))
	if err != nil {
		t.Fatal(err)
	}
	good, err := translate.Translate(translate.Input{Proxy: p}, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := newInterner().build(good); err != nil {
		t.Fatalf("a translated proxy is inconsistent: %v", err)
	}
	for name, broken := range map[string]func(r *translate.Resources){
		"endpoints missing":     func(r *translate.Resources) { r.Endpoints = nil },
		"route missing":         func(r *translate.Resources) { r.Routes = r.Routes[1:] },
		"route unnamed":         func(r *translate.Resources) { r.Listeners = r.Listeners[1:] },
		"ECDS resource missing": func(r *translate.Resources) { r.Extensions = nil },
		"ECDS resource unnamed": func(r *translate.Resources) {
			r.Extensions = append(r.Extensions, &corev3.TypedExtensionConfig{Name: "spare", TypedConfig: r.Extensions[0].GetTypedConfig()})
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := *good
			r.Listeners, r.Routes, r.Endpoints, r.Extensions = slices.Clone(r.Listeners), slices.Clone(r.Routes), slices.Clone(r.Endpoints), slices.Clone(r.Extensions)
			broken(&r)
			if _, _, err := newInterner().build(&r); err == nil || !strings.Contains(err.Error(), "snapshot: inconsistent") {
				t.Errorf("built: %v", err)
			}
		})
	}
}

func TestControllerSharesIdenticalResources(t *testing.T) {
	// Workloads 0 and 3 are instances of svc-0 with the same upstream: their clusters are equal.
	f := newFixture(t, meshgen.Spec{TrustDomain: "t.test", Services: 3, Workloads: 6, Upstreams: 1, AuthzTimeoutMs: 100}, testOpts)
	f.ctl.Reconcile(context.Background())
	a, _ := f.cache.GetSnapshot("w-0.load")
	b, _ := f.cache.GetSnapshot("w-3.load")
	ca, cb := a.GetResources(resource.ClusterType), b.GetResources(resource.ClusterType)
	if len(ca) == 0 || len(ca) != len(cb) {
		t.Fatalf("clusters %d and %d", len(ca), len(cb))
	}
	for name, r := range ca {
		if cb[name] != r {
			t.Errorf("cluster %s: equal content but two objects", name)
		}
	}
}

func TestControllerKeepsLastGoodOnError(t *testing.T) {
	f := newFixture(t, meshgen.Spec{TrustDomain: "t.test", Services: 2, Workloads: 2, Upstreams: 1, AuthzTimeoutMs: 100}, testOpts)
	ctx := context.Background()
	f.ctl.Reconcile(ctx)
	good, _ := f.cache.GetSnapshot("w-0.load")

	// The proxy's certificate no longer matches its workload: it keeps its last good snapshot,
	// and the ledger says why.
	regs, _ := f.reg.Current()
	regs[0].Identity = spiffeid.RequireFromString("spiffe://t.test/ns/load/sa/intruder")
	f.reg.set(regs...)
	f.spec.AuthzTimeoutMs = 300
	f.mesh.Publish(buildMesh(t, f.spec.Files()))
	f.ctl.Reconcile(ctx)
	if kept, _ := f.cache.GetSnapshot("w-0.load"); kept != good {
		t.Error("proxy lost its last good snapshot")
	}
	var w0 ProxyStatus
	for _, p := range f.ledger.Status() {
		if p.Node == "w-0.load" {
			w0 = p
		}
	}
	if !strings.Contains(w0.Error, "certificate proves spiffe://t.test/ns/load/sa/intruder") {
		t.Errorf("ledger error = %q", w0.Error)
	}

	// A proxy that is gone loses its snapshot and ledger entry.
	f.reg.set(regs[1])
	f.ctl.Reconcile(ctx)
	if _, err := f.cache.GetSnapshot("w-0.load"); err == nil {
		t.Error("snapshot of a deregistered proxy kept")
	}
	if st := f.ledger.Status(); len(st) != 1 {
		t.Errorf("ledger has %d entries, want 1", len(st))
	}
}

func TestTranslationErrorKeepsSnapshot(t *testing.T) {
	f := newFixture(t, meshgen.Spec{TrustDomain: "t.test", Services: 2, Workloads: 2, Upstreams: 1, AuthzTimeoutMs: 100}, testOpts)
	ctx := context.Background()
	f.ctl.Reconcile(ctx)
	good, _ := f.cache.GetSnapshot("w-1.load")
	// A bad control-plane option makes translation fail for every proxy.
	f.ctl.opts.Translate.AuthzAddress = "not-an-address"
	f.spec.AuthzTimeoutMs = 150
	f.mesh.Publish(buildMesh(t, f.spec.Files()))
	f.ctl.Reconcile(ctx)
	if kept, _ := f.cache.GetSnapshot("w-1.load"); kept != good {
		t.Error("translation error replaced the snapshot")
	}
	for _, p := range f.ledger.Status() {
		if !strings.Contains(p.Error, "invalid address") {
			t.Errorf("%s: ledger error %q", p.Node, p.Error)
		}
	}
}

func TestLedgerNackAndAck(t *testing.T) {
	l, err := NewLedger(nil)
	if err != nil {
		t.Fatal(err)
	}
	build := func(version string, sources map[string][]string) Build {
		return Build{MeshVersion: "m1", Versions: map[string]string{resource.ListenerType: version}, Resources: &translate.Resources{Sources: sources}}
	}
	l.Connected("n", "spiffe://t/ns/a/sa/b", false)
	l.Requested("n", resource.ListenerType)
	l.Built("n", build("v2", nil))
	l.Sent("n", 1, resource.ListenerType, "v2", "nonce-2")
	l.Built("n", build("v2", map[string][]string{"inbound|15001": {"Workload/shop/w1", "Service/shop/api"}}))
	if n := l.Nacked("n", 1, resource.ListenerType, "nonce-2", "Error adding/updating listener(s) inbound|15001: bad"); n.Version != "v2" || strings.Join(n.Documents, ",") != "Service/shop/api,Workload/shop/w1" {
		t.Fatalf("NACK = %+v, want v2 from the listener's documents", n)
	}
	if l.NackedVersion("n", resource.ListenerType) != "v2" || l.Status()[0].Synced() {
		t.Fatal("NACK not recorded")
	}
	if n := l.Nacked("n", 1, resource.ListenerType, "stale-nonce", "x"); n.Version != "" {
		t.Errorf("unknown nonce mapped to %q", n.Version)
	}
	l.Built("n", build("v3", nil))
	l.Sent("n", 1, resource.ListenerType, "v3", "nonce-3")
	l.Acked("n", resource.ListenerType, "v3")
	st := l.Status()[0]
	if !st.Synced() || st.Types[resource.ListenerType].Nacked != "" {
		t.Errorf("after ACK of v3: %+v", st.Types[resource.ListenerType])
	}
}
