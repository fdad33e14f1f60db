package snapshot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/translate"
)

// Registration is a proxy the control plane serves: connected, or disconnected but within its
// grace period (its endpoint stays in EDS until the grace period ends).
type Registration struct {
	NodeID string
	// Workload is what the agent registered through node metadata; nil means the Workload
	// document named by NodeID describes it.
	Workload *model.WorkloadDoc
	// Identity is the SPIFFE ID the proxy's certificate proves.
	Identity  spiffeid.ID
	Connected bool
}

// Registry is the set of registered proxies, with a channel closed when it changes.
type Registry interface {
	Current() ([]Registration, <-chan struct{})
}

// EndpointSource supplies endpoints that do not come from connected proxies (Kubernetes
// EndpointSlices), by service, and a channel closed when they change.
type EndpointSource interface {
	Endpoints() (map[model.Ref][]model.Endpoint, <-chan struct{})
}

// Options configure a Controller.
type Options struct {
	Translate translate.Options
	// Endpoints, when set, adds its endpoints to those of the connected proxies.
	Endpoints      EndpointSource
	Logger         *slog.Logger
	Meter          metric.Meter
	TracerProvider trace.TracerProvider
	// Debounce coalesces bursts of changes (many proxies connecting at once). 20ms unless set.
	Debounce time.Duration
}

// Controller keeps every registered proxy's snapshot in step with the mesh and the endpoints.
type Controller struct {
	mesh   source.Source
	reg    Registry
	cache  *Cache
	ledger *Ledger
	opts   Options
	log    *slog.Logger
	tracer trace.Tracer

	reconciling sync.Mutex // one reconcile at a time
	mu          sync.Mutex // guards state
	state       map[string]*proxyState
	interner    *interner
	// docs are the document versions of the mesh last reconciled (DocumentVersions), computed
	// once per mesh version; guarded by reconciling.
	docs struct {
		mesh     string
		versions map[string]string
	}

	pushes, failures metric.Int64Counter
	duration         metric.Float64Histogram
}

type proxyState struct {
	fingerprint string
	versions    map[string]string
	resources   map[string]types.Resource // by hash, to keep them interned while unchanged
	authz       map[string]translate.AuthzPlacement
}

// NewController returns a controller publishing into c and recording into ledger.
func NewController(mesh source.Source, reg Registry, c *Cache, ledger *Ledger, opts Options) (*Controller, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	ctl := &Controller{
		mesh: mesh, reg: reg, cache: c, ledger: ledger, opts: opts, log: opts.Logger,
		tracer:   opts.TracerProvider.Tracer("github.com/portcullis/portcullis/xds/snapshot"),
		state:    map[string]*proxyState{},
		interner: newInterner(),
	}
	if m := opts.Meter; m != nil {
		var err error
		if ctl.pushes, err = m.Int64Counter("portcullis_xds_pushes", metric.WithDescription("Snapshots published to proxies (only when a resource type's version changed).")); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if ctl.failures, err = m.Int64Counter("portcullis_xds_translate_errors", metric.WithDescription("Proxies whose configuration could not be built; they keep their last good one.")); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if ctl.duration, err = m.Float64Histogram("portcullis_xds_reconcile_seconds", metric.WithUnit("s"),
			metric.WithDescription("Time to rebuild and publish every proxy's snapshot after a change."),
			metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5)); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if _, err = m.Int64ObservableGauge("portcullis_xds_authz_routes",
			metric.WithDescription("Inbound routes under Mesh authz.engine auto, by where their policies are decided (envoy, ext_authz) and, for ext_authz, the shape RBAC cannot express."),
			metric.WithInt64Callback(ctl.observePlacements)); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if _, err = m.Int64ObservableGauge("portcullis_xds_proxies", metric.WithDescription("Registered proxies (connected or in their grace period)."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				ctl.mu.Lock()
				defer ctl.mu.Unlock()
				o.Observe(int64(len(ctl.state)))
				return nil
			})); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return ctl, nil
}

// Run reconciles whenever the mesh or the registry changes, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for {
		_, meshChanged := c.mesh.Current()
		_, regChanged := c.reg.Current()
		var epChanged <-chan struct{}
		if c.opts.Endpoints != nil {
			_, epChanged = c.opts.Endpoints.Endpoints()
		}
		c.Reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-meshChanged:
		case <-regChanged:
		case <-epChanged:
		}
		// Let a burst settle: one reconcile for a thousand connecting proxies.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.opts.Debounce):
		}
	}
}

// Reconcile brings every registered proxy's snapshot up to date once.
func (c *Controller) Reconcile(ctx context.Context) {
	mesh, _ := c.mesh.Current()
	if mesh == nil {
		return
	}
	regs, _ := c.reg.Current()
	start := time.Now()
	ctx, span := c.tracer.Start(ctx, "xds.reconcile", trace.WithAttributes(
		attribute.String("mesh.version", mesh.Version), attribute.Int("proxies", len(regs))))
	defer span.End()

	proxies, endpoints := c.resolve(mesh, model.NewMeshContext(mesh), regs)
	hashes := endpointHashes(endpoints)
	c.reconciling.Lock()
	defer c.reconciling.Unlock()
	c.interner.next()
	if c.docs.mesh != mesh.Version {
		c.docs.mesh, c.docs.versions = mesh.Version, DocumentVersions(mesh)
	}
	docs := c.docs.versions
	// Proxies are independent: translate them on every core.
	work := make(chan *model.Proxy)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for p := range work {
				c.publish(ctx, p, endpoints, hashes, docs)
			}
		})
	}
	for _, p := range proxies {
		work <- p
	}
	close(work)
	wg.Wait()

	// Who is registered now, not when this reconcile began: a proxy that connected meanwhile
	// must keep what it has.
	now, _ := c.reg.Current()
	registered := make(map[string]bool, len(now))
	for _, r := range now {
		registered[r.NodeID] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for node := range c.state {
		if !registered[node] {
			// Gone for good: drop its snapshot and ledger entry so memory follows the proxies
			// that are actually there (go-control-plane#597).
			c.cache.ClearSnapshot(node)
			c.ledger.Forget(node)
			delete(c.state, node)
		}
	}
	// Nodes that never had a snapshot (their configuration could not be built) leave a ledger
	// entry and the cache's record of their watches: drop those too once the node is gone and
	// no stream watches it.
	c.ledger.ForgetExcept(registered)
	for _, node := range c.cache.GetStatusKeys() {
		if !registered[node] && c.cache.GetStatusInfo(node).GetNumWatches() == 0 && c.cache.GetStatusInfo(node).GetNumDeltaWatches() == 0 {
			c.cache.ClearSnapshot(node)
		}
	}
	if c.duration != nil {
		c.duration.Record(ctx, time.Since(start).Seconds())
	}
}

// resolve turns registrations into proxies, resolved against the mesh context every proxy of
// this reconcile shares, and the endpoints they make up. A registration that does not fit the
// mesh is recorded in the ledger and contributes no endpoint.
func (c *Controller) resolve(mesh *model.Mesh, mc *model.MeshContext, regs []Registration) ([]*model.Proxy, map[model.Ref][]model.Endpoint) {
	var proxies []*model.Proxy
	endpoints := map[model.Ref][]model.Endpoint{}
	if c.opts.Endpoints != nil {
		external, _ := c.opts.Endpoints.Endpoints()
		for ref, eps := range external {
			endpoints[ref] = slices.Clone(eps)
		}
	}
	for _, r := range regs {
		p, err := proxyFor(mesh, mc, r)
		if err != nil {
			c.ledger.Failed(r.NodeID, err)
			c.log.Warn("proxy not configured", "node", r.NodeID, "err", err)
			continue
		}
		proxies = append(proxies, p)
		if p.Service == nil {
			continue
		}
		w := p.Workload.Spec
		ref := p.Service.Ref
		if p.Workload.Transparent() {
			// Redirected by iptables: callers connect to the application's own ports.
			for _, sp := range p.Service.Doc.Spec.Ports {
				endpoints[ref] = appendEndpoint(endpoints[ref], model.Endpoint{Address: w.Address, Port: sp.Port, ServicePort: sp.Port, Workload: p.NodeID})
			}
			continue
		}
		endpoints[ref] = append(endpoints[ref], model.Endpoint{Address: w.Address, Port: w.InboundPort, ServicePort: p.Workload.ServedPort(), Workload: p.NodeID})
	}
	return proxies, endpoints
}

// appendEndpoint adds e unless the Kubernetes endpoints already have it.
func appendEndpoint(list []model.Endpoint, e model.Endpoint) []model.Endpoint {
	for _, have := range list {
		if have.Address == e.Address && have.Port == e.Port && have.ServicePort == e.ServicePort {
			return list
		}
	}
	return append(list, e)
}

func proxyFor(mesh *model.Mesh, mc *model.MeshContext, r Registration) (*model.Proxy, error) {
	w := mesh.Workload(r.NodeID)
	if w == nil {
		w = r.Workload
	}
	if w == nil {
		return nil, fmt.Errorf("no Workload document named %q and no workload registered by its agent", r.NodeID)
	}
	p, err := model.NewProxy(mc, w)
	if err != nil {
		return nil, err
	}
	if !r.Identity.IsZero() && p.Identity != r.Identity {
		return nil, fmt.Errorf("workload runs as %s but its certificate proves %s", p.Identity, r.Identity)
	}
	return p, nil
}

// publish translates one proxy if its inputs changed and sets its snapshot if a version changed.
func (c *Controller) publish(ctx context.Context, p *model.Proxy, endpoints map[model.Ref][]model.Endpoint, hashes map[model.Ref]string, docs map[string]string) {
	in := translate.Input{Proxy: p, Endpoints: upstreamEndpoints(p, endpoints)}
	if p.Workload.Transparent() {
		in.Inbound = p.TransparentInbound(endpoints)
	}
	fp, err := fingerprint(p, in, hashes)
	c.mu.Lock()
	st := c.state[p.NodeID]
	c.mu.Unlock()
	if err == nil && st != nil && st.fingerprint == fp {
		for h, r := range st.resources {
			c.interner.intern(h, r)
		}
		return
	}
	_, span := c.tracer.Start(ctx, "xds.publish", trace.WithAttributes(attribute.String("node", p.NodeID)))
	defer span.End()
	snap, versions, res, err := c.translate(in)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "translation failed")
		c.ledger.Failed(p.NodeID, err)
		c.log.Error("proxy configuration not built; it keeps its last good one", "node", p.NodeID, "err", err)
		if c.failures != nil {
			c.failures.Add(ctx, 1)
		}
		if st != nil {
			for h, r := range st.resources {
				c.interner.intern(h, r)
			}
		}
		return
	}
	next := &proxyState{fingerprint: fp, versions: versions, resources: resourcesByHash(snap), authz: res.Authz}
	var before map[string]translate.AuthzPlacement
	if st != nil {
		before = st.authz
	}
	c.logPlacements(p.NodeID, before, res.Authz)
	c.mu.Lock()
	c.state[p.NodeID] = next
	c.mu.Unlock()
	built := Build{MeshVersion: p.Mesh.Version, Documents: docs, Resources: res}
	if st != nil && maps.Equal(st.versions, versions) {
		c.ledger.Built(p.NodeID, built) // same configuration from different inputs: nothing to push
		return
	}
	if err := c.cache.SetSnapshot(ctx, p.NodeID, snap); err != nil {
		c.ledger.Failed(p.NodeID, err)
		c.log.Error("setting snapshot", "node", p.NodeID, "err", err)
		return
	}
	built.Versions = versions
	c.ledger.Built(p.NodeID, built)
	for _, url := range TypeURLs {
		span.SetAttributes(attribute.String("version."+shortType(url), versions[url]))
	}
	if c.pushes != nil {
		c.pushes.Add(ctx, 1)
	}
}

// observePlacements counts the inbound routes of every proxy by where their policies are
// decided.
func (c *Controller) observePlacements(_ context.Context, o metric.Int64Observer) error {
	type key struct{ decided, shape string }
	counts := map[key]int64{}
	c.mu.Lock()
	for _, st := range c.state {
		for _, p := range st.authz {
			k := key{"ext_authz", p.Shape}
			if p.Native {
				k = key{"envoy", ""}
			}
			counts[k]++
		}
	}
	c.mu.Unlock()
	for k, n := range counts {
		o.Observe(n, metric.WithAttributes(attribute.String("decided", k.decided), attribute.String("reason", k.shape)))
	}
	return nil
}

// logPlacements logs, under engine auto, where each inbound route's policies are decided when
// that changes: in Envoy, or by the authorization service and why.
func (c *Controller) logPlacements(node string, before, after map[string]translate.AuthzPlacement) {
	for route, p := range after {
		if prev, ok := before[route]; ok && prev == p {
			continue
		}
		if p.Native {
			c.log.Info("route decided in Envoy (RBAC)", "node", node, "route", route)
		} else {
			c.log.Info("route decided by the authorization service", "node", node, "route", route, "reason", p.Reason)
		}
	}
}

func (c *Controller) translate(in translate.Input) (*cache.Snapshot, map[string]string, *translate.Resources, error) {
	res, err := translate.Translate(in, c.opts.Translate)
	if err != nil {
		return nil, nil, nil, err
	}
	snap, versions, err := c.interner.build(res)
	if err != nil {
		return nil, nil, nil, err
	}
	return snap, versions, res, nil
}

func resourcesByHash(snap *cache.Snapshot) map[string]types.Resource {
	out := map[string]types.Resource{}
	for url, hashes := range snap.VersionMap {
		items := snap.GetResources(url)
		for name, h := range hashes {
			out[h] = items[name]
		}
	}
	return out
}

// upstreamEndpoints keeps the endpoints of the services the proxy calls: only those affect it.
// A transparent proxy calls every mesh service.
func upstreamEndpoints(p *model.Proxy, all map[model.Ref][]model.Endpoint) map[model.Ref][]model.Endpoint {
	if p.Workload.Transparent() {
		return all
	}
	out := map[model.Ref][]model.Endpoint{}
	for _, u := range p.Upstreams {
		ref := u.Service.Ref
		eps := slices.Clone(all[ref])
		slices.SortFunc(eps, func(a, b model.Endpoint) int { return cmp.Compare(a.Workload, b.Workload) })
		out[ref] = eps
	}
	return out
}

// endpointHashes hashes each service's endpoints once per reconcile, so a proxy's fingerprint
// names its upstreams' endpoints by hash instead of re-encoding them (a transparent proxy has
// every service as an upstream).
func endpointHashes(endpoints map[model.Ref][]model.Endpoint) map[model.Ref]string {
	out := make(map[model.Ref]string, len(endpoints))
	for ref, list := range endpoints {
		eps := slices.Clone(list)
		slices.SortFunc(eps, func(a, b model.Endpoint) int {
			return cmp.Or(cmp.Compare(a.Workload, b.Workload), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port), cmp.Compare(a.ServicePort, b.ServicePort))
		})
		b, err := json.Marshal(eps)
		if err != nil {
			continue // plain structs: cannot fail
		}
		sum := sha256.Sum256(b)
		out[ref] = hex.EncodeToString(sum[:12])
	}
	return out
}

// fingerprint identifies a proxy's translation inputs: the mesh version, its workload and
// identity, the endpoints of its upstreams and, for a transparent proxy, the ports it serves.
func fingerprint(p *model.Proxy, in translate.Input, hashes map[model.Ref]string) (string, error) {
	type inbound struct {
		Service       string
		Port, AppPort uint32
	}
	type key struct {
		Mesh      string
		Identity  string
		Workload  *model.WorkloadDoc
		Endpoints map[string]string
		Inbound   []inbound
	}
	eps := make(map[string]string, len(in.Endpoints))
	for ref := range in.Endpoints {
		eps[ref.String()] = hashes[ref]
	}
	k := key{Mesh: p.Mesh.Version, Identity: p.Identity.String(), Workload: p.Workload, Endpoints: eps}
	for _, ib := range in.Inbound {
		k.Inbound = append(k.Inbound, inbound{ib.Service.Ref.String(), ib.Port, ib.AppPort})
	}
	b, err := json.Marshal(k)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Resources returns the resources currently published for a node, by type URL (every type of
// TypeURLs), each sorted by name, for `portcullis proxy config`.
func (c *Controller) Resources(node string) (map[string][]types.Resource, error) {
	snap, err := c.cache.GetSnapshot(node)
	if err != nil {
		return nil, fmt.Errorf("snapshot: no configuration for node %q", node)
	}
	out := map[string][]types.Resource{}
	for _, url := range TypeURLs {
		items := snap.GetResources(url)
		names := slices.Sorted(maps.Keys(items))
		out[url] = make([]types.Resource, 0, len(names))
		for _, n := range names {
			out[url] = append(out[url], items[n])
		}
	}
	return out, nil
}
