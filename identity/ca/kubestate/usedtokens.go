package kubestate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/portcullis/portcullis/identity/attest"
)

// Used-token records: ConfigMaps named UsedTokenPrefix + the token id, labelled
// UsedTokenLabel, their expiry in ExpiresAnnotation.
const (
	UsedTokenPrefix   = "portcullis-used-token-"
	UsedTokenLabel    = "portcullis.dev/used-token"
	ExpiresAnnotation = "portcullis.dev/token-expires"
	// useAnnotation identifies the Use call that created a record, so a create retried after a
	// lost response recognises its own record instead of calling the token reused.
	useAnnotation    = "portcullis.dev/use"
	usedByAnnotation = "portcullis.dev/used-by"
	// PruneGrace keeps a record this long past the token's expiry, covering clock differences
	// between the replicas (each refuses an expired token by its own clock).
	PruneGrace = 5 * time.Minute
	// PruneInterval is how often each replica deletes expired records.
	PruneInterval = 10 * time.Minute
	// useTimeout bounds one Use: a join waits for it.
	useTimeout = 10 * time.Second
	useRetries = 3
)

// UsedTokens records used join tokens in the API server so that single use holds across
// replicas and restarts: creating a token's record is its use, and AlreadyExists means the
// token was used before, here or at another replica. It implements certsvc.UsedTokens. Its
// RBAC in the namespace: create, get, list and delete configmaps.
type UsedTokens struct {
	client  kubernetes.Interface
	ns      string
	replica string
	clock   func() time.Time
	log     *slog.Logger
}

// NewUsedTokens keeps records in namespace ns; replica names the writer in them.
func NewUsedTokens(client kubernetes.Interface, ns, replica string, clock func() time.Time, log *slog.Logger) *UsedTokens {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &UsedTokens{client: client, ns: ns, replica: replica, clock: clock, log: log}
}

// Use marks token id (valid until exp) used, or returns attest.ErrTokenReused if it was used
// before. Any other failure is an error and the token is not accepted (failing closed).
func (u *UsedTokens) Use(id string, exp time.Time) error {
	if err := attest.CheckTokenID(id); err != nil {
		return err
	}
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("kubestate: %w", err)
	}
	use := hex.EncodeToString(nonce[:])
	ctx, cancel := context.WithTimeout(context.Background(), useTimeout)
	defer cancel()
	cms := u.client.CoreV1().ConfigMaps(u.ns)
	rec := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name:   UsedTokenPrefix + id,
		Labels: map[string]string{"app.kubernetes.io/part-of": "portcullis", UsedTokenLabel: "true"},
		Annotations: map[string]string{ExpiresAnnotation: exp.UTC().Format(time.RFC3339), useAnnotation: use,
			usedByAnnotation: u.replica},
	}}
	var err error
	for attempt := range useRetries {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("kubestate: recording used token %s: %w", id, err)
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		_, err = cms.Create(ctx, rec, metav1.CreateOptions{FieldManager: fieldManager})
		if err == nil {
			return nil
		}
		if apierrors.IsAlreadyExists(err) {
			got, gerr := cms.Get(ctx, rec.Name, metav1.GetOptions{})
			if gerr != nil {
				return fmt.Errorf("kubestate: reading the record of used token %s: %w", id, gerr)
			}
			if got.Annotations[useAnnotation] == use {
				return nil // our own create, whose response was lost
			}
			return fmt.Errorf("%w (token id %s, recorded by replica %q)", attest.ErrTokenReused, id, got.Annotations[usedByAnnotation])
		}
		if !retriable(err) {
			break
		}
	}
	return fmt.Errorf("kubestate: recording used token %s: %w", id, err)
}

// retriable are the failures after which the create may or may not have happened.
func retriable(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err)
}

// Run prunes expired records every PruneInterval until ctx ends.
func (u *UsedTokens) Run(ctx context.Context) error {
	for {
		if n, err := u.Prune(ctx); err != nil && ctx.Err() == nil {
			u.log.Warn("pruning used-token records failed; retrying later", "err", err)
		} else if n > 0 {
			u.log.Info("pruned used-token records of expired tokens", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(PruneInterval):
		}
	}
}

// Prune deletes the records of tokens expired more than PruneGrace ago and returns how many.
func (u *UsedTokens) Prune(ctx context.Context) (int, error) {
	cms := u.client.CoreV1().ConfigMaps(u.ns)
	cutoff := u.clock().Add(-PruneGrace)
	deleted := 0
	opts := metav1.ListOptions{LabelSelector: UsedTokenLabel + "=true", Limit: 500}
	for {
		list, err := cms.List(ctx, opts)
		if err != nil {
			return deleted, fmt.Errorf("kubestate: listing used-token records: %w", err)
		}
		for _, cm := range list.Items {
			exp, err := time.Parse(time.RFC3339, cm.Annotations[ExpiresAnnotation])
			if err != nil {
				u.log.Warn("used-token record without a valid expiry; keeping it", "name", cm.Name)
				continue
			}
			if !exp.Before(cutoff) {
				continue
			}
			err = cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cm.UID}})
			switch {
			case err == nil:
				deleted++
			case apierrors.IsNotFound(err) || apierrors.IsConflict(err): // another replica pruned it
			default:
				return deleted, fmt.Errorf("kubestate: deleting used-token record %s: %w", cm.Name, err)
			}
		}
		if list.Continue == "" {
			return deleted, nil
		}
		opts.Continue = list.Continue
	}
}
