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
	// ExternalAuthz is the host:port of separate `portcullis authz` replicas proxies call instead
	// of this process (which then serves no ext_authz); ExternalAuthzID the identity they prove.
	ExternalAuthz   string
	ExternalAuthzID spiffeid.ID

	DecisionLog    string // a file (0600), or "-" for Stdout
	OTLPEndpoint   string // the control plane's spans; default the Mesh's collector when tracing is on
	JaegerQueryURL string // the admin port serves a trace browser over it on /traces
	CA             CAConfig
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
	CASecret   string // the Secret holding the mesh root every replica signs under
	// WebhookAddr serves the injection webhook; WebhookService is its Service (named in its
	// certificate), WebhookConfig the MutatingWebhookConfiguration whose caBundle the leader
	// keeps equal to the mesh roots.
	WebhookAddr, WebhookService, WebhookConfig string
	ProxyImage                                 string // the image injected containers run
	AgentsAddr                                 string // what injected agents dial ("" derives it from Namespace)
	ExcludeOutboundCIDRs                       []string
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

func (k *KubernetesConfig) validate() error {
	if k.Namespace == "" {
		return errors.New("controlplane: --namespace is required with --kubernetes")
	}
	for _, c := range k.ExcludeOutboundCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return fmt.Errorf("controlplane: --exclude-outbound-cidr %q: %w", c, err)
		}
	}
	if k.WebhookService == "" || strings.Contains(k.WebhookService, ".") {
		return errors.New("controlplane: --webhook-service is a Service name, without namespace")
	}
	return nil
}
