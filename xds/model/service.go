package model

import (
	"fmt"
	"net/netip"
	"strings"
)

// Protocol is the application protocol of a service port.
// +kubebuilder:validation:Enum=HTTP;HTTP2;GRPC
type Protocol string

const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTP2 Protocol = "HTTP2"
	ProtocolGRPC  Protocol = "GRPC"
)

// ServiceDoc declares a service: a set of workloads with the same identities and ports.
type ServiceDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     ServiceSpec `json:"spec"`
}

// ServiceSpec describes a service.
type ServiceSpec struct {
	// ServiceAccounts its workloads run as; each gives one SPIFFE ID
	// spiffe://<td>/ns/<namespace>/sa/<account>. Defaults to the service's name.
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// Ports the service's application serves.
	// +kubebuilder:validation:MinItems=1
	Ports []ServicePort `json:"ports"`
}

// ServicePort is one port the service's application serves.
type ServicePort struct {
	// Name is a DNS label unique within the service.
	Name string `json:"name"`
	// Port is the port number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port uint32 `json:"port"`
	// Protocol is HTTP (default), HTTP2 or GRPC.
	Protocol Protocol `json:"protocol,omitempty"`
}

func (d *ServiceDoc) GetKind() string      { return KindService }
func (d *ServiceDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the Service document on its own.
func (d *ServiceDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	p := Path("spec")
	seen := map[string]bool{}
	for i, sa := range d.Spec.ServiceAccounts {
		sp := p.Field("serviceAccounts").Index(i)
		validateDNSLabel(&errs, sp, sa)
		if seen[sa] {
			errs.Addf(sp, "duplicate service account %q", sa)
		}
		seen[sa] = true
	}
	if len(d.Spec.Ports) == 0 {
		errs.Addf(p.Field("ports"), "at least one port is required")
	}
	names, numbers := map[string]bool{}, map[uint32]bool{}
	for i, port := range d.Spec.Ports {
		pp := p.Field("ports").Index(i)
		validateDNSLabel(&errs, pp.Field("name"), port.Name)
		if names[port.Name] {
			errs.Addf(pp.Field("name"), "duplicate port name %q", port.Name)
		}
		names[port.Name] = true
		validatePort(&errs, pp.Field("port"), port.Port)
		if numbers[port.Port] {
			errs.Addf(pp.Field("port"), "duplicate port %d", port.Port)
		}
		numbers[port.Port] = true
		switch port.Protocol {
		case "", ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC:
		default:
			errs.Addf(pp.Field("protocol"), "must be HTTP, HTTP2 or GRPC, not %q", port.Protocol)
		}
	}
	return errs
}

func (d *ServiceDoc) setDefaults() {
	if len(d.Spec.ServiceAccounts) == 0 {
		d.Spec.ServiceAccounts = []string{d.Metadata.Name}
	}
	for i := range d.Spec.Ports {
		if d.Spec.Ports[i].Protocol == "" {
			d.Spec.Ports[i].Protocol = ProtocolHTTP
		}
	}
}

func validatePort(errs *FieldErrors, p Path, port uint32) {
	if port < 1 || port > 65535 {
		errs.Addf(p, "must be a port number 1-65535, not %d", port)
	}
}

// WorkloadDoc registers one instance of a service in local mode: where its proxy listens for mesh
// traffic, where its application listens, and which upstream services it calls through which
// local ports. On Kubernetes, pods play this role and no Workload documents are needed.
type WorkloadDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta   `json:"metadata"`
	Spec     WorkloadSpec `json:"spec"`
}

// WorkloadSpec describes one workload instance.
type WorkloadSpec struct {
	// Service is the name of the Service (in the workload's namespace) this instance belongs to.
	Service string `json:"service"`
	// ServiceAccount the workload runs as; one of the service's. Defaults to its first.
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Address is the IP the workload's proxy accepts mesh traffic on. 127.0.0.1 unless set.
	Address string `json:"address,omitempty"`
	// InboundPort is the port of the proxy's inbound (mesh) listener.
	InboundPort uint32 `json:"inboundPort"`
	// AppPort is the port the application listens on, on 127.0.0.1; it must be one of the
	// service's ports.
	AppPort uint32 `json:"appPort"`
	// Upstreams the application calls, each through a local port on 127.0.0.1.
	Upstreams []Upstream `json:"upstreams,omitempty"`
}

// Upstream is a service the workload calls through a local outbound listener.
type Upstream struct {
	// Service is "name" (same namespace) or "name.namespace".
	Service string `json:"service"`
	// Port selects the upstream service port by number; required when it has several.
	Port uint32 `json:"port,omitempty"`
	// LocalPort is where the application connects, on 127.0.0.1.
	LocalPort uint32 `json:"localPort"`
}

func (d *WorkloadDoc) GetKind() string      { return KindWorkload }
func (d *WorkloadDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the Workload document on its own.
func (d *WorkloadDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	s, p := &d.Spec, Path("spec")
	validateDNSLabel(&errs, p.Field("service"), s.Service)
	if s.ServiceAccount != "" {
		validateDNSLabel(&errs, p.Field("serviceAccount"), s.ServiceAccount)
	}
	if s.Address != "" {
		if _, err := netip.ParseAddr(s.Address); err != nil {
			errs.Addf(p.Field("address"), "must be an IP address, not %q", s.Address)
		}
	}
	validatePort(&errs, p.Field("inboundPort"), s.InboundPort)
	validatePort(&errs, p.Field("appPort"), s.AppPort)
	if s.InboundPort == s.AppPort && s.AppPort != 0 && (s.Address == "" || s.Address == "127.0.0.1") {
		errs.Addf(p.Field("appPort"), "must differ from inboundPort %d", s.InboundPort)
	}
	local := map[uint32]Path{}
	for i, u := range s.Upstreams {
		up := p.Field("upstreams").Index(i)
		if _, _, err := ParseServiceName(u.Service, "x"); err != nil {
			errs.Addf(up.Field("service"), "%v", err)
		}
		if u.Port != 0 {
			validatePort(&errs, up.Field("port"), u.Port)
		}
		validatePort(&errs, up.Field("localPort"), u.LocalPort)
		if prev, ok := local[u.LocalPort]; ok && u.LocalPort != 0 {
			errs.Addf(up.Field("localPort"), "port %d is already used by %s", u.LocalPort, prev)
		}
		if u.LocalPort == s.AppPort || u.LocalPort == s.InboundPort {
			errs.Addf(up.Field("localPort"), "port %d collides with the workload's appPort or inboundPort", u.LocalPort)
		}
		local[u.LocalPort] = up.Field("localPort")
	}
	return errs
}

func (d *WorkloadDoc) setDefaults() {
	if d.Spec.Address == "" {
		d.Spec.Address = "127.0.0.1"
	}
}

// ParseServiceName splits "name" or "name.namespace" (as written in upstream and selector
// fields) into namespace and name, defaulting the namespace to defaultNS.
func ParseServiceName(s, defaultNS string) (namespace, name string, err error) {
	name, namespace, found := strings.Cut(s, ".")
	if !found {
		namespace = defaultNS
	}
	for _, part := range []string{name, namespace} {
		if part == "" || len(part) > 63 || !dns1123Label.MatchString(part) {
			return "", "", fmt.Errorf("%q is not a service name (\"name\" or \"name.namespace\", DNS labels)", s)
		}
	}
	return namespace, name, nil
}
