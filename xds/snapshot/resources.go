package snapshot

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/xds/translate"
)

// TypeURLs are the resource types a proxy's snapshot carries, in the order of Envoy's ADS
// sequencing (clusters, endpoints, listeners, then the routes and filter configurations the
// listeners name, which Envoy asks for once it has them). Consumers that list a proxy's
// resources use this order.
var TypeURLs = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.ExtensionConfigType}

// interner hands out one shared object per distinct resource content. A generation holds the
// resources of one reconcile; lookups fall back to the previous generation, so a resource that
// did not change keeps its object (and its place in memory) across reconciles.
type interner struct {
	mu        sync.Mutex
	prev, cur map[string]types.Resource
	// The names each distinct listener refers to, by its hash, kept like the resources: read from
	// its connection managers once, not in every snapshot that has it.
	refsPrev, refsCur map[string]listenerRefs
}

// listenerRefs are the route configurations (RDS) and HTTP filter configurations (ECDS) a
// listener names.
type listenerRefs struct{ routes, filters []string }

func newInterner() *interner {
	return &interner{prev: map[string]types.Resource{}, cur: map[string]types.Resource{},
		refsPrev: map[string]listenerRefs{}, refsCur: map[string]listenerRefs{}}
}

// next starts a new generation; resources not used since the previous call are released.
func (in *interner) next() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.prev, in.cur = in.cur, make(map[string]types.Resource, len(in.cur))
	in.refsPrev, in.refsCur = in.refsCur, make(map[string]listenerRefs, len(in.refsCur))
}

func (in *interner) intern(hash string, r types.Resource) types.Resource {
	in.mu.Lock()
	defer in.mu.Unlock()
	if got, ok := in.cur[hash]; ok {
		return got
	}
	if got, ok := in.prev[hash]; ok {
		in.cur[hash] = got
		if refs, ok := in.refsPrev[hash]; ok {
			in.refsCur[hash] = refs
		}
		return got
	}
	in.cur[hash] = r
	return r
}

// refs returns the names the listener with the given hash refers to.
func (in *interner) refs(hash string, l *listenerv3.Listener) listenerRefs {
	in.mu.Lock()
	refs, ok := in.refsCur[hash]
	in.mu.Unlock()
	if ok {
		return refs
	}
	for _, chain := range append(l.GetFilterChains(), l.GetDefaultFilterChain()) {
		for _, f := range chain.GetFilters() {
			hcm := resource.GetHTTPConnectionManager(f)
			if name := hcm.GetRds().GetRouteConfigName(); name != "" {
				refs.routes = append(refs.routes, name)
			}
			for _, hf := range hcm.GetHttpFilters() {
				if hf.GetConfigDiscovery() != nil {
					refs.filters = append(refs.filters, hf.GetName())
				}
			}
		}
	}
	in.mu.Lock()
	in.refsCur[hash] = refs
	in.mu.Unlock()
	return refs
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// hashResource returns a content hash of a resource (type and bytes).
func hashResource(r types.Resource) (string, error) {
	b, err := deterministic.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("snapshot: hashing %s: %w", cache.GetResourceName(r), err)
	}
	sum := sha256.Sum256(append([]byte(r.ProtoReflect().Descriptor().FullName()+"\x00"), b...))
	return hex.EncodeToString(sum[:12]), nil
}

// build turns translated resources into a snapshot: each resource interned by content hash, each
// type versioned by the hash of its resources' names and hashes, the per-resource version map
// (delta xDS) filled from the same hashes, and the whole checked for consistency.
func (in *interner) build(res *translate.Resources) (*cache.Snapshot, map[string]string, error) {
	byType := map[string][]types.Resource{
		resource.ClusterType:         asResources(res.Clusters),
		resource.EndpointType:        asResources(res.Endpoints),
		resource.ListenerType:        asResources(res.Listeners),
		resource.RouteType:           asResources(res.Routes),
		resource.ExtensionConfigType: asResources(res.Extensions),
	}
	snap := &cache.Snapshot{VersionMap: map[string]map[string]string{}}
	versions := map[string]string{}
	for _, url := range TypeURLs {
		items := byType[url]
		hashes := make(map[string]string, len(items))
		shared := make([]types.Resource, len(items))
		for i, r := range items {
			h, err := hashResource(r)
			if err != nil {
				return nil, nil, err
			}
			name := cache.GetResourceName(r)
			if _, dup := hashes[name]; dup {
				return nil, nil, fmt.Errorf("snapshot: two %s resources named %q", url, name)
			}
			hashes[name] = h
			shared[i] = in.intern(h, r)
		}
		version := typeVersion(hashes)
		snap.Resources[cache.GetResponseType(url)] = cache.NewResources(version, shared)
		snap.VersionMap[url] = hashes
		versions[url] = version
	}
	if err := in.consistent(byType, snap.VersionMap); err != nil {
		return nil, nil, fmt.Errorf("snapshot: inconsistent: %w", err)
	}
	return snap, versions, nil
}

// consistent checks that the resources named by others are exactly those of the snapshot: the
// endpoints of every EDS cluster, the route configuration (RDS) and HTTP filter configurations
// (ECDS) of every listener — one missing would keep its cluster or listener warming — and no
// resource of those types that nothing names. It is go-control-plane's Snapshot.Consistent plus
// ECDS, reading the connection managers of each distinct listener once. present holds the names
// and hashes of each type's resources.
func (in *interner) consistent(byType map[string][]types.Resource, present map[string]map[string]string) error {
	named := map[string]map[string]string{resource.EndpointType: {}, resource.RouteType: {}, resource.ExtensionConfigType: {}} // name → by whom
	for _, r := range byType[resource.ClusterType] {
		if c, ok := r.(*clusterv3.Cluster); ok && c.GetType() == clusterv3.Cluster_EDS {
			named[resource.EndpointType][cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.GetName())] = "cluster " + c.GetName()
		}
	}
	for _, r := range byType[resource.ListenerType] {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			continue
		}
		refs := in.refs(present[resource.ListenerType][l.GetName()], l)
		for _, name := range refs.routes {
			named[resource.RouteType][name] = "listener " + l.GetName()
		}
		for _, name := range refs.filters {
			named[resource.ExtensionConfigType][name] = "listener " + l.GetName()
		}
	}
	for _, url := range TypeURLs {
		refs, checked := named[url]
		if !checked {
			continue
		}
		for name, by := range refs {
			if _, ok := present[url][name]; !ok {
				return fmt.Errorf("%s names %s %q, which is not in the snapshot", by, shortType(url), name)
			}
		}
		for name := range present[url] {
			if _, ok := refs[name]; !ok {
				return fmt.Errorf("%s %q is named by no resource", shortType(url), name)
			}
		}
	}
	return nil
}

// typeVersion hashes a type's resource names and hashes; an empty type has version "empty" so
// that a proxy can still ACK it.
func typeVersion(hashes map[string]string) string {
	if len(hashes) == 0 {
		return "empty"
	}
	names := make([]string, 0, len(hashes))
	for n := range hashes {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(hashes[n]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func asResources[T types.Resource](list []T) []types.Resource {
	out := make([]types.Resource, len(list))
	for i, r := range list {
		out[i] = r
	}
	return out
}
