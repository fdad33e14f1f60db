package translate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/portcullis/portcullis/xds/model"
)

// Names of clusters the agent's bootstrap defines statically; translated resources refer to them.
const (
	// SDSCluster serves the proxy's certificates from its agent over a unix socket.
	SDSCluster = "portcullis-sds"
	// XDSCluster is the control plane's ADS endpoint.
	XDSCluster = "portcullis-xds"
)

// Names of clusters the translator generates.
const (
	AuthzCluster   = "portcullis-authz"
	TracingCluster = "portcullis-otel"
)

// Options are the control-plane settings translation needs besides the mesh.
type Options struct {
	// AuthzAddress is host:port of the ext_authz service the inbound listeners call.
	AuthzAddress string
	// AuthzID is the SPIFFE ID proxies require of the authorization service (the control
	// plane's own, or that of separate `portcullis authz` replicas).
	AuthzID spiffeid.ID
	// JWKS gives a JWT provider's keys as Envoy verifies them (authz/jwt's EnvoyJWKS), or why it
	// cannot: where every provider of a service has them, Envoy verifies the service's tokens on
	// the routes it decides (engine auto). Nil leaves every token to the authorization service.
	JWKS func(*model.JWTProviderDoc) (string, error)
}

// Input is one resolved proxy plus what is known at runtime: which instances of each service are
// up.
type Input struct {
	Proxy *model.Proxy
	// Endpoints of each service, by namespace/name: connected instances, and on Kubernetes the
	// EndpointSlice addresses (not-ready ones marked, and left out of EDS).
	Endpoints map[model.Ref][]model.Endpoint
	// Inbound are the service ports a transparent proxy serves (Proxy.TransparentInbound),
	// sorted by application port. Local proxies ignore it.
	Inbound []model.Inbound
}

// Resources are the translated resources of one proxy, sorted by name. Listeners change only
// with ports and TLS; what policies change is in Routes (RDS: per-route authorization and rate
// limits) and Extensions (ECDS: the ext_authz filter's own settings), which Envoy applies to the
// next request on connections already open.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Extensions are the HTTP filter configurations listeners load over ECDS, named as the
	// filters that use them.
	Extensions []*corev3.TypedExtensionConfig
	// Sources maps each resource name to the documents it was built from (SourceName), so an
	// error Envoy reports about a resource can name the documents to fix and a document's status
	// can count the proxies it reaches. An inbound route also names the authorization policies
	// and JWT providers the authorization service applies to its requests.
	Sources map[string][]string
	// Authz says, under the mesh's engine auto, where the policies of each inbound route (by
	// name) are decided: in Envoy (RBAC) or by the authorization service, and why.
	Authz map[string]AuthzPlacement
}

// Translate builds the resources of one proxy. On any error it returns every error found and no
// resources.
func Translate(in Input, opts Options) (*Resources, error) {
	t := &translator{in: in, opts: opts, p: in.Proxy, res: &Resources{Sources: map[string][]string{}}}
	if t.p == nil || t.p.Mesh == nil || t.p.Workload == nil || (t.p.Service == nil && !t.p.Workload.Transparent()) {
		return nil, errors.New("translate: incomplete proxy (needs mesh context, workload and service; build it with model.NewProxy)")
	}
	if opts.AuthzAddress == "" || opts.AuthzID.IsZero() {
		return nil, errors.New("translate: options need the authorization service's address and SPIFFE ID")
	}
	if t.p.Workload.Transparent() {
		t.transparentInbound()
		t.transparentOutbound()
	} else {
		t.inbound()
		for _, u := range t.p.Upstreams {
			t.outbound(u)
		}
	}
	t.authzExtension()
	t.authzCluster()
	t.tracingCluster()
	if len(t.errs) > 0 {
		return nil, fmt.Errorf("translate: proxy %s: %w", t.p.NodeID, errors.Join(t.errs...))
	}
	t.sortAndValidate()
	if len(t.errs) > 0 {
		return nil, fmt.Errorf("translate: proxy %s: %w", t.p.NodeID, errors.Join(t.errs...))
	}
	return t.res, nil
}

type translator struct {
	in   Input
	opts Options
	p    *model.Proxy
	res  *Resources
	errs []error
	// inboundAuthz is set once an inbound connection manager has the ext_authz filter, which
	// then needs its ECDS resource and cluster (and the jwt_authn filter its resource).
	inboundAuthz bool
	// The jwt_authn filter's providers and requirements (by native route), and the documents
	// they come from (jwt.go).
	jwtProviders    map[string]*jwtauthnv3.JwtProvider
	jwtRequirements map[string]*jwtauthnv3.JwtRequirement
	jwtDocs         []model.Object
	// inboundServices are the destinations of this proxy's inbound connection managers, whose
	// documents say which headers the authorization service reads (authz_headers.go).
	inboundServices []*model.ResolvedService
}

func (t *translator) fail(format string, args ...any) {
	t.errs = append(t.errs, fmt.Errorf(format, args...))
}

// any packs a message, recording an error instead of returning it so builders stay linear.
func (t *translator) any(m proto.Message) *anypb.Any {
	a, err := Any(m)
	if err != nil {
		t.fail("%w", err)
	}
	return a
}

// Any packs a message deterministically: map entries in a fixed order, so equal configuration
// always has equal bytes and equal content-hash versions (anypb.New's random map order would
// make an unchanged listener look changed and be pushed again).
func Any(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("translate: packing %T: %w", m, err)
	}
	return a, nil
}

// SourceName names a document in Sources: "Kind/namespace/name" ("Mesh/name" for the Mesh).
func SourceName(o model.Object) string { return o.GetKind() + "/" + model.RefOf(o).String() }

// source records that resource name was built from the given documents.
func (t *translator) source(name string, docs ...model.Object) {
	for _, d := range docs {
		ref := SourceName(d)
		if !slices.Contains(t.res.Sources[name], ref) {
			t.res.Sources[name] = append(t.res.Sources[name], ref)
		}
	}
}

type validator interface{ ValidateAll() error }

func (t *translator) sortAndValidate() {
	slices.SortFunc(t.res.Listeners, func(a, b *listenerv3.Listener) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(t.res.Routes, func(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(t.res.Extensions, func(a, b *corev3.TypedExtensionConfig) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(t.res.Clusters, func(a, b *clusterv3.Cluster) int { return strings.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(t.res.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return strings.Compare(a.GetClusterName(), b.GetClusterName())
	})
	check := func(kind, name string, v validator) {
		if err := v.ValidateAll(); err != nil {
			t.fail("%s %q: %w", kind, name, err)
		}
	}
	for _, l := range t.res.Listeners {
		check("listener", l.GetName(), l)
	}
	for _, r := range t.res.Routes {
		check("route", r.GetName(), r)
	}
	for _, e := range t.res.Extensions {
		check("extension", e.GetName(), e)
	}
	for _, c := range t.res.Clusters {
		check("cluster", c.GetName(), c)
	}
	for _, e := range t.res.Endpoints {
		check("endpoints", e.GetClusterName(), e)
	}
}

// Resource names, documented in docs/xds.md.

// InboundListenerName is the inbound listener of a workload.
func InboundListenerName(port uint32) string { return "inbound|" + strconv.Itoa(int(port)) }

// InboundRouteName is the route configuration of one service port a proxy serves, by the port
// its application listens on.
func InboundRouteName(appPort uint32, svc model.Ref) string {
	return "inbound|" + strconv.Itoa(int(appPort)) + "|" + svc.Name + "." + svc.Namespace
}

// AppClusterName is the cluster of the workload's own application.
func AppClusterName(port uint32) string { return "inbound|" + strconv.Itoa(int(port)) + "|app" }

// OutboundListenerName is the local listener an application uses to reach an upstream.
func OutboundListenerName(localPort uint32, svc model.Ref) string {
	return "outbound|" + strconv.Itoa(int(localPort)) + "|" + svc.Name + "." + svc.Namespace
}

// TransparentOutboundListenerName is the listener a transparent proxy receives the
// workload's redirected outbound connections on.
func TransparentOutboundListenerName(port uint32) string {
	return "outbound|" + strconv.Itoa(int(port))
}

// PassthroughCluster forwards a connection to its original destination unchanged: traffic to
// anything that is not a mesh service.
const PassthroughCluster = "portcullis-passthrough"

// OutboundClusterName is the cluster of one port of an upstream service; its EDS resource has
// the same name.
func OutboundClusterName(svc model.Ref, port uint32) string {
	return "outbound|" + strconv.Itoa(int(port)) + "|" + svc.Name + "." + svc.Namespace
}
