//go:build !agentonly

package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/ca/kubestate"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/proctest"
)

var kubeAPI kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &kubeAPI)) }

// TestControlPlaneOnKubernetes runs `portcullis controlplane --kubernetes` against a real API
// server: from a Mesh resource it creates the shared root CA Secret, becomes ready, takes the
// Lease, marks the Mesh Accepted, reports its proxies and sums the report into the Mesh's
// Programmed condition, and writes the mesh roots into the webhook configuration.
func TestControlPlaneOnKubernetes(t *testing.T) {
	env := kubetest.Require(t, &kubeAPI)
	ctx := context.Background()
	const ns, hookName, pod = "portcullis-system", "portcullis-injector-cp-test", "controlplane-test-0"
	env.Namespace(t, ns, nil)
	hooks := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	url := "https://127.0.0.1:9/inject"
	if _, err := hooks.Create(ctx, &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: hookName},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name: "pod.inject.portcullis.dev", ClientConfig: admissionregv1.WebhookClientConfig{URL: &url},
			Rules:             []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"controlplane-test": "never"}},
			FailurePolicy:     ptr.To(admissionregv1.Ignore), SideEffects: ptr.To(admissionregv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hooks.Delete(context.Background(), hookName, metav1.DeleteOptions{}) })
	meshes := env.Dynamic.Resource(schema.GroupVersionResource{Group: "portcullis.dev", Version: "v1alpha1", Resource: "meshes"})
	mesh := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "portcullis.dev/v1alpha1", "kind": "Mesh", "metadata": map[string]any{"name": "default"},
		"spec": map[string]any{"trustDomain": "cluster.example", "mtls": map[string]any{"mode": "STRICT"}, "defaultDecision": "DENY"},
	}}
	if _, err := meshes.Create(ctx, mesh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meshes.Delete(context.Background(), "default", metav1.DeleteOptions{}) })
	deleteCASecret(t, env, ns)

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	proctest.Start(t, "controlplane", proctest.Binary(t), "controlplane", "--kubernetes", "--kubeconfig", kubeconfig,
		"--namespace", ns, "--pod-name", pod, "--webhook-config", hookName, "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--admin-addr", admin, "--xds-addr", "127.0.0.1:0", "--authz-addr", "127.0.0.1:0", "--webhook-addr", "127.0.0.1:0",
		"--log-format", "json")

	proctest.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz %d", resp.StatusCode)
		}
		return nil
	}, "ready")
	roots := secretRoots(t, env, ns, "portcullis-ca")
	if len(roots) != 1 || !roots[0].IsCA || roots[0].URIs[0].String() != "spiffe://cluster.example" {
		t.Fatalf("CA secret: %d roots", len(roots))
	}
	proctest.Eventually(t, 30*time.Second, func() error {
		leases, err := env.Client.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, l := range leases.Items {
			if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == pod {
				return nil
			}
		}
		return fmt.Errorf("no lease held by %s among %d", pod, len(leases.Items))
	}, "the lease held by the replica")
	proctest.Eventually(t, 30*time.Second, func() error {
		m, err := meshes.Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(m.Object, "status", "conditions")
		for _, c := range conds {
			if c, ok := c.(map[string]any); ok && c["type"] == "Accepted" && c["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", conds)
	}, "Mesh Accepted")
	// The replica reports its proxies (none) and the leader sums the reports.
	proctest.Eventually(t, 30*time.Second, func() error {
		if _, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, "portcullis-programmed-"+pod, metav1.GetOptions{}); err != nil {
			return err
		}
		m, err := meshes.Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(m.Object, "status", "conditions")
		for _, c := range conds {
			if c, ok := c.(map[string]any); ok && c["type"] == "Programmed" && c["message"] == "programmed on 0 of 0 proxies: no proxy uses it" {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", conds)
	}, "the replica's report and the Mesh's Programmed condition from it")
	proctest.Eventually(t, 30*time.Second, func() error {
		cfg, err := hooks.Get(ctx, hookName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		certs, _, err := ca.DecodePEM(cfg.Webhooks[0].ClientConfig.CABundle)
		if err != nil || len(certs) != 1 || !certs[0].Equal(roots[0]) {
			return fmt.Errorf("caBundle holds %d certificates (%v)", len(certs), err)
		}
		return nil
	}, "caBundle = the mesh root")
}

// secretRoots returns the roots in the CA Secret, each stored with its key.
func secretRoots(t *testing.T, env *kubetest.Env, ns, name string) []*x509.Certificate {
	t.Helper()
	sec, err := env.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var roots []*x509.Certificate
	for k, v := range sec.Data {
		if !strings.HasSuffix(k, kubestate.RootSuffix) {
			continue
		}
		certs, key, err := ca.DecodePEM(v)
		if err != nil || len(certs) != 1 || key == nil {
			t.Fatalf("CA Secret key %s: %d certificates, key %v, %v", k, len(certs), key != nil, err)
		}
		roots = append(roots, certs[0])
	}
	return roots
}

// deleteCASecret removes the CA Secret and the used-token records now and when the test ends,
// so each test starts its own CA.
func deleteCASecret(t *testing.T, env *kubetest.Env, ns string) {
	t.Helper()
	clean := func() {
		ctx := context.Background()
		_ = env.Client.CoreV1().Secrets(ns).Delete(ctx, "portcullis-ca", metav1.DeleteOptions{})
		_ = env.Client.CoreV1().ConfigMaps(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: kubestate.UsedTokenLabel})
	}
	clean()
	t.Cleanup(clean)
}
