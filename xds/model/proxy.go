package model

import (
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Proxy is everything the translator needs to configure one workload's Envoy, resolved: the
// workload (defaulted), its service and identity, its upstreams' services and ports, and the
// mesh context every proxy shares. The translator reads it and looks nothing up in the mesh
// (Envoy Gateway's IR). A Transparent workload may have no Service (a client that serves
// nothing). It is built per connected proxy from the mesh context and the workload registration
// (a Workload document, or the agent's flags).
type Proxy struct {
	// NodeID is the Envoy node id: "<workload>.<namespace>".
	NodeID string
	// Workload is the proxy's own defaulted copy of the registration.
	Workload  *WorkloadDoc
	Service   *ResolvedService
	Identity  spiffeid.ID
	Upstreams []ResolvedUpstream
	Mesh      *MeshContext
}

// ResolvedUpstream is one upstream of a local workload: the service port it names and the local
// port the application calls it on.
type ResolvedUpstream struct {
	Service   *ResolvedService
	Port      ServicePort
	LocalPort uint32
}

// Endpoint is one reachable instance of a service port: a connected workload's inbound
// listener, which forwards to the service port its application serves.
type Endpoint struct {
	Address     string `json:"address"`
	Port        uint32 `json:"port"`        // the proxy's inbound port
	ServicePort uint32 `json:"servicePort"` // the application port behind it
	Workload    string `json:"workload"`    // node id of the instance
	// NotReady marks an instance that is known but not ready (a Kubernetes endpoint whose pod
	// is starting or failing its readiness probe): it receives no traffic from other proxies,
	// but its own transparent proxy already serves the port, so the probes can pass.
	NotReady bool `json:"notReady,omitempty"`
}

// NodeID returns the Envoy node id of a workload: "<name>.<namespace>".
func NodeID(w *WorkloadDoc) string {
	r := RefOf(w)
	return r.Name + "." + r.Namespace
}

// Workload returns the Workload document with the given node id, or nil.
func (m *Mesh) Workload(nodeID string) *WorkloadDoc { return m.workloadsByNode[nodeID] }

// NewProxy resolves a workload (from the mesh or registered by an agent) against the mesh
// context. A registration that does not fit the mesh — unknown service, service account or
// upstream — is an error naming the field, like a document problem. w is not modified: it may be
// a document of the mesh, which proxies translated on every core share.
func NewProxy(mc *MeshContext, w *WorkloadDoc) (*Proxy, error) {
	if errs := w.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("model: workload %s: %s: %s", NodeID(w), errs[0].Field, errs[0].Message)
	}
	own := *w
	own.setDefaults()
	w = &own
	ns := RefOf(w).Namespace
	p := &Proxy{NodeID: NodeID(w), Workload: w, Mesh: mc}
	if w.Transparent() && w.Spec.Service == "" {
		p.Identity = WorkloadID(mc.TrustDomain, ns, w.Spec.ServiceAccount)
		return p, nil
	}
	svc := mc.Service(Ref{Namespace: ns, Name: w.Spec.Service})
	if svc == nil {
		return nil, fmt.Errorf("model: workload %s: spec.service: Service %q not found in namespace %q", NodeID(w), w.Spec.Service, ns)
	}
	sa := w.Spec.ServiceAccount
	if sa == "" {
		sa = svc.Doc.Spec.ServiceAccounts[0]
	}
	if !slices.Contains(svc.Doc.Spec.ServiceAccounts, sa) {
		return nil, fmt.Errorf("model: workload %s: spec.serviceAccount: %q is not a service account of Service %q", NodeID(w), sa, svc.Ref.Name)
	}
	if _, ok := svc.Port(w.ServedPort()); !ok && !w.Transparent() {
		return nil, fmt.Errorf("model: workload %s: spec.servicePort (or appPort): %d is not a port of Service %q", NodeID(w), w.ServedPort(), svc.Ref.Name)
	}
	p.Service, p.Identity = svc, WorkloadID(mc.TrustDomain, ns, sa)
	for i, u := range w.Spec.Upstreams {
		up, err := mc.resolveUpstream(ns, u)
		if err != nil {
			return nil, fmt.Errorf("model: workload %s: spec.upstreams[%d]: %w", NodeID(w), i, err)
		}
		p.Upstreams = append(p.Upstreams, up)
	}
	return p, nil
}

// Port returns the service port with the given number.
func (s *ServiceDoc) Port(n uint32) (ServicePort, bool) {
	for _, p := range s.Spec.Ports {
		if p.Port == n {
			return p, true
		}
	}
	return ServicePort{}, false
}

// resolveUpstream finds the service and port an upstream of a workload in namespace ns names.
func (mc *MeshContext) resolveUpstream(ns string, u Upstream) (ResolvedUpstream, error) {
	uns, name, err := ParseServiceName(u.Service, ns)
	if err != nil {
		return ResolvedUpstream{}, err
	}
	svc := mc.Service(Ref{Namespace: uns, Name: name})
	if svc == nil {
		return ResolvedUpstream{}, fmt.Errorf("Service %q not found in namespace %q", name, uns)
	}
	ports := svc.Doc.Spec.Ports
	if u.Port == 0 {
		if len(ports) != 1 {
			return ResolvedUpstream{}, fmt.Errorf("port required: Service %q has %d ports", u.Service, len(ports))
		}
		return ResolvedUpstream{Service: svc, Port: ports[0], LocalPort: u.LocalPort}, nil
	}
	p, ok := svc.Port(u.Port)
	if !ok {
		return ResolvedUpstream{}, fmt.Errorf("%d is not a port of Service %q", u.Port, u.Service)
	}
	return ResolvedUpstream{Service: svc, Port: p, LocalPort: u.LocalPort}, nil
}
