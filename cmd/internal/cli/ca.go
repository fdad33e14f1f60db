package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/ca/kubestate"
)

// CATarget is where the ca and token commands find the CA: a control plane's data directory,
// or with Kubernetes, the CA Secret its replicas share.
type CATarget struct {
	DataDir    string
	Kubernetes bool
	// Kubeconfig "" is $KUBECONFIG or ~/.kube/config, as kubectl reads it.
	Kubeconfig, Namespace, Secret string
}

// Check refuses a target that is neither or both, and a data directory that only mirrors a CA
// Secret: its CA files are overwritten from the Secret and its token key is not the replicas'.
func (t CATarget) Check() error {
	if (t.DataDir == "") == !t.Kubernetes {
		return errors.New("give --data-dir (a control plane's data directory) or --kubernetes (its CA Secret), one of them")
	}
	if t.Kubernetes {
		if t.Namespace == "" || t.Secret == "" {
			return errors.New("--kubernetes needs the control plane's namespace and CA Secret")
		}
		return nil
	}
	mirrored, err := kubestate.MirroredSecret(t.DataDir)
	if err != nil {
		return err
	}
	if mirrored != "" {
		return fmt.Errorf("--data-dir %s mirrors the CA Secret %s of a control plane on Kubernetes, where a change would be overwritten: use --kubernetes (see docs/kubernetes.md)", t.DataDir, mirrored)
	}
	return nil
}

// Status describes the CA at now.
func (t CATarget) Status(ctx context.Context, now time.Time) (*ca.Status, error) {
	if !t.Kubernetes {
		return ca.ReadStatus(t.DataDir, now)
	}
	a, err := t.admin()
	if err != nil {
		return nil, err
	}
	return a.Status(ctx, now)
}

// Rotate adds a new root (ca.Rotate).
func (t CATarget) Rotate(ctx context.Context, opts ca.RotateOptions) (ca.AuthorityPhase, error) {
	if !t.Kubernetes {
		return ca.Rotate(t.DataDir, opts)
	}
	a, err := t.admin()
	if err != nil {
		return ca.AuthorityPhase{}, err
	}
	return a.Rotate(ctx, opts)
}

// Revoke adds a revocation (ca.Revoke).
func (t CATarget) Revoke(ctx context.Context, serial *big.Int, id spiffeid.ID, note string, now time.Time) (ca.Revocation, error) {
	if !t.Kubernetes {
		return ca.Revoke(t.DataDir, serial, id, note, now)
	}
	a, err := t.admin()
	if err != nil {
		return ca.Revocation{}, err
	}
	return a.Revoke(ctx, serial, id, note, now)
}

// tokenMaterial is what a join token is made from: the trust domain, the bundle's roots (its
// pins) and the signing key.
func (t CATarget) tokenMaterial(ctx context.Context, now time.Time) (spiffeid.TrustDomain, []*x509.Certificate, ed25519.PrivateKey, error) {
	if t.Kubernetes {
		a, err := t.admin()
		if err != nil {
			return spiffeid.TrustDomain{}, nil, nil, err
		}
		return a.TokenMaterial(ctx, now)
	}
	td, roots, err := ca.ReadBundle(t.DataDir, now)
	if errors.Is(err, ca.ErrNoCA) {
		return td, nil, nil, fmt.Errorf("%w: start the control plane with --data-dir %s first", err, t.DataDir)
	}
	if err != nil {
		return td, nil, nil, err
	}
	key, err := attest.LoadOrCreateSigningKey(t.DataDir)
	return td, roots, key, err
}

func (t CATarget) admin() (*kubestate.Admin, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = t.Kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "portcullis-cli"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return &kubestate.Admin{Client: client, Namespace: t.Namespace, Secret: t.Secret}, nil
}
