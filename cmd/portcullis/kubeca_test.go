//go:build !agentonly

package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/deploy"
	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certpb"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/proctest"
)

// TestReplicasShareTheCAOnKubernetes runs two `portcullis controlplane --kubernetes` replicas,
// each with its own data directory and as the control plane's service account under
// deploy/base's RBAC, and operates their CA with the CLI's --kubernetes mode:
//   - a join token made with `token create --kubernetes` is accepted once, by either replica;
//   - each replica renews the other's SVIDs (one bundle);
//   - `ca revoke --kubernetes` is refused by both within seconds;
//   - `ca rotate --kubernetes` puts the new root in both replicas' bundles, in the webhook's
//     caBundle and in the pins of injected pods before it signs, then both sign with it and
//     the API server still reaches the webhook;
//   - a replica restarted with an empty data directory has the same CA, revocations and used
//     tokens.
func TestReplicasShareTheCAOnKubernetes(t *testing.T) {
	env := kubetest.Require(t, &kubeAPI)
	ctx := context.Background()
	const ns, appNS, hookName = "portcullis-system", "kubeca-apps", "portcullis-injector"
	td := spiffeid.RequireTrustDomainFromString("ha.example")
	env.Namespace(t, ns, nil)
	env.Namespace(t, appNS, map[string]string{"portcullis.dev/inject": "enabled", "kubeca-test": "inject"})
	deleteCASecret(t, env, ns)
	applyControlPlaneRBAC(t, env)
	bin := proctest.Binary(t)
	dir := t.TempDir()
	adminConfig := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(adminConfig, env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	saConfig := serviceAccountKubeconfig(t, env, filepath.Join(dir, "controlplane.kubeconfig"), "system:serviceaccount:"+ns+":controlplane")

	meshes := env.Dynamic.Resource(schema.GroupVersionResource{Group: "portcullis.dev", Version: "v1alpha1", Resource: "meshes"})
	if _, err := meshes.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "portcullis.dev/v1alpha1", "kind": "Mesh", "metadata": map[string]any{"name": "default"},
		"spec": map[string]any{"trustDomain": td.Name(), "mtls": map[string]any{"mode": "STRICT"}, "defaultDecision": "DENY"},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meshes.Delete(context.Background(), "default", metav1.DeleteOptions{}) })
	webhookPort := proctest.FreePort(t)
	createInjectorConfig(t, env, hookName, fmt.Sprintf("https://localhost:%d/inject", webhookPort))

	start := func(name, dataDir, webhookAddr string) (*proctest.Process, string) {
		p := proctest.Start(t, name, bin, "controlplane", "--kubernetes", "--kubeconfig", saConfig, "--namespace", ns,
			"--pod-name", name, "--data-dir", dataDir, "--admin-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0",
			"--authz-addr", "127.0.0.1:0", "--webhook-addr", webhookAddr, "--agents-controlplane", "127.0.0.1:15010",
			"--svid-ttl", "1m", "--log-format", "json")
		return p, p.Wait(t, "control plane serving", "xds_addr")
	}
	_, addrA := start("replica-a", filepath.Join(dir, "a"), fmt.Sprintf("127.0.0.1:%d", webhookPort))
	replicaB, addrB := start("replica-b", filepath.Join(dir, "b"), "127.0.0.1:0")
	roots := secretRoots(t, env, ns, "portcullis-ca")
	if len(roots) != 1 {
		t.Fatalf("%d roots in the CA Secret", len(roots))
	}
	cli := func(args ...string) string {
		return run(t, bin, append(args, "--kubernetes", "--kubeconfig", adminConfig)...)
	}

	// One join token, accepted once whichever replica sees it.
	web := spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	token := createToken(t, cli, dir, "web", ns)
	if tok, err := attest.Parse(token); err != nil || !slices.Equal(tok.Pins, []string{ca.Pin(roots[0])}) {
		t.Fatalf("token pins the Secret's root? %v", err)
	}
	svidA, resp, err := join(addrA, roots, td, web, token)
	if err != nil {
		t.Fatalf("join at replica-a: %v", err)
	}
	if !sameCerts(parseAll(t, resp.TrustBundle), roots) {
		t.Fatal("replica-a's bundle is not the Secret's root")
	}
	if _, _, err := join(addrB, roots, td, web, token); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the token used at replica-a, again at replica-b: %v", err)
	}
	db := spiffeid.RequireFromPath(td, "/ns/shop/sa/db")
	svidB, _, err := join(addrB, roots, td, db, createToken(t, cli, dir, "db", ns))
	if err != nil {
		t.Fatalf("join at replica-b: %v", err)
	}
	for _, addr := range []string{addrA, addrB} {
		for _, s := range []*x509svid.SVID{svidA, svidB} {
			if _, _, err := renew(addr, roots, td, s); err != nil {
				t.Fatalf("renewing %s at %s: %v", s.ID, addr, err)
			}
		}
	}

	// Revocation with the CLI: both replicas refuse the SVID within seconds.
	cli("ca", "revoke", "--serial", svidA.Certificates[0].SerialNumber.Text(16), "--namespace", ns)
	for _, addr := range []string{addrA, addrB} {
		proctest.Eventually(t, 10*time.Second, func() error {
			_, _, err := renew(addr, roots, td, svidA)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is revoked") {
				return fmt.Errorf("renewal of the revoked SVID: %v", err)
			}
			return nil
		}, "the revoked SVID refused at "+addr)
	}

	// Rotation with the CLI: the new root is everywhere before it signs, then it signs.
	const activateAfter = 10 * time.Second
	out := cli("ca", "rotate", "--activate-after", activateAfter.String(), "--namespace", ns)
	rotatedAt := time.Now()
	if !strings.Contains(out, ": prepared, signs from ") {
		t.Fatalf("ca rotate: %s", out)
	}
	roots2 := secretRoots(t, env, ns, "portcullis-ca")
	if len(roots2) != 2 {
		t.Fatalf("%d roots in the CA Secret after the rotation", len(roots2))
	}
	newRoot := roots2[slices.IndexFunc(roots2, func(c *x509.Certificate) bool { return !c.Equal(roots[0]) })]
	for _, addr := range []string{addrA, addrB} {
		var s *x509svid.SVID
		proctest.Eventually(t, 10*time.Second, func() error {
			var resp *certpb.SignResponse
			var err error
			if s, resp, err = renew(addr, roots, td, svidB); err != nil {
				return err
			}
			if got := parseAll(t, resp.TrustBundle); !sameCerts(got, roots2) {
				return fmt.Errorf("bundle of %d roots", len(got))
			}
			return nil
		}, "both roots in the bundle of "+addr)
		if top := s.Certificates[len(s.Certificates)-1]; top.CheckSignatureFrom(roots[0]) != nil {
			t.Fatalf("%s signs under the new root before its activation (%s after the rotation)", addr, time.Since(rotatedAt))
		}
	}
	proctest.Eventually(t, 10*time.Second, func() error {
		cfg, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, hookName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		certs, _, err := ca.DecodePEM(cfg.Webhooks[0].ClientConfig.CABundle)
		if err != nil || !sameCerts(certs, roots2) {
			return fmt.Errorf("caBundle of %d certificates (%v)", len(certs), err)
		}
		return nil
	}, "both roots in the webhook's caBundle")
	wantPins := []string{ca.Pin(roots2[0]), ca.Pin(roots2[1])}
	slices.Sort(wantPins)
	if pins := injectedPins(t, env, appNS, "before-activation"); !slices.Equal(pins, wantPins) {
		t.Fatalf("injected pins %v, want both roots' %v", pins, wantPins)
	}
	for _, addr := range []string{addrA, addrB} {
		proctest.Eventually(t, 20*time.Second, func() error {
			s, _, err := renew(addr, roots2, td, svidB)
			if err != nil {
				return err
			}
			if top := s.Certificates[len(s.Certificates)-1]; top.CheckSignatureFrom(newRoot) != nil {
				return errors.New("still signed under the old root")
			}
			return nil
		}, "SVIDs from the new root at "+addr)
	}
	// The webhook now serves a certificate of the new root: the API server still trusts it.
	proctest.Eventually(t, 20*time.Second, func() error {
		_, err := createInjectedPod(ctx, env, appNS, "after-activation")
		return err
	}, "injection through the API server after the activation")

	// A replica restarted with an empty data directory: the same CA, revocations, used tokens.
	replicaB.Stop()
	_, addrB2 := start("replica-b-restarted", filepath.Join(dir, "b-empty"), "127.0.0.1:0")
	_, resp, err = renew(addrB2, roots2, td, svidB)
	if err != nil || !sameCerts(parseAll(t, resp.TrustBundle), roots2) {
		t.Fatalf("restarted replica: renewal %v, or another bundle", err)
	}
	if _, _, err := renew(addrB2, roots2, td, svidA); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("restarted replica renews the revoked SVID: %v", err)
	}
	if _, _, err := join(addrB2, roots2, td, web, token); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("restarted replica accepts a used token: %v", err)
	}

	var st ca.Status
	if err := json.Unmarshal([]byte(cli("ca", "status", "--namespace", ns)), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Authorities) != 2 || st.Authorities[0].Phase != ca.PhaseRetired || st.Authorities[1].Phase != ca.PhaseActive {
		t.Fatalf("ca status: %+v", st)
	}
	// A mirror is not a CA of its own: the local commands refuse it.
	out2, err := execOut(bin, "ca", "rotate", "--data-dir", filepath.Join(dir, "a"))
	if err == nil || !strings.Contains(out2, "mirrors the CA Secret "+ns+"/portcullis-ca") {
		t.Fatalf("ca rotate --data-dir on a mirror: %v\n%s", err, out2)
	}
}

// createToken makes a join token for service in namespace shop with `token create --kubernetes`.
func createToken(t *testing.T, cli func(...string) string, dir, service, cpNamespace string) string {
	t.Helper()
	out := filepath.Join(dir, service+".token")
	cli("token", "create", "--service", service, "--namespace", "shop", "--controlplane-namespace", cpNamespace, "--out", out)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// applyControlPlaneRBAC applies deploy/base's ServiceAccount, roles and bindings, removed when
// the test ends.
func applyControlPlaneRBAC(t *testing.T, env *kubetest.Env) {
	t.Helper()
	rendered, err := deploy.Render(deploy.Manifests, "base")
	if err != nil {
		t.Fatal(err)
	}
	all, err := deploy.Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	var rbac []*unstructured.Unstructured
	for _, o := range all {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			rbac = append(rbac, o)
		}
	}
	if len(rbac) != 5 {
		t.Fatalf("deploy/base has %d RBAC objects, want 5", len(rbac))
	}
	if err := deploy.Apply(context.Background(), env.Config, rbac, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, o := range rbac {
			gvr := schema.GroupVersionResource{Group: o.GroupVersionKind().Group, Version: o.GroupVersionKind().Version,
				Resource: strings.ToLower(o.GetKind()) + "s"}
			_ = env.Dynamic.Resource(gvr).Namespace(o.GetNamespace()).Delete(context.Background(), o.GetName(), metav1.DeleteOptions{})
		}
	})
}

// serviceAccountKubeconfig writes the administrator's kubeconfig impersonating user, so a
// process gets exactly that user's permissions.
func serviceAccountKubeconfig(t *testing.T, env *kubetest.Env, path, user string) string {
	t.Helper()
	cfg, err := clientcmd.Load(env.KubeConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// createInjectorConfig registers the injection webhook at url for namespaces labelled
// kubeca-test=inject, failing closed; the leader fills in its caBundle.
func createInjectorConfig(t *testing.T, env *kubetest.Env, name, url string) {
	t.Helper()
	hooks := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := hooks.Create(context.Background(), &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name: "pod.inject.portcullis.dev", ClientConfig: admissionregv1.WebhookClientConfig{URL: &url},
			Rules:             []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubeca-test": "inject"}},
			FailurePolicy:     ptr.To(admissionregv1.Fail), SideEffects: ptr.To(admissionregv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds: ptr.To[int32](5),
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hooks.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// createInjectedPod creates a pod through the API server, which calls the webhook.
func createInjectedPod(ctx context.Context, env *kubetest.Env, ns, name string) (*corev1.Pod, error) {
	pods := env.Client.CoreV1().Pods(ns)
	p, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	_ = pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	return p, nil
}

// injectedPins creates a pod through the API server and returns the CA pins the injector gave
// its proxy.
func injectedPins(t *testing.T, env *kubetest.Env, ns, name string) []string {
	t.Helper()
	p, err := createInjectedPod(context.Background(), env, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		var pins []string
		for i, a := range c.Args {
			if a == "--ca-pin" && i+1 < len(c.Args) {
				pins = append(pins, c.Args[i+1])
			}
		}
		if len(pins) > 0 {
			slices.Sort(pins)
			return pins
		}
	}
	t.Fatalf("pod %s/%s was not injected", ns, name)
	return nil
}

// join asks the control plane at addr for an SVID for id with a join token, verifying it with
// roots (as the agent does with the token's pins).
func join(addr string, roots []*x509.Certificate, td spiffeid.TrustDomain, id spiffeid.ID, token string) (*x509svid.SVID, *certpb.SignResponse, error) {
	return sign(addr, tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, roots), tlsconfig.AuthorizeID(ca.ControlPlaneID(td))), id, token)
}

// renew asks for a new SVID over mTLS with the current one.
func renew(addr string, roots []*x509.Certificate, td spiffeid.TrustDomain, s *x509svid.SVID) (*x509svid.SVID, *certpb.SignResponse, error) {
	return sign(addr, tlsconfig.MTLSClientConfig(s, x509bundle.FromX509Authorities(td, roots), tlsconfig.AuthorizeID(ca.ControlPlaneID(td))), s.ID, "")
}

func sign(addr string, tlsCfg *tls.Config, id spiffeid.ID, token string) (*x509svid.SVID, *certpb.SignResponse, error) {
	key, err := ca.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := certpb.NewCertificateServiceClient(conn).Sign(ctx, &certpb.SignRequest{Csr: csr, JoinToken: token})
	if err != nil {
		return nil, nil, err
	}
	var certs []*x509.Certificate
	for _, der := range resp.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, err
		}
		certs = append(certs, c)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, resp, nil
}

func parseAll(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = c
	}
	return out
}

// sameCerts reports whether a and b hold the same certificates, in any order.
func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !slices.ContainsFunc(b, c.Equal) {
			return false
		}
	}
	return true
}

func execOut(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}
