//go:build !agentonly

package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/cmd/internal/controlplane"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/xds/bootstrap"
)

func newControlPlaneCommand(g *globals) *cobra.Command {
	cfg := controlplane.Config{}
	var kubernetes bool
	var extAuthzID string
	kube := &controlplane.KubernetesConfig{}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane: documents, xDS, CA, authorization and the admin port",
		Long: `Run the control plane. It loads the mesh documents in --config (every *.yaml and *.yml
file, re-read when they change; an invalid edit is reported and the last good configuration
stays live) and serves the admin HTTP port:

  /healthz               the process is up
  /readyz                a valid mesh is loaded and every server is up
  /metrics               Prometheus metrics
  /debug/mesh            the live mesh and the problems of the last load
  /debug/proxies         each proxy's ACKed and NACKed versions (portcullis proxy status)
  /debug/proxies/config  a proxy's resources, ?node=<id> (portcullis proxy config)
  /debug/authz           policies, JWT providers and their health
  /traces                a trace browser over Jaeger's API (with --jaeger-query-url)

Once the first valid mesh is loaded it starts the CA for the mesh's trust domain (created in
--data-dir on first start, or from --ca-cert/--ca-key) and serves, with the control plane's own
SVID:
  --xds-addr    the certificate service and ADS (state of the world and delta) to proxies;
  --authz-addr  the ext_authz service, mTLS from proxies only, and the global rate limit
                service for Global limits (buckets in --ratelimit-redis).
A later mesh with another trust domain is refused and the last good mesh stays live. See
docs/identity.md, docs/xds.md and docs/policies.md.

With --kubernetes the mesh comes from the cluster instead of --config: the portcullis.dev
custom resources, Kubernetes Services and their EndpointSlices (docs/kubernetes.md). The
replicas share the CA's state in a Secret (roots, revocations, the join-token key; used tokens in
ConfigMaps), accept pods' service-account tokens, serve the injection webhook on --webhook-addr,
and the elected leader writes each resource's Accepted and Programmed conditions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Version, cfg.Logger, cfg.Stdout = g.version, g.log, cmd.OutOrStdout()
			if kubernetes {
				cfg.Kubernetes = kube
			}
			if extAuthzID != "" {
				id, err := spiffeid.FromString(extAuthzID)
				if err != nil {
					return flagError("external-authz-id", err)
				}
				cfg.ExternalAuthzID = id
			}
			cp, err := controlplane.New(cfg)
			if err != nil {
				return err
			}
			return cp.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.ConfigDir, "config", "", "directory of mesh documents (required unless --kubernetes)")
	fl.StringVar(&cfg.DataDir, "data-dir", "", "directory for the control plane's state: CA keys, used tokens, proxy registrations (required; created 0700)")
	fl.StringVar(&cfg.AdminAddr, "admin-addr", controlplane.DefaultAdminAddr, "admin HTTP address (health, readiness, metrics, debug)")
	fl.StringVar(&cfg.XDSAddr, "xds-addr", bootstrap.DefaultControlPlaneAddr, "gRPC TLS address of ADS and the certificate service")
	fl.StringVar(&cfg.AuthzAddr, "authz-addr", controlplane.DefaultAuthzAddr, "gRPC mTLS address of the ext_authz service")
	fl.StringVar(&cfg.AuthzAdvertiseAddr, "authz-advertise-addr", "", "host:port proxies dial for the ext_authz service (default: --authz-addr when it names a host; with --kubernetes, the control plane Service)")
	fl.StringVar(&cfg.ExternalAuthz, "external-authz", "", "host:port of a separate ext_authz service (portcullis authz replicas) for proxies to call instead of this control plane's; then --authz-addr is not served")
	fl.StringVar(&extAuthzID, "external-authz-id", "", "the SPIFFE ID proxies require of --external-authz (required with it)")
	fl.StringVar(&cfg.DecisionLog, "decision-log", "-", "where authorization decisions are logged as JSON lines: a file (0600), or - for stdout")
	fl.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "OTLP gRPC collector for the control plane's spans (default: the Mesh's spec.tracing.collector when tracing is enabled)")
	cfg.OTLP.Register(fl)
	cfg.RateLimit.Register(fl)
	fl.StringVar(&cfg.JaegerQueryURL, "jaeger-query-url", "", "Jaeger's query API (http://host:port): the admin port then serves a trace browser on /traces")
	registerCAFlags(fl, &cfg.CA)
	fl.BoolVar(&kubernetes, "kubernetes", false, "read the mesh from the Kubernetes API (CRDs, Services, EndpointSlices) instead of --config; serve the injection webhook; accept service-account tokens")
	registerKubernetesFlags(fl, kube)
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func registerCAFlags(fl *pflag.FlagSet, c *controlplane.CAConfig) {
	fl.StringVar(&c.CertFile, "ca-cert", "", "PEM file: your signing CA certificate first, then its chain up to and including the root (instead of a generated root)")
	fl.StringVar(&c.KeyFile, "ca-key", "", "PEM file with the private key of the first --ca-cert certificate (mode 0600)")
	fl.DurationVar(&c.RootTTL, "root-ttl", ca.DefaultRootTTL, "lifetime of a generated root CA")
	fl.DurationVar(&c.IntermediateTTL, "intermediate-ttl", ca.DefaultIntermediateTTL, "lifetime of each intermediate CA (renewed at half of it)")
	fl.DurationVar(&c.SVIDTTL, "svid-ttl", ca.DefaultSVIDTTL, "lifetime of each workload SVID (capped by the intermediate's remaining life)")
}

func registerKubernetesFlags(fl *pflag.FlagSet, k *controlplane.KubernetesConfig) {
	fl.StringVar(&k.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fl.StringVar(&k.Namespace, "namespace", envOr("POD_NAMESPACE", "portcullis-system"), "the control plane's namespace (Lease, CA Secret)")
	fl.StringVar(&k.PodName, "pod-name", envOr("POD_NAME", ""), "this replica's name, its identity in leader election (default: the host name)")
	fl.StringVar(&k.CASecret, "ca-secret", "portcullis-ca", "Secret holding the CA state every replica shares: roots and their keys, revocations, the join-token key (created by the first replica)")
	fl.StringVar(&k.RedisSecret, "ratelimit-redis-secret", "", "Secret holding the password of --ratelimit-redis (key password), created with a random one by the first replica if missing; deploy/'s Redis reads the same Secret")
	fl.StringVar(&k.WebhookAddr, "webhook-addr", controlplane.DefaultWebhookAddr, "HTTPS address of the injection webhook (certificate from the mesh CA)")
	fl.StringVar(&k.WebhookService, "webhook-service", "portcullis-webhook", "the webhook's Service, named in its certificate as <service>.<namespace>.svc")
	fl.StringVar(&k.WebhookConfig, "webhook-config", "portcullis-injector", "MutatingWebhookConfiguration whose caBundle the leader keeps equal to the mesh roots")
	fl.StringVar(&k.ProxyImage, "proxy-image", "ghcr.io/portcullis/portcullis-proxy:latest", "image the injector runs the sidecar (agent and Envoy) and the iptables init container from")
	fl.StringVar(&k.ProxyImagePullPolicy, "proxy-image-pull-policy", "IfNotPresent", "pull policy of the injected containers: Always, IfNotPresent or Never")
	fl.StringVar(&k.Service, "controlplane-service", "portcullis-controlplane", "the control plane's Service, which injected agents (certificates, ADS) and proxies (ext_authz) dial")
	fl.StringVar(&k.AgentsAddr, "agents-controlplane", "", "address injected agents dial (default <controlplane-service>.<namespace>.svc and the --xds-addr port)")
	fl.StringArrayVar(&k.ExcludeOutboundCIDRs, "exclude-outbound-cidr", nil, "CIDR injected pods reach directly, never through their proxy (repeatable; e.g. the API server)")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
