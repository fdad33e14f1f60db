package inject

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/portcullis/portcullis/xds/inject/redirect"
)

// Ports and identities of the injected proxy, documented in docs/kubernetes.md.
const (
	InboundPort    = redirect.InboundPort
	OutboundPort   = redirect.OutboundPort
	AgentAdminPort = redirect.AgentAdminPort // the agent's /healthz, /readyz, /metrics, application probes
	EnvoyAdminPort = 15000                   // Envoy's admin, on 127.0.0.1 only
	ProxyUID       = redirect.ProxyUID
)

// Names of what the injector adds.
const (
	InitContainerName  = "portcullis-init"
	ProxyContainerName = "portcullis-proxy"
	SocketVolume       = "portcullis-socket"
	TokenVolume        = "portcullis-token"
	SocketDir          = "/var/run/portcullis"
	TokenDir           = "/var/run/secrets/portcullis"
	TokenFile          = TokenDir + "/token"
)

// Pod annotations that adjust the redirection (comma-separated lists).
const (
	AnnotationExcludeInboundPorts  = "portcullis.dev/exclude-inbound-ports"
	AnnotationExcludeOutboundPorts = "portcullis.dev/exclude-outbound-ports"
	AnnotationExcludeOutboundCIDRs = "portcullis.dev/exclude-outbound-cidrs"
)

// Config is what the injector puts into pods.
type Config struct {
	// Image holds the portcullis binary (agent, init-iptables) and Envoy.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// EnvoyPath inside the image.
	EnvoyPath string
	// ControlPlane is the agents' xDS/CA address (host:port), e.g.
	// portcullis-controlplane.portcullis-system.svc:15010.
	ControlPlane string
	// TrustDomain of the mesh.
	TrustDomain string
	// Pins returns the "sha256:<hex>" pins of the current trust bundle's roots, with which the
	// agent verifies the control plane on first contact.
	Pins func() []string
	// TokenExpirySeconds of the projected service-account token (the kubelet refreshes it). 3600
	// unless set; at least 600 (the API server's minimum).
	TokenExpirySeconds int64
	// ExcludeOutboundCIDRs are never redirected, for every pod (e.g. the API server's address).
	ExcludeOutboundCIDRs []string
	// ProxyResources of the sidecar. 100m CPU and 128Mi requested, 512Mi limit unless set.
	ProxyResources *corev1.ResourceRequirements
	// Version is written into the portcullis.dev/injected annotation.
	Version string
}

func (c *Config) validate() error {
	if c.Image == "" || c.ControlPlane == "" || c.TrustDomain == "" || c.Pins == nil {
		return errors.New("inject: image, control plane address, trust domain and pins are required")
	}
	for _, cidr := range c.ExcludeOutboundCIDRs {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			return fmt.Errorf("inject: exclude CIDR %q: %w", cidr, err)
		}
	}
	return nil
}

func (c *Config) resources() corev1.ResourceRequirements {
	if c.ProxyResources != nil {
		return *c.ProxyResources
	}
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	}
}

// reservedPorts are the ports the proxy listens on in the pod's network namespace.
var reservedPorts = []int32{OutboundPort, InboundPort, AgentAdminPort, EnvoyAdminPort}
