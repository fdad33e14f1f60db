package controlplane

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/authz/ratelimit"
	"github.com/portcullis/portcullis/telemetry"
)

// Default addresses (README.md and docs/architecture.md list them too). Everything binds to
// loopback unless told otherwise.
const (
	DefaultAdminAddr   = "127.0.0.1:15014"
	DefaultAuthzAddr   = "127.0.0.1:15011"
	DefaultWebhookAddr = "127.0.0.1:15017"
)

// Config is everything the control plane is started with; cmd/portcullis fills it from flags.
type Config struct {
	Version string
	Logger  *slog.Logger
	// Stdout receives the decision log when DecisionLog is "-" or "".
	Stdout io.Writer

	// ConfigDir holds the mesh documents (local mode); Kubernetes, when set, reads them from the
	// cluster instead. Exactly one of the two.
	ConfigDir  string
	Kubernetes *KubernetesConfig
	// DataDir holds the control plane's state: CA keys, used tokens, proxy registrations.
	DataDir string

	AdminAddr, XDSAddr, AuthzAddr string
	// AuthzAdvertiseAddr is the host:port proxies dial for this process's ext_authz service.
	// "" derives it: the bound address when it names a host, on Kubernetes the control plane's
	// Service (a listen address such as 0.0.0.0 would point every proxy at itself).
	AuthzAdvertiseAddr string
	// ExternalAuthz is the host:port of separate `portcullis authz` replicas proxies call instead
	// of this process (which then serves no ext_authz); ExternalAuthzID the identity they prove.
	ExternalAuthz   string
	ExternalAuthzID spiffeid.ID

	DecisionLog    string // a file (0600), or "-" for Stdout
	OTLPEndpoint   string // the control plane's spans; default the Mesh's collector when tracing is on
	OTLP           telemetry.ExportTLS
	JaegerQueryURL string // the admin port serves a trace browser over it on /traces
	CA             CAConfig
	// RateLimit is the Redis of the global rate limit service, served next to ext_authz (not with
	// ExternalAuthz: the external replicas serve it).
	RateLimit ratelimit.Redis
}

// CAConfig are the CA's settings.
type CAConfig struct {
	// CertFile and KeyFile are a user-provided signing CA (its chain up to the root first);
	// empty: a generated root.
	CertFile, KeyFile                 string
	RootTTL, IntermediateTTL, SVIDTTL time.Duration
}

// KubernetesConfig configures the control plane on Kubernetes.
type KubernetesConfig struct {
	Kubeconfig string // "" is the in-cluster configuration
	Namespace  string // the control plane's: Lease, CA Secret
	PodName    string // this replica's identity in leader election ("" is the host name)
	CASecret   string // the Secret holding the CA state every replica shares (identity/ca/kubestate)
	// RedisSecret, when set, holds the password of the Redis of Global rate limits (key
	// "password"); the first replica creates it with a random one (deploy/base/redis.yaml).
	RedisSecret string
	// WebhookAddr serves the injection webhook; WebhookService is its Service (named in its
	// certificate), WebhookConfig the MutatingWebhookConfiguration whose caBundle the leader
	// keeps equal to the mesh roots.
	WebhookAddr, WebhookService, WebhookConfig string
	ProxyImage                                 string // the image injected containers run
	ProxyImagePullPolicy                       string // Always, IfNotPresent or Never
	// Service is the control plane's Service: agents dial <Service>.<Namespace>.svc for
	// certificates and ADS, proxies for ext_authz, unless AgentsAddr or AuthzAdvertiseAddr say
	// otherwise.
	Service              string
	AgentsAddr           string
	ExcludeOutboundCIDRs []string
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("controlplane: a data directory is required")
	}
	if (c.ConfigDir == "") == (c.Kubernetes == nil) {
		return errors.New("controlplane: give --config (mesh documents in files) or --kubernetes (from the cluster), one of them")
	}
	if (c.ExternalAuthz == "") != c.ExternalAuthzID.IsZero() {
		return errors.New("controlplane: --external-authz and --external-authz-id go together")
	}
	if (c.CA.CertFile == "") != (c.CA.KeyFile == "") {
		return errors.New("controlplane: --ca-cert and --ca-key go together")
	}
	if c.Kubernetes != nil {
		return c.Kubernetes.validate()
	}
	return nil
}

// authzTarget is the address proxies dial for the ext_authz service served on bound: the
// external service, the advertised address, the bound address when it names a host, or on
// Kubernetes the control plane's Service on the bound port.
func (c *Config) authzTarget(bound net.Addr) (string, error) {
	if c.ExternalAuthz != "" {
		return c.ExternalAuthz, nil
	}
	if c.AuthzAdvertiseAddr != "" {
		return c.AuthzAdvertiseAddr, nil
	}
	host, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return "", fmt.Errorf("controlplane: authz address %s: %w", bound, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return bound.String(), nil
	}
	if c.Kubernetes == nil {
		return "", fmt.Errorf("controlplane: --authz-addr %s listens on every interface: give --authz-advertise-addr, the address proxies dial", bound)
	}
	return net.JoinHostPort(c.Kubernetes.serviceHost(), port), nil
}

// serviceHost is the DNS name of the control plane's Service.
func (k *KubernetesConfig) serviceHost() string { return k.Service + "." + k.Namespace + ".svc" }

func (k *KubernetesConfig) validate() error {
	if k.Namespace == "" {
		return errors.New("controlplane: --namespace is required with --kubernetes")
	}
	for _, c := range k.ExcludeOutboundCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return fmt.Errorf("controlplane: --exclude-outbound-cidr %q: %w", c, err)
		}
	}
	switch k.ProxyImagePullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		return fmt.Errorf("controlplane: --proxy-image-pull-policy %q: Always, IfNotPresent or Never", k.ProxyImagePullPolicy)
	}
	for flag, name := range map[string]string{"--webhook-service": k.WebhookService, "--controlplane-service": k.Service} {
		if name == "" || strings.Contains(name, ".") {
			return fmt.Errorf("controlplane: %s is a Service name, without namespace", flag)
		}
	}
	return nil
}
