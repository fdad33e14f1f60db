package kubestate

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/securefile"
)

// DefaultResync is how often a replica compares its mirror with the Secret even when the
// Secret did not change, restoring CA files edited in the data directory.
const DefaultResync = 30 * time.Second

// recreateRetry is how long a replica waits before trying again to recreate a deleted Secret.
const recreateRetry = 5 * time.Second

// ReplicaOptions configure OpenReplica.
type ReplicaOptions struct {
	Client kubernetes.Interface
	// Namespace and Secret name the CA Secret (in the control plane's namespace).
	Namespace, Secret string
	// Replica names this process in the used-token records it writes (the pod name).
	Replica string
	// CA is the replica's CA configuration: trust domain, TTLs, any --ca-cert. The Secret is
	// brought up to date with it (ca.Init) and mirrored into its DataDir.
	CA ca.Config
	// Resync is DefaultResync when zero.
	Resync time.Duration
	Logger *slog.Logger
}

// Replica is one control plane replica's side of the CA Secret: it keeps the data directory's
// CA files equal to the Secret for package ca to load and reload, and holds the join-token key
// and the used-token records every replica shares.
type Replica struct {
	opts ReplicaOptions
	log  *slog.Logger
	key  ed25519.PrivateKey
	used *UsedTokens

	mu      sync.Mutex
	latest  *corev1.Secret // the newest Secret the watch delivered
	deleted bool           // the watch saw the Secret deleted since
	wake    chan struct{}

	// mirrored is the Secret last written into the data directory; Run's goroutine owns it.
	mirrored *corev1.Secret
}

// OpenReplica brings the CA Secret up to date with this replica's configuration (creating it,
// with a new root and token key, when there is none; adding a new --ca-cert root; raising the
// longest SVID TTL) and mirrors it into opts.CA.DataDir. Then ca.Open on that directory opens
// the shared CA; Run keeps the mirror current.
func OpenReplica(ctx context.Context, opts ReplicaOptions) (*Replica, error) {
	if opts.Client == nil || opts.Namespace == "" || opts.Secret == "" || opts.CA.DataDir == "" || opts.CA.TrustDomain.IsZero() {
		return nil, errors.New("kubestate: a client, the Secret's namespace and name, a data directory and a trust domain are required")
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CA.Clock == nil {
		opts.CA.Clock = time.Now
	}
	ns, name, td := opts.Namespace, opts.Secret, opts.CA.TrustDomain
	r := &Replica{opts: opts, log: opts.Logger.With("secret", ns+"/"+name), wake: make(chan struct{}, 1)}
	if err := removeScratch(opts.CA.DataDir); err != nil {
		return nil, err
	}
	sec, wrote, err := change{
		secrets: opts.Client.CoreV1().Secrets(ns), ns: ns, name: name, create: true, scratch: opts.CA.DataDir,
		apply: func(dir string, extra map[string][]byte) error {
			got, err := ca.ReadTrustDomain(dir)
			switch {
			case errors.Is(err, ca.ErrNoCA):
			case err != nil:
				return fmt.Errorf("kubestate: Secret %s/%s: %w", ns, name, err)
			case got != td:
				return fmt.Errorf("kubestate: the CA in Secret %s/%s is for trust domain %q, the Mesh says %q; a trust domain cannot change without a new CA", ns, name, got.Name(), td.Name())
			}
			cfg := opts.CA
			cfg.DataDir, cfg.Logger = dir, nil // its log lines would name the scratch directory
			if err := ca.Init(cfg); err != nil {
				return err
			}
			if extra[TokenKeyKey] == nil {
				k, err := attest.NewSigningKey()
				if err != nil {
					return err
				}
				extra[TokenKeyKey] = k
			}
			return nil
		},
	}.run(ctx)
	if err != nil {
		return nil, err
	}
	if r.key, err = attest.ParseSigningKey(sec.Data[TokenKeyKey]); err != nil {
		return nil, fmt.Errorf("kubestate: Secret %s/%s: %w", ns, name, err)
	}
	if wrote {
		r.log.Info("CA state written to the Secret (created, or brought up to this replica's configuration)", "trust_domain", td.Name())
	}
	if _, err := r.mirror(sec); err != nil {
		return nil, err
	}
	r.mirrored = sec
	r.used = NewUsedTokens(opts.Client, ns, opts.Replica, opts.CA.Clock, opts.Logger.With("component", "used-tokens"))
	return r, nil
}

// TokenKey is the join-token signing key every replica verifies tokens with.
func (r *Replica) TokenKey() ed25519.PrivateKey { return r.key }

// UsedTokens records single use of join tokens across replicas.
func (r *Replica) UsedTokens() *UsedTokens { return r.used }

// Run watches the Secret and mirrors every change until ctx ends, and prunes expired used-token
// records.
func (r *Replica) Run(ctx context.Context) error {
	ns, name := r.opts.Namespace, r.opts.Secret
	factory := informers.NewSharedInformerFactoryWithOptions(r.opts.Client, r.opts.Resync, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.observe,
		UpdateFunc: func(_, obj any) { r.observe(obj) },
		DeleteFunc: func(any) { r.observeDeleted() },
	}); err != nil {
		return fmt.Errorf("kubestate: watching Secret %s/%s: %w", ns, name, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.used.Run(gctx) })
	factory.Start(gctx.Done())
	defer factory.Shutdown()
	// A Secret deleted before the informer's first list sends no delete event: an empty first
	// list is a deletion too, or the mirror would never be put back.
	if cache.WaitForCacheSync(gctx.Done(), inf.HasSynced) && len(inf.GetStore().List()) == 0 {
		r.observeDeleted()
	}
	for {
		select {
		case <-gctx.Done():
			return g.Wait()
		case <-r.wake:
		}
		r.mu.Lock()
		sec, deleted := r.latest, r.deleted
		r.mu.Unlock()
		if deleted {
			r.recreate(gctx)
		} else if sec != nil {
			r.apply(sec)
		}
	}
}

func (r *Replica) observe(obj any) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	r.mu.Lock()
	r.latest, r.deleted = sec, false
	r.mu.Unlock()
	r.signal()
}

func (r *Replica) observeDeleted() {
	r.mu.Lock()
	r.latest, r.deleted = nil, true
	r.mu.Unlock()
	r.signal()
}

func (r *Replica) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// apply mirrors a Secret the watch delivered: a new version only once it checks out, so an
// invalid edit never replaces the last good state; the same version again to restore files
// edited in the data directory.
func (r *Replica) apply(sec *corev1.Secret) {
	fresh := sec.ResourceVersion != r.mirrored.ResourceVersion
	if fresh {
		if err := r.check(sec); err != nil {
			r.log.Error("the CA Secret changed to something invalid; keeping the last good CA state", "err", err)
			return
		}
	}
	changed, err := r.mirror(sec)
	if err != nil {
		r.log.Error("mirroring the CA Secret into the data directory failed; the CA keeps its current state", "err", err)
		return
	}
	switch {
	case fresh && changed:
		r.log.Info("CA Secret changed: mirrored into the data directory, where the CA reloads it", "resource_version", sec.ResourceVersion)
	case changed:
		r.log.Warn("the CA files in the data directory differed from the Secret (edited there?); restored them from the Secret")
	}
	if fresh && !bytes.Equal(sec.Data[TokenKeyKey], r.mirrored.Data[TokenKeyKey]) {
		r.log.Warn("the join-token signing key in the CA Secret changed; this replica verifies tokens with the key it started with until it restarts")
	}
	r.mirrored = sec
}

// check refuses a Secret the CA could not load: a state for another trust domain, a root
// without its key, a malformed file, no token key.
func (r *Replica) check(sec *corev1.Secret) error {
	if err := checkLayout(r.opts.Namespace, r.opts.Secret, sec.Data); err != nil {
		return err
	}
	if _, err := attest.ParseSigningKey(sec.Data[TokenKeyKey]); err != nil {
		return err
	}
	return inScratch(r.opts.CA.DataDir, sec.Data, func(dir string) error {
		st, err := ca.ReadStatus(dir, r.opts.CA.Clock())
		if err != nil {
			return err
		}
		if st.TrustDomain != r.opts.CA.TrustDomain.Name() {
			return fmt.Errorf("kubestate: the Secret now names trust domain %q; keeping %q", st.TrustDomain, r.opts.CA.TrustDomain.Name())
		}
		return nil
	})
}

// mirror writes the Secret's CA files into the data directory under the CA's lock, and the
// marker naming the Secret.
func (r *Replica) mirror(sec *corev1.Secret) (bool, error) {
	dataDir := r.opts.CA.DataDir
	lock, err := ca.Lock(dataDir)
	if err != nil {
		return false, err
	}
	defer func() { _ = lock.Release() }() // closing the file releases the lock anyway
	changed, err := writeCA(dataDir, sec.Data)
	if err != nil {
		return false, err
	}
	marker := filepath.Join(dataDir, ca.DirName, MirrorFile)
	want := []byte(r.opts.Namespace + "/" + r.opts.Secret + "\n")
	if got, err := securefile.ReadPrivate(marker); err != nil || !bytes.Equal(got, want) {
		if err := securefile.WriteAtomic(marker, want); err != nil {
			return false, fmt.Errorf("kubestate: %w", err)
		}
	}
	return changed, nil
}

// recreate puts a deleted Secret back from the mirror: without it the next replica to start
// would make a new root and every workload would distrust the others.
func (r *Replica) recreate(ctx context.Context) {
	_, err := r.opts.Client.CoreV1().Secrets(r.opts.Namespace).Create(ctx, newSecret(r.opts.Namespace, r.opts.Secret, r.mirrored.Data), metav1.CreateOptions{FieldManager: fieldManager})
	switch {
	case err == nil:
		r.log.Warn("the CA Secret was deleted; recreated it from this replica's mirror (to start over with a new CA, scale the control plane to zero first)")
	case apierrors.IsAlreadyExists(err):
	case ctx.Err() != nil:
	default:
		r.log.Error("the CA Secret was deleted and recreating it failed; retrying", "err", err, "retry_in", recreateRetry.String())
		time.AfterFunc(recreateRetry, r.signal)
	}
}

// removeScratch creates the data directory, or removes the scratch copies a crash left in it.
func removeScratch(dataDir string) error {
	if err := securefile.EnsureDir(dataDir, securefile.DirMode); err != nil {
		return fmt.Errorf("kubestate: %w", err)
	}
	left, err := filepath.Glob(filepath.Join(dataDir, scratchPrefix+"*"))
	if err != nil {
		return fmt.Errorf("kubestate: %w", err)
	}
	for _, d := range left {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("kubestate: removing a scratch copy of the CA: %w", err)
		}
	}
	return nil
}

// RotateCommand is the command that rotates the root of the CA in a Secret, for expiry
// warnings (ca.Config.RotateCommand).
func RotateCommand(namespace, secret string) string {
	return "portcullis ca rotate --kubernetes --namespace " + namespace + " --ca-secret " + secret
}

// MirroredSecret returns the "namespace/name" of the Secret mirrored in dataDir, or "" when
// dataDir holds a CA of its own.
func MirroredSecret(dataDir string) (string, error) {
	data, err := securefile.ReadPrivate(filepath.Join(dataDir, ca.DirName, MirrorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("kubestate: %w", err)
	}
	return string(bytes.TrimSpace(data)), nil
}
