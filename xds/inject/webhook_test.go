package inject_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/xds/inject"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

func testConfig() *inject.Config {
	return &inject.Config{
		Image: "ghcr.io/portcullis/portcullis:test", ControlPlane: "portcullis-controlplane.portcullis-system.svc:15010",
		TrustDomain: "cluster.example", Pins: func() []string { return []string{"sha256:" + strings.Repeat("ab", 32)} },
		ExcludeOutboundCIDRs: []string{"10.0.0.1/32"}, Version: "test",
	}
}

// startWebhook serves the injector over TLS with a certificate from a mesh CA (DNS name
// localhost) and registers it with the API server, caBundle = the CA's roots.
func startWebhook(t *testing.T, env *kubetest.Env) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("cluster.example")
	authority, err := ca.Open(ca.Config{DataDir: filepath.Join(t.TempDir(), "ca"), TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.NewServingSource(authority, ca.ControlPlaneID(td), []string{"localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/inject", &inject.Webhook{Config: testConfig(), Namespaces: func(ctx context.Context, name string) (map[string]string, error) {
		ns, err := env.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return ns.Labels, nil
	}})
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: src.GetCertificate}, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	url := "https://localhost:" + strings.Split(ln.Addr().String(), ":")[1] + "/inject"
	cfg := &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "portcullis-injector-test"},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name:                    "inject.portcullis.dev",
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &url, CABundle: ca.EncodeCertsPEM(authority.Roots()...)},
			Rules:                   []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           ptr.To(admissionregv1.Fail),
			SideEffects:             ptr.To(admissionregv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregv1.NeverReinvocationPolicy),
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
	if _, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	})
}

func pod(name string, annotations map[string]string, edit func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
	if edit != nil {
		edit(p)
	}
	return p
}

func TestWebhookThroughAPIServer(t *testing.T) {
	env := kubetest.Require(t, &api)
	startWebhook(t, env)
	ctx := context.Background()
	for name, labels := range map[string]map[string]string{"mesh-on": {v1alpha1.LabelInject: v1alpha1.InjectEnabled}, "mesh-off": nil} {
		if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, ns     string
		pod          *corev1.Pod
		wantInjected bool
		wantError    string
	}{
		{"namespace label", "mesh-on", pod("a", nil, nil), true, ""},
		{"pod opts out", "mesh-on", pod("b", map[string]string{"portcullis.dev/inject": "false"}, nil), false, ""},
		{"pod annotation", "mesh-off", pod("c", map[string]string{"portcullis.dev/inject": "true"}, nil), true, ""},
		{"neither", "mesh-off", pod("d", nil, nil), false, ""},
		{"host network", "mesh-on", pod("e", nil, func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false, "uses the host network"},
		{"port conflict", "mesh-on", pod("f", nil, func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = 15006 }), false, `container "app" uses port 15006`},
		{"proxy UID", "mesh-on", pod("g", nil, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1337)}
		}), false, "runs as UID 1337"},
		{"bad exclusion", "mesh-on", pod("h", map[string]string{inject.AnnotationExcludeOutboundPorts: "http"}, nil), false, "exclude-outbound-ports"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := env.Client.CoreV1().Pods(c.ns).Create(ctx, c.pod, metav1.CreateOptions{})
			if c.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantError) {
					t.Fatalf("got %v, want an error containing %q", err, c.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if inject.Injected(got) != c.wantInjected {
				t.Fatalf("injected = %v, want %v", inject.Injected(got), c.wantInjected)
			}
			if !c.wantInjected {
				return
			}
			checkInjected(t, got)
		})
	}
}

// checkInjected checks the pod the API server stored: the init container, the native sidecar
// before the app, the volumes and the app's Workload API socket.
func checkInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if len(p.Spec.InitContainers) != 2 || p.Spec.InitContainers[0].Name != inject.InitContainerName || p.Spec.InitContainers[1].Name != inject.ProxyContainerName {
		t.Fatalf("init containers: %+v", p.Spec.InitContainers)
	}
	init := p.Spec.InitContainers[0]
	if !strings.Contains(strings.Join(init.Command, " "), "init-iptables --inbound-port 15006 --outbound-port 15001 --proxy-uid 1337 --exclude-outbound-cidrs 10.0.0.1/32") {
		t.Errorf("init command: %v", init.Command)
	}
	caps := init.SecurityContext.Capabilities.Add
	if len(caps) != 2 || caps[0] != "NET_ADMIN" || caps[1] != "NET_RAW" {
		t.Errorf("init capabilities: %v", caps)
	}
	proxy := p.Spec.InitContainers[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("proxy is not a native sidecar (restartPolicy: Always)")
	}
	if proxy.StartupProbe == nil || proxy.StartupProbe.HTTPGet.Path != "/readyz" {
		t.Error("proxy has no startup probe on /readyz: the app could start before the proxy is ready")
	}
	if *proxy.SecurityContext.RunAsUser != inject.ProxyUID || proxy.Resources.Requests.Cpu().IsZero() {
		t.Errorf("proxy security context or resources: %+v %+v", proxy.SecurityContext, proxy.Resources)
	}
	if len(proxy.Command) != 1 || proxy.Command[0] != "portcullis-agent" || proxy.Args[0] != "agent" {
		t.Errorf("proxy runs %v %v, want the sidecar build portcullis-agent agent", proxy.Command, proxy.Args[:1])
	}
	args := strings.Join(proxy.Args, " ")
	for _, want := range []string{"--k8s-token-file /var/run/secrets/portcullis/token", "--trust-domain cluster.example", "--ca-pin sha256:", "--mode Transparent", "--workload $(POD_NAME)"} {
		if !strings.Contains(args, want) {
			t.Errorf("proxy args lack %q: %s", want, args)
		}
	}
	var token *corev1.ServiceAccountTokenProjection
	for _, v := range p.Spec.Volumes {
		if v.Name == inject.TokenVolume {
			token = v.Projected.Sources[0].ServiceAccountToken
		}
	}
	if token == nil || token.Audience != "portcullis" {
		t.Errorf("token volume: %+v", token)
	}
	app := p.Spec.Containers[0]
	if len(app.VolumeMounts) == 0 || app.VolumeMounts[len(app.VolumeMounts)-1].Name != inject.SocketVolume {
		t.Errorf("app has no Workload API socket: %+v", app.VolumeMounts)
	}
	if p.Annotations[v1alpha1.AnnotationInjected] != "test" {
		t.Errorf("annotations: %v", p.Annotations)
	}
}

// TestIdempotent: injecting an injected pod changes nothing; the webhook leaves it alone.
func TestIdempotent(t *testing.T) {
	cfg := testConfig()
	once, err := cfg.Inject(pod("x", map[string]string{"portcullis.dev/inject": "true"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !inject.Injected(once) {
		t.Fatal("not marked injected")
	}
	if !inject.Wanted(once, nil) {
		t.Fatal("injected pod no longer wants the mesh")
	}
}
