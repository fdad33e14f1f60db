//go:build !agentonly

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/attest/kubereview"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certsvc"
	"github.com/portcullis/portcullis/telemetry"
	"github.com/portcullis/portcullis/xds/inject"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/source/kube"
)

// kubeFlags configure the control plane on Kubernetes.
type kubeFlags struct {
	enabled        bool
	kubeconfig     string
	namespace      string
	podName        string
	caSecret       string
	webhookAddr    string
	webhookService string
	webhookConfig  string
	proxyImage     string
	agentsAddr     string
	excludeCIDRs   []string
}

func (f *kubeFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&f.enabled, "kubernetes", false, "read the mesh from the Kubernetes API (CRDs, Services, EndpointSlices) instead of --config; serve the injection webhook; accept service-account tokens")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fl.StringVar(&f.namespace, "namespace", envOr("POD_NAMESPACE", "portcullis-system"), "the control plane's namespace (Lease, CA Secret)")
	fl.StringVar(&f.podName, "pod-name", envOr("POD_NAME", ""), "this replica's name, its identity in leader election (default: the host name)")
	fl.StringVar(&f.caSecret, "ca-secret", "portcullis-ca", "Secret holding the mesh root CA every replica signs under (created by the first replica)")
	fl.StringVar(&f.webhookAddr, "webhook-addr", "127.0.0.1:15017", "HTTPS address of the injection webhook (certificate from the mesh CA)")
	fl.StringVar(&f.webhookService, "webhook-service", "portcullis-webhook", "the webhook's Service, named in its certificate as <service>.<namespace>.svc")
	fl.StringVar(&f.webhookConfig, "webhook-config", "portcullis-injector", "MutatingWebhookConfiguration whose caBundle the leader keeps equal to the mesh roots")
	fl.StringVar(&f.proxyImage, "proxy-image", "ghcr.io/portcullis/portcullis:latest", "image the injector runs the agent, Envoy and the iptables init from")
	fl.StringVar(&f.agentsAddr, "agents-controlplane", "", "address injected agents dial (default portcullis-controlplane.<namespace>.svc:15010)")
	fl.StringArrayVar(&f.excludeCIDRs, "exclude-outbound-cidr", nil, "CIDR injected pods reach directly, never through their proxy (repeatable; e.g. the API server)")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// kubeEnv is the control plane's Kubernetes side: clients, the source, and what runs with the CA.
type kubeEnv struct {
	f      *kubeFlags
	log    *slog.Logger
	cfg    *rest.Config
	client kubernetes.Interface
	dyn    dynamic.Interface
	src    *kube.Source
}

func newKubeEnv(f *kubeFlags, log *slog.Logger, metrics *telemetry.Metrics, checks []source.Checker) (*kubeEnv, error) {
	var cfg *rest.Config
	var err error
	if f.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	cfg.UserAgent = "portcullis-controlplane"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	if f.podName == "" {
		if f.podName, err = os.Hostname(); err != nil {
			return nil, err
		}
	}
	src, err := kube.New(kube.Options{Client: client, Dynamic: dyn, Logger: log.With("component", "source"), Meter: metrics.Meter("xds/source/kube"), Checks: checks})
	if err != nil {
		return nil, err
	}
	return &kubeEnv{f: f, log: log, cfg: cfg, client: client, dyn: dyn, src: src}, nil
}

// ensureCA returns the files of the mesh root CA every replica signs under, from the CA Secret;
// the first replica to start creates it (the API server's create is the tie-breaker between
// replicas starting together).
func (k *kubeEnv) ensureCA(ctx context.Context, dataDir string, td spiffeid.TrustDomain, rootTTL time.Duration) (certFile, keyFile string, err error) {
	secrets := k.client.CoreV1().Secrets(k.f.namespace)
	sec, err := secrets.Get(ctx, k.f.caSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		certPEM, keyPEM, gerr := ca.NewRootPEM(td, rootTTL)
		if gerr != nil {
			return "", "", gerr
		}
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: k.f.caSecret, Namespace: k.f.namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "portcullis"},
				Annotations: map[string]string{"portcullis.dev/trust-domain": td.Name()}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		}
		created, cerr := secrets.Create(ctx, sec, metav1.CreateOptions{})
		switch {
		case cerr == nil:
			sec, err = created, nil
			k.log.Info("created the mesh root CA", "secret", k.f.namespace+"/"+k.f.caSecret, "trust_domain", td.Name())
		case apierrors.IsAlreadyExists(cerr):
			sec, err = secrets.Get(ctx, k.f.caSecret, metav1.GetOptions{})
		default:
			err = cerr
		}
	}
	if err != nil {
		return "", "", fmt.Errorf("kubernetes: CA secret %s/%s: %w", k.f.namespace, k.f.caSecret, err)
	}
	if got := sec.Annotations["portcullis.dev/trust-domain"]; got != "" && got != td.Name() {
		return "", "", fmt.Errorf("kubernetes: CA secret %s/%s is for trust domain %q, the Mesh says %q", k.f.namespace, k.f.caSecret, got, td.Name())
	}
	dir := filepath.Join(dataDir, "kubernetes-ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, sec.Data[corev1.TLSCertKey], 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, sec.Data[corev1.TLSPrivateKeyKey], 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// serviceAccounts is the certificate service's service-account token verifier.
func (k *kubeEnv) serviceAccounts(td spiffeid.TrustDomain) certsvc.ServiceAccountVerifier {
	rev := kubereview.Client{Kube: k.client}
	return attest.NewServiceAccountVerifier(td, rev, rev)
}

// run serves the injection webhook on every replica and, on the leader, writes statuses and
// keeps the webhook's caBundle equal to the mesh roots.
func (k *kubeEnv) run(ctx context.Context, group *errgroup.Group, id *identity, ledger *snapshot.Ledger, ln net.Listener) error {
	td := id.td
	ns := k.f.namespace
	svc := k.f.webhookService
	serving, err := ca.NewServingSource(id.authority, ca.ControlPlaneID(td), []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", svc + "." + ns, "localhost"}, k.log.With("component", "webhook"))
	if err != nil {
		return err
	}
	agents := k.f.agentsAddr
	if agents == "" {
		agents = "portcullis-controlplane." + ns + ".svc:15010"
	}
	hook := &inject.Webhook{
		Config: &inject.Config{
			Image: k.f.proxyImage, ControlPlane: agents, TrustDomain: td.Name(), ExcludeOutboundCIDRs: k.f.excludeCIDRs,
			Pins: func() []string {
				var pins []string
				for _, r := range id.authority.Roots() {
					pins = append(pins, ca.Pin(r))
				}
				return pins
			},
			Version: version,
		},
		Namespaces: func(ctx context.Context, name string) (map[string]string, error) {
			n, err := k.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return n.Labels, nil
		},
		Logger: k.log.With("component", "webhook"),
	}
	mux := http.NewServeMux()
	mux.Handle("/inject", hook)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: serving.GetCertificate}}
	group.Go(func() error { return serving.Run(ctx) })
	group.Go(func() error {
		errc := make(chan error, 1)
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
		select {
		case err := <-errc:
			return fmt.Errorf("webhook: %w", err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		}
	})
	status := kube.NewStatusWriter(kube.StatusWriterOptions{Dynamic: k.dyn, Source: k.src, Progress: ledger.Programmed, Logger: k.log.With("component", "status")})
	group.Go(func() error {
		return kube.RunAsLeader(ctx, kube.LeaderOptions{Client: k.client, Namespace: ns, Identity: k.f.podName, Logger: k.log.With("component", "leader")},
			func(ctx context.Context) {
				lead, lctx := errgroup.WithContext(ctx)
				lead.Go(func() error { return status.Run(lctx) })
				lead.Go(func() error {
					inject.SyncCABundle(lctx, k.client, k.f.webhookConfig, id.authority, k.log.With("component", "cabundle"))
					return nil
				})
				if err := lead.Wait(); err != nil {
					k.log.Error("leader task failed", "err", err)
				}
			})
	})
	k.log.Info("kubernetes: serving the injection webhook", "addr", ln.Addr().String(), "service", svc+"."+ns+".svc")
	return nil
}

// validate checks the Kubernetes flags.
func (f *kubeFlags) validate() error {
	if !f.enabled {
		return nil
	}
	if f.namespace == "" {
		return errors.New("--namespace is required with --kubernetes")
	}
	for _, c := range f.excludeCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return fmt.Errorf("--exclude-outbound-cidr %q: %w", c, err)
		}
	}
	if strings.Contains(f.webhookService, ".") || slices.Contains([]string{"", "."}, f.webhookService) {
		return errors.New("--webhook-service is a Service name, without namespace")
	}
	return nil
}
