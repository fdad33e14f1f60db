package inject_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/xds/inject"
)

// rotatingRoots stands for the mesh CA during a root rotation.
type rotatingRoots struct {
	mu      sync.Mutex
	roots   []*x509.Certificate
	changed chan struct{}
}

func (r *rotatingRoots) Roots() []*x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roots
}

func (r *rotatingRoots) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *rotatingRoots) set(roots ...*x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roots = roots
	close(r.changed)
	r.changed = make(chan struct{})
}

func newRoot(t *testing.T) *x509.Certificate {
	t.Helper()
	certPEM, _, err := ca.NewRootPEM(spiffeid.RequireTrustDomainFromString("cluster.example"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, _, err := ca.DecodePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// TestSyncCABundle: the leader writes the mesh roots into every webhook of the configuration,
// and follows a root rotation (the overlap, then the new root alone) as it happens.
func TestSyncCABundle(t *testing.T) {
	env := kubetest.Require(t, &api)
	hooks := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	url := "https://127.0.0.1:9/inject" // never called: the selector matches no namespace
	hook := func(name string) admissionregv1.MutatingWebhook {
		return admissionregv1.MutatingWebhook{
			Name:                    name,
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &url},
			Rules:                   []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"cabundle-test": "never"}},
			FailurePolicy:           ptr.To(admissionregv1.Ignore),
			SideEffects:             ptr.To(admissionregv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	cfg := &admissionregv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "cabundle-test"},
		Webhooks: []admissionregv1.MutatingWebhook{hook("a.inject.portcullis.dev"), hook("b.inject.portcullis.dev")}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := hooks.Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hooks.Delete(context.Background(), cfg.Name, metav1.DeleteOptions{}) })

	first, second := newRoot(t), newRoot(t)
	roots := &rotatingRoots{roots: []*x509.Certificate{first}, changed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		inject.SyncCABundle(ctx, env.Client, cfg.Name, roots, slog.New(slog.DiscardHandler))
	}()
	waitBundle := func(what string, want []byte) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := hooks.Get(ctx, cfg.Name, metav1.GetOptions{})
			if err == nil && bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, want) && bytes.Equal(got.Webhooks[1].ClientConfig.CABundle, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: caBundle not the mesh roots within 10s (err %v)", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitBundle("initial", ca.EncodeCertsPEM(first))
	// Rotation: both roots during the overlap, then the new one alone.
	roots.set(first, second)
	waitBundle("rotation", ca.EncodeCertsPEM(first, second))
	roots.set(second)
	waitBundle("after rotation", ca.EncodeCertsPEM(second))

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SyncCABundle did not return when its context ended")
	}
}
