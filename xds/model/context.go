package model

import (
	"cmp"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MeshContext is what every proxy of one mesh version shares, resolved once: each service with
// its SPIFFE IDs and the rate limits that select it (Kuma's MeshContext). The snapshot controller
// builds one per reconcile; proxies (NewProxy) point into it and the translator only reads it, so
// a thousand proxies do not each search the mesh for the same policies. Like the Mesh it comes
// from, it never changes once built.
type MeshContext struct {
	// Version is the mesh's content hash.
	Version     string
	TrustDomain spiffeid.TrustDomain
	// Config is the Mesh document (mTLS, authorization and tracing settings).
	Config *MeshDoc
	// Services are every service of the mesh, sorted by namespace and name.
	Services []*ResolvedService
	// RootNamespace holds the mesh-wide documents (Mesh.RootNamespace).
	RootNamespace string

	byRef map[Ref]*ResolvedService
}

// ResolvedService is a Service document with what the mesh says about it elsewhere.
type ResolvedService struct {
	Doc *ServiceDoc
	Ref Ref
	// IDs are the SPIFFE IDs its workloads run as, one per service account: what its callers
	// require of it.
	IDs []spiffeid.ID
	// RateLimits are the limits of every RateLimitPolicy selecting the service, policy by policy
	// (sorted by name) and in document order within one, each with its policy's settings.
	RateLimits []ResolvedRateLimit
	// RateLimitPolicies are the policies RateLimits came from.
	RateLimitPolicies []*RateLimitPolicyDoc
	// AuthorizationPolicies are the policies the authorization service applies to requests for
	// the service: those selecting it, and those without a selector in its namespace or the root
	// namespace; sorted by namespace and name.
	AuthorizationPolicies []*AuthorizationPolicyDoc
	// JWTProviders are the providers that verify tokens of requests for the service (and refuse
	// invalid ones): those of its namespace and of the root namespace, sorted likewise.
	JWTProviders []*JWTProviderDoc
	// APIKeyProviders likewise verify API keys of requests for the service.
	APIKeyProviders []*APIKeyProviderDoc
	// CredentialRevocations are the revocations that govern the tokens those providers verify:
	// those of its namespace and of the root namespace.
	CredentialRevocations []*CredentialRevocationDoc
}

// NewMeshContext resolves what the proxies of m share.
func NewMeshContext(m *Mesh) *MeshContext {
	mc := &MeshContext{
		Version: m.Version, TrustDomain: m.TrustDomain, Config: m.Config, RootNamespace: m.RootNamespace(),
		Services: make([]*ResolvedService, len(m.Services)),
		byRef:    make(map[Ref]*ResolvedService, len(m.Services)),
	}
	for i, doc := range m.Services {
		s := &ResolvedService{Doc: doc, Ref: RefOf(doc), IDs: m.ServiceIDs(doc)}
		mc.Services[i] = s
		mc.byRef[s.Ref] = s
	}
	for _, pol := range m.RateLimitPolicies {
		s := mc.byRef[Ref{Namespace: RefOf(pol).Namespace, Name: pol.Spec.Selector.Service}]
		if s == nil {
			continue // Build checked the selector; unreachable
		}
		for _, l := range pol.Spec.Limits {
			s.RateLimits = append(s.RateLimits, ResolvedRateLimit{RateLimit: l, FailureMode: pol.Spec.FailureMode, TrustedProxyHops: pol.Spec.TrustedProxyHops})
		}
		s.RateLimitPolicies = append(s.RateLimitPolicies, pol)
	}
	for _, pol := range m.AuthorizationPolicies {
		ns := RefOf(pol).Namespace
		if pol.Spec.Selector != nil {
			if s := mc.byRef[Ref{Namespace: ns, Name: pol.Spec.Selector.Service}]; s != nil {
				s.AuthorizationPolicies = append(s.AuthorizationPolicies, pol)
			}
			continue
		}
		for _, s := range mc.Services {
			if m.Reaches(ns, s.Ref.Namespace) {
				s.AuthorizationPolicies = append(s.AuthorizationPolicies, pol)
			}
		}
	}
	for _, p := range m.JWTProviders {
		for _, s := range mc.Services {
			if m.Reaches(RefOf(p).Namespace, s.Ref.Namespace) {
				s.JWTProviders = append(s.JWTProviders, p)
			}
		}
	}
	for _, d := range m.CredentialRevocations {
		for _, s := range mc.Services {
			if m.Reaches(RefOf(d).Namespace, s.Ref.Namespace) {
				s.CredentialRevocations = append(s.CredentialRevocations, d)
			}
		}
	}
	for _, p := range m.APIKeyProviders {
		for _, s := range mc.Services {
			if m.Reaches(RefOf(p).Namespace, s.Ref.Namespace) {
				s.APIKeyProviders = append(s.APIKeyProviders, p)
			}
		}
	}
	return mc
}

// Service returns the service ref names, or nil.
func (mc *MeshContext) Service(ref Ref) *ResolvedService { return mc.byRef[ref] }

// Port returns the service port with the given number.
func (s *ResolvedService) Port(n uint32) (ServicePort, bool) { return s.Doc.Port(n) }

// HTTP2 reports whether a port of the service speaks HTTP/2 to its application (HTTP2 or GRPC).
func (s *ResolvedService) HTTP2(port uint32) bool {
	p, _ := s.Port(port)
	return p.Protocol == ProtocolHTTP2 || p.Protocol == ProtocolGRPC
}

// Inbound is one service port a transparent proxy serves, and the port its application listens
// on for it (the Kubernetes targetPort).
type Inbound struct {
	Service *ResolvedService
	Port    uint32
	AppPort uint32
}

// TransparentInbound returns the service ports a transparent proxy serves: every port of its
// own Service (the application listening on the same port), and every service port whose
// endpoints name the proxy (Kubernetes EndpointSlices: the application port is the endpoint's,
// the targetPort), ready or not — a pod's proxy must serve before the pod is ready, or its
// readiness probe could never pass. Sorted by application port, then service.
func (p *Proxy) TransparentInbound(endpoints map[Ref][]Endpoint) []Inbound {
	var out []Inbound
	type key struct {
		svc       Ref
		port, app uint32
	}
	seen := map[key]bool{}
	add := func(svc *ResolvedService, port, app uint32) {
		if k := (key{svc.Ref, port, app}); !seen[k] {
			seen[k] = true
			out = append(out, Inbound{Service: svc, Port: port, AppPort: app})
		}
	}
	if p.Service != nil {
		for _, sp := range p.Service.Doc.Spec.Ports {
			add(p.Service, sp.Port, sp.Port)
		}
	}
	for ref, eps := range endpoints {
		svc := p.Mesh.Service(ref)
		if svc == nil {
			continue
		}
		for _, ep := range eps {
			if _, ok := svc.Port(ep.ServicePort); ok && ep.Workload == p.NodeID {
				add(svc, ep.ServicePort, ep.Port)
			}
		}
	}
	slices.SortFunc(out, func(a, b Inbound) int {
		return cmp.Or(cmp.Compare(a.AppPort, b.AppPort), compareRef(a.Service.Ref, b.Service.Ref), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// JWTProvider returns the provider that a from.jwt of a policy in namespace ns names, among those
// that verify tokens for the service (the rule of Mesh.JWTProvider); nil when none of them has
// the name, so no token the service sees was verified by it.
func (s *ResolvedService) JWTProvider(ns, root, name string) *JWTProviderDoc {
	var found *JWTProviderDoc
	resolveProvider(ns, root, name, func(r Ref) bool {
		i := slices.IndexFunc(s.JWTProviders, func(p *JWTProviderDoc) bool { return RefOf(p) == r })
		if i >= 0 {
			found = s.JWTProviders[i]
		}
		return i >= 0
	})
	return found
}
