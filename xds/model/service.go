package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Protocol is the application protocol of a service port.
// +kubebuilder:validation:Enum=HTTP;HTTP2;GRPC
type Protocol string

// The protocols a service port may speak.
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
	// spiffe://<td>/ns/<namespace>/sa/<account>. Defaults to the service's name (on Kubernetes:
	// the service accounts of the pods behind the Kubernetes Service of the same name).
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// Ports the service's application serves.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Ports []ServicePort `json:"ports"`
	// Addresses are virtual IPs clients use to reach the service (on Kubernetes, the Service's
	// cluster IPs); transparent proxies route connections to them to the service.
	// +kubebuilder:validation:MaxItems=8
	// +listType=set
	Addresses []string `json:"addresses,omitempty"`
	// CORS lets scripts on other origins call the service from a browser (Envoy's CORS filter,
	// before authorization); without it browsers keep their same-origin rule.
	CORS *CORSPolicy `json:"cors,omitempty"`
}

// ServicePort is one port the service's application serves.
type ServicePort struct {
	// Name is a DNS label unique within the service.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Port is the port number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port uint32 `json:"port"`
	// Protocol is HTTP (default), HTTP2 or GRPC.
	Protocol Protocol `json:"protocol,omitempty"`
}

// GetKind implements Object.
func (d *ServiceDoc) GetKind() string { return KindService }

// GetMeta implements Object.
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
	addrs := map[netip.Addr]bool{}
	for i, a := range d.Spec.Addresses {
		ap := p.Field("addresses").Index(i)
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Zone() != "" {
			errs.Addf(ap, "must be an IP address, not %q", a)
			continue
		}
		if addrs[ip] {
			errs.Addf(ap, "duplicate address %q", a)
		}
		addrs[ip] = true
	}
	if d.Spec.CORS != nil {
		d.Spec.CORS.validate(&errs, p.Field("cors"))
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
	if c := d.Spec.CORS; c != nil && len(c.AllowMethods) == 0 {
		c.AllowMethods = slices.Clone(DefaultCORSMethods)
	}
}

func validatePort(errs *FieldErrors, p Path, port uint32) {
	if port < 1 || port > 65535 {
		errs.Addf(p, "must be a port number 1-65535, not %d", port)
	}
}

// WorkloadMode says how a workload's traffic reaches its proxy.
// +kubebuilder:validation:Enum=Local;Transparent
type WorkloadMode string

const (
	// ModeLocal means the application calls upstreams on local ports, mesh traffic arrives on the
	// proxy's inbound port (the default).
	ModeLocal WorkloadMode = "Local"
	// ModeTransparent means iptables redirects the workload's TCP to its proxy (inbound to
	// inboundPort, outbound to outboundPort), so applications need no change.
	ModeTransparent WorkloadMode = "Transparent"
)

// Ports of a transparent proxy, the ones the injector's iptables rules redirect to.
const (
	DefaultTransparentInboundPort  = 15006
	DefaultTransparentOutboundPort = 15001
)

// Transparent reports whether the workload runs in Transparent mode.
func (w *WorkloadDoc) Transparent() bool { return w.Spec.Mode == ModeTransparent }

// ServedPort is the service port a local workload serves: servicePort, or appPort when unset.
func (w *WorkloadDoc) ServedPort() uint32 { return cmpOr(w.Spec.ServicePort, w.Spec.AppPort) }

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
	// Mode is Local (default: an inbound listener on address:inboundPort, upstreams on local
	// ports) or Transparent (the workload's traffic is redirected to its proxy by iptables:
	// inbound on inboundPort, 15006 unless set, for every service port it serves; outbound on
	// outboundPort, 15001 unless set, to every mesh service by virtual IP or host name).
	Mode WorkloadMode `json:"mode,omitempty"`
	// Service is the name of the Service (in the workload's namespace) this instance belongs to.
	// Required in Local mode; in Transparent mode a workload may serve no service (a client), or
	// the services whose endpoints name it.
	// +kubebuilder:validation:MaxLength=63
	Service string `json:"service,omitempty"`
	// ServiceAccount the workload runs as; one of the service's. Defaults to its first.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Address is the IP the workload's proxy accepts mesh traffic on. 127.0.0.1 unless set.
	Address string `json:"address,omitempty"`
	// InboundPort is the port of the proxy's inbound (mesh) listener (Transparent: 15006 unless
	// set).
	// +kubebuilder:validation:Maximum=65535
	InboundPort uint32 `json:"inboundPort,omitempty"`
	// OutboundPort is where a transparent proxy receives the workload's redirected outbound
	// connections. 15001 unless set; Transparent mode only.
	// +kubebuilder:validation:Maximum=65535
	OutboundPort uint32 `json:"outboundPort,omitempty"`
	// AppPort is the port the application listens on, on 127.0.0.1. Local mode only: a
	// transparent proxy serves every port of its services.
	// +kubebuilder:validation:Maximum=65535
	AppPort uint32 `json:"appPort,omitempty"`
	// ServicePort is the port of the service the workload serves, when it is not the
	// application's: instances of one service on one machine each need their own application
	// port. appPort unless set; Local mode only.
	// +kubebuilder:validation:Maximum=65535
	ServicePort uint32 `json:"servicePort,omitempty"`
	// Upstreams the application calls, each through a local port on 127.0.0.1. Local mode only.
	// +kubebuilder:validation:MaxItems=256
	Upstreams []Upstream `json:"upstreams,omitempty"`
}

// Upstream is a service the workload calls through a local outbound listener.
type Upstream struct {
	// Service is "name" (same namespace) or "name.namespace".
	Service string `json:"service"`
	// Port selects the upstream service port by number; required when it has several.
	// +kubebuilder:validation:Maximum=65535
	Port uint32 `json:"port,omitempty"`
	// LocalPort is where the application connects, on 127.0.0.1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	LocalPort uint32 `json:"localPort"`
}

// GetKind implements Object.
func (w *WorkloadDoc) GetKind() string { return KindWorkload }

// GetMeta implements Object.
func (w *WorkloadDoc) GetMeta() *ObjectMeta { return &w.Metadata }

// Validate checks the Workload document on its own.
func (w *WorkloadDoc) Validate() FieldErrors {
	var errs FieldErrors
	w.Metadata.validate(&errs, true)
	s, p := &w.Spec, Path("spec")
	switch s.Mode {
	case "", ModeLocal, ModeTransparent:
	default:
		errs.Addf(p.Field("mode"), "must be Local or Transparent, not %q", s.Mode)
	}
	if s.Address != "" {
		if _, err := netip.ParseAddr(s.Address); err != nil {
			errs.Addf(p.Field("address"), "must be an IP address, not %q", s.Address)
		}
	}
	if s.ServiceAccount != "" {
		validateDNSLabel(&errs, p.Field("serviceAccount"), s.ServiceAccount)
	}
	if w.Transparent() {
		w.validateTransparent(&errs, p)
		return errs
	}
	validateDNSLabel(&errs, p.Field("service"), s.Service)
	if s.OutboundPort != 0 {
		errs.Addf(p.Field("outboundPort"), "applies to Transparent mode only")
	}
	validatePort(&errs, p.Field("inboundPort"), s.InboundPort)
	validatePort(&errs, p.Field("appPort"), s.AppPort)
	if s.ServicePort != 0 {
		validatePort(&errs, p.Field("servicePort"), s.ServicePort)
	}
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

// validateTransparent checks a Transparent workload: its service is optional (a client serves
// none), it has no app port or upstreams (every port and every mesh service is reachable), and
// its proxy's two ports differ.
func (w *WorkloadDoc) validateTransparent(errs *FieldErrors, p Path) {
	s := &w.Spec
	if s.Service != "" {
		validateDNSLabel(errs, p.Field("service"), s.Service)
	} else if s.ServiceAccount == "" {
		errs.Addf(p.Field("serviceAccount"), "required when a Transparent workload names no service")
	}
	if s.AppPort != 0 {
		errs.Addf(p.Field("appPort"), "applies to Local mode only: a transparent proxy serves every port of its services")
	}
	if s.ServicePort != 0 {
		errs.Addf(p.Field("servicePort"), "applies to Local mode only: a transparent proxy serves every port of its services")
	}
	if len(s.Upstreams) > 0 {
		errs.Addf(p.Field("upstreams"), "applies to Local mode only: a transparent proxy reaches every mesh service")
	}
	in, out := cmpOr(s.InboundPort, DefaultTransparentInboundPort), cmpOr(s.OutboundPort, DefaultTransparentOutboundPort)
	if s.InboundPort != 0 {
		validatePort(errs, p.Field("inboundPort"), s.InboundPort)
	}
	if s.OutboundPort != 0 {
		validatePort(errs, p.Field("outboundPort"), s.OutboundPort)
	}
	if in == out {
		errs.Addf(p.Field("outboundPort"), "must differ from inboundPort %d", in)
	}
}

func cmpOr(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

func (w *WorkloadDoc) setDefaults() {
	if w.Spec.Address == "" {
		w.Spec.Address = "127.0.0.1"
	}
	if w.Spec.Mode == "" {
		w.Spec.Mode = ModeLocal
	}
	if w.Transparent() {
		w.Spec.InboundPort = cmpOr(w.Spec.InboundPort, DefaultTransparentInboundPort)
		w.Spec.OutboundPort = cmpOr(w.Spec.OutboundPort, DefaultTransparentOutboundPort)
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
