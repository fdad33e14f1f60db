package model

import (
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Proxy is what the translator needs to configure one workload's Envoy: the workload, its
// service and identity, and the mesh they belong to. A Transparent workload may have no Service
// (a client that serves nothing). It is built per connected proxy from the
// mesh and the workload registration (a Workload document, or the agent's flags).
type Proxy struct {
	// NodeID is the Envoy node id: "<workload>.<namespace>".
	NodeID   string
	Workload *WorkloadDoc
	Service  *ServiceDoc
	Identity spiffeid.ID
	Mesh     *Mesh
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

// NewProxy resolves a workload (from the mesh or registered by an agent) against the mesh. A
// registration that does not fit the mesh — unknown service, service account or upstream — is
// an error naming the field, like a document problem.
func NewProxy(m *Mesh, w *WorkloadDoc) (*Proxy, error) {
	if errs := w.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("model: workload %s: %s: %s", NodeID(w), errs[0].Field, errs[0].Message)
	}
	w.setDefaults()
	ns := RefOf(w).Namespace
	if w.Transparent() && w.Spec.Service == "" {
		return &Proxy{NodeID: NodeID(w), Workload: w, Identity: WorkloadID(m.TrustDomain, ns, w.Spec.ServiceAccount), Mesh: m}, nil
	}
	svc := m.Service(ns, w.Spec.Service)
	if svc == nil {
		return nil, fmt.Errorf("model: workload %s: spec.service: Service %q not found in namespace %q", NodeID(w), w.Spec.Service, ns)
	}
	sa := w.Spec.ServiceAccount
	if sa == "" {
		sa = svc.Spec.ServiceAccounts[0]
	}
	if !slices.Contains(svc.Spec.ServiceAccounts, sa) {
		return nil, fmt.Errorf("model: workload %s: spec.serviceAccount: %q is not a service account of Service %q", NodeID(w), sa, svc.Metadata.Name)
	}
	if _, ok := svc.Port(w.ServedPort()); !ok && !w.Transparent() {
		return nil, fmt.Errorf("model: workload %s: spec.servicePort (or appPort): %d is not a port of Service %q", NodeID(w), w.ServedPort(), svc.Metadata.Name)
	}
	for i, u := range w.Spec.Upstreams {
		if _, _, err := m.ResolveUpstream(ns, u); err != nil {
			return nil, fmt.Errorf("model: workload %s: spec.upstreams[%d]: %w", NodeID(w), i, err)
		}
	}
	return &Proxy{NodeID: NodeID(w), Workload: w, Service: svc, Identity: WorkloadID(m.TrustDomain, ns, sa), Mesh: m}, nil
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

// ResolveUpstream finds the service and port an upstream of a workload in namespace ns names.
func (m *Mesh) ResolveUpstream(ns string, u Upstream) (*ServiceDoc, ServicePort, error) {
	uns, name, err := ParseServiceName(u.Service, ns)
	if err != nil {
		return nil, ServicePort{}, err
	}
	svc := m.Service(uns, name)
	if svc == nil {
		return nil, ServicePort{}, fmt.Errorf("Service %q not found in namespace %q", name, uns)
	}
	if u.Port == 0 {
		if len(svc.Spec.Ports) != 1 {
			return nil, ServicePort{}, fmt.Errorf("port required: Service %q has %d ports", u.Service, len(svc.Spec.Ports))
		}
		return svc, svc.Spec.Ports[0], nil
	}
	p, ok := svc.Port(u.Port)
	if !ok {
		return nil, ServicePort{}, fmt.Errorf("%d is not a port of Service %q", u.Port, u.Service)
	}
	return svc, p, nil
}
