package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/attest/kubereview"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/ca/kubestate"
	"github.com/portcullis/portcullis/identity/certsvc"
	"github.com/portcullis/portcullis/telemetry/serve"
	"github.com/portcullis/portcullis/xds/inject"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source"
	"github.com/portcullis/portcullis/xds/source/kube"
)

// kubeEnv is the control plane's Kubernetes side: clients, the source, and what runs with the CA.
type kubeEnv struct {
	cfg     *KubernetesConfig
	version string
	log     *slog.Logger
	client  kubernetes.Interface
	dyn     dynamic.Interface
	src     *kube.Source
}

func newKubeEnv(cfg *KubernetesConfig, version string, log *slog.Logger, meter metric.Meter, checks []source.Checker) (*kubeEnv, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("controlplane: kubernetes: %w", err)
	}
	rc.UserAgent = "portcullis-controlplane"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("controlplane: kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("controlplane: kubernetes: %w", err)
	}
	if cfg.PodName == "" {
		if cfg.PodName, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("controlplane: kubernetes: %w", err)
		}
	}
	src, err := kube.New(kube.Options{Client: client, Dynamic: dyn, Logger: log.With("component", "source"), Meter: meter, Checks: checks})
	if err != nil {
		return nil, err
	}
	return &kubeEnv{cfg: cfg, version: version, log: log, client: client, dyn: dyn, src: src}, nil
}

// endpoints are the EndpointSlices' endpoints; none in local mode (k is nil).
func (k *kubeEnv) endpoints() snapshot.EndpointSource {
	if k == nil {
		return nil
	}
	return k.src
}

// sharedCA opens this replica's side of the CA state every replica shares in the CA Secret (the
// first replica creates it; the API server's create decides between replicas starting at once)
// and mirrors it into cfg.DataDir for ca.Open.
func (k *kubeEnv) sharedCA(ctx context.Context, cfg ca.Config) (*kubestate.Replica, error) {
	return kubestate.OpenReplica(ctx, kubestate.ReplicaOptions{
		Client: k.client, Namespace: k.cfg.Namespace, Secret: k.cfg.CASecret, Replica: k.cfg.PodName,
		CA: cfg, Logger: k.log.With("component", "ca-secret"),
	})
}

// serviceAccounts is the certificate service's service-account token verifier.
func (k *kubeEnv) serviceAccounts(td spiffeid.TrustDomain) certsvc.ServiceAccountVerifier {
	rev := kubereview.Client{Kube: k.client}
	return attest.NewServiceAccountVerifier(td, rev, rev)
}

// run serves the injection webhook on every replica and, on the leader, writes statuses and
// keeps the webhook's caBundle equal to the mesh roots.
func (k *kubeEnv) run(ctx context.Context, group *errgroup.Group, id *identity, ledger *snapshot.Ledger, ln net.Listener, xdsAddr net.Addr) error {
	td, ns, svc := id.td, k.cfg.Namespace, k.cfg.WebhookService
	serving, err := ca.NewServingSource(id.authority, ca.ControlPlaneID(td), []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", svc + "." + ns, "localhost"}, k.log.With("component", "webhook"))
	if err != nil {
		return err
	}
	agents := k.cfg.AgentsAddr
	if agents == "" {
		_, port, err := net.SplitHostPort(xdsAddr.String())
		if err != nil {
			return fmt.Errorf("controlplane: xds address %s: %w", xdsAddr, err)
		}
		agents = net.JoinHostPort(k.cfg.serviceHost(), port)
	}
	hook := &inject.Webhook{
		Config: &inject.Config{
			Image: k.cfg.ProxyImage, ImagePullPolicy: corev1.PullPolicy(k.cfg.ProxyImagePullPolicy), ControlPlane: agents, TrustDomain: td.Name(), ExcludeOutboundCIDRs: k.cfg.ExcludeOutboundCIDRs,
			Pins: func() []string {
				var pins []string
				for _, r := range id.authority.Roots() {
					pins = append(pins, ca.Pin(r))
				}
				return pins
			},
			Version: k.version,
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
	group.Go(func() error { return serve.HTTP(ctx, "controlplane: webhook", srv, ln, serve.DefaultGrace) })
	// Every replica reports its proxies' counts; the leader's status writer sums them.
	reporter, err := kube.NewReporter(kube.ReporterOptions{Client: k.client, Source: k.src, Proxies: ledger, Namespace: ns, Pod: k.cfg.PodName, Logger: k.log.With("component", "report")})
	if err != nil {
		return err
	}
	group.Go(func() error { return reporter.Run(ctx) })
	status := kube.NewStatusWriter(kube.StatusWriterOptions{Dynamic: k.dyn, Source: k.src, Client: k.client, Namespace: ns, Logger: k.log.With("component", "status")})
	group.Go(func() error {
		return kube.RunAsLeader(ctx, kube.LeaderOptions{Client: k.client, Namespace: ns, Identity: k.cfg.PodName, Logger: k.log.With("component", "leader")},
			func(ctx context.Context) {
				lead, lctx := errgroup.WithContext(ctx)
				lead.Go(func() error { return status.Run(lctx) })
				lead.Go(func() error {
					inject.SyncCABundle(lctx, k.client, k.cfg.WebhookConfig, id.authority, k.log.With("component", "cabundle"))
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
