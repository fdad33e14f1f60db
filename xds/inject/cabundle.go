package inject

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/portcullis/portcullis/identity/ca"
)

// Roots is what SyncCABundle needs of the mesh CA (*ca.CA).
type Roots interface {
	Roots() []*x509.Certificate
	// Changed returns a channel closed at the next change of the roots.
	Changed() <-chan struct{}
}

// CABundleResync bounds how long a caBundle edited by someone else stays wrong.
const CABundleResync = 30 * time.Second

// SyncCABundle keeps the caBundle of every webhook in the MutatingWebhookConfiguration name
// equal to the mesh roots, so the API server trusts the webhook's serving certificate across
// root rotations. It runs until ctx ends (on the leader only: one writer); a missing
// configuration or a failed write is logged and retried at the next change or resync.
func SyncCABundle(ctx context.Context, client kubernetes.Interface, name string, roots Roots, log *slog.Logger) {
	hooks := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	for {
		// Taken before reading the roots, so a change in between is not missed.
		changed := roots.Changed()
		want := ca.EncodeCertsPEM(roots.Roots()...)
		cfg, err := hooks.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			log.Debug("no webhook configuration to keep in sync", "name", name)
		case err != nil:
			log.Warn("reading the webhook configuration", "name", name, "err", err)
		default:
			stale := false
			for i := range cfg.Webhooks {
				if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, want) {
					cfg.Webhooks[i].ClientConfig.CABundle = want
					stale = true
				}
			}
			if stale {
				if _, err := hooks.Update(ctx, cfg, metav1.UpdateOptions{FieldManager: "portcullis"}); err != nil {
					log.Warn("updating the webhook caBundle", "name", name, "err", err)
				} else {
					log.Info("webhook caBundle updated to the mesh roots", "name", name, "roots", bytes.Count(want, []byte("BEGIN CERTIFICATE")))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(CABundleResync):
		}
	}
}
