package kubestate

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
)

// Admin is the operator's side of the CA Secret: the `portcullis ca` and `portcullis token`
// commands with --kubernetes. Each runs package ca's own operation on a scratch copy of the
// Secret and writes the result back with the resourceVersion it read, starting over on a
// conflict, so two operators (or an operator and a starting replica) never lose each other's
// change. The replicas pick the change up from their watch.
type Admin struct {
	Client            kubernetes.Interface
	Namespace, Secret string
}

// IntermediateNote is what Status says of an authority's intermediate on Kubernetes.
const IntermediateNote = "issued by each control plane replica under this root"

// Status describes the CA in the Secret at now.
func (a *Admin) Status(ctx context.Context, now time.Time) (*ca.Status, error) {
	var st *ca.Status
	err := a.read(ctx, func(dir string, _ map[string][]byte) error {
		var err error
		st, err = ca.ReadStatus(dir, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range st.Authorities {
		if st.Authorities[i].Intermediate == nil && !st.Authorities[i].Upstream {
			st.Authorities[i].IntermediateNote = IntermediateNote
		}
	}
	return st, nil
}

// Rotate adds a new root as ca.Rotate does: prepared now, active after opts.ActivateAfter.
func (a *Admin) Rotate(ctx context.Context, opts ca.RotateOptions) (ca.AuthorityPhase, error) {
	var p ca.AuthorityPhase
	err := a.update(ctx, func(dir string) error {
		var err error
		p, err = ca.Rotate(dir, opts)
		return err
	})
	return p, err
}

// Revoke adds a revocation as ca.Revoke does.
func (a *Admin) Revoke(ctx context.Context, serial *big.Int, id spiffeid.ID, note string, now time.Time) (ca.Revocation, error) {
	var r ca.Revocation
	err := a.update(ctx, func(dir string) error {
		var err error
		r, err = ca.Revoke(dir, serial, id, note, now)
		return err
	})
	return r, err
}

// TokenMaterial returns what `portcullis token create --kubernetes` signs with: the trust
// domain, the bundle's roots at now (for the token's pins) and the replicas' token key.
func (a *Admin) TokenMaterial(ctx context.Context, now time.Time) (spiffeid.TrustDomain, []*x509.Certificate, ed25519.PrivateKey, error) {
	var (
		td    spiffeid.TrustDomain
		roots []*x509.Certificate
		key   ed25519.PrivateKey
	)
	err := a.read(ctx, func(dir string, data map[string][]byte) error {
		var err error
		if key, err = attest.ParseSigningKey(data[TokenKeyKey]); err != nil {
			return fmt.Errorf("kubestate: Secret %s/%s: %w", a.Namespace, a.Secret, err)
		}
		td, roots, err = ca.ReadBundle(dir, now)
		return err
	})
	return td, roots, key, err
}

// read runs f on a scratch copy of the Secret, writing nothing back.
func (a *Admin) read(ctx context.Context, f func(dir string, data map[string][]byte) error) error {
	sec, err := a.Client.CoreV1().Secrets(a.Namespace).Get(ctx, a.Secret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return a.noCA()
	}
	if err != nil {
		return fmt.Errorf("kubestate: reading Secret %s/%s: %w", a.Namespace, a.Secret, err)
	}
	if err := checkLayout(a.Namespace, a.Secret, sec.Data); err != nil {
		return err
	}
	if sec.Data[ca.StateFile] == nil {
		return a.noCA()
	}
	return inScratch("", sec.Data, func(dir string) error { return f(dir, sec.Data) })
}

// update applies f to the Secret's CA; a missing Secret is ca.ErrNoCA (only replicas create it).
func (a *Admin) update(ctx context.Context, f func(dir string) error) error {
	_, _, err := change{
		secrets: a.Client.CoreV1().Secrets(a.Namespace), ns: a.Namespace, name: a.Secret,
		apply: func(dir string, _ map[string][]byte) error { return f(dir) },
	}.run(ctx)
	if errors.Is(err, ca.ErrNoCA) {
		return a.noCA()
	}
	return err
}

func (a *Admin) noCA() error {
	return fmt.Errorf("%w: Secret %s/%s holds no CA; the control plane creates it when it first loads a valid Mesh (check --namespace and --ca-secret)",
		ca.ErrNoCA, a.Namespace, a.Secret)
}
