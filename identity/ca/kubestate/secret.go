package kubestate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/securefile"
)

// Keys of the CA Secret's data besides ca.StateFile and ca.RevokedFile (docs/kubernetes.md
// lists them).
const (
	// RootSuffix ends the key of each authority's root: "<authority id>.root.pem" holds what
	// ca.RootFile holds in that authority's directory (certificate and key).
	RootSuffix = ".root.pem"
	// TokenKeyKey is the join-token signing key (attest.EncodeSigningKey's PEM).
	TokenKeyKey = "token-signing.key"
	// MirrorFile, in the data directory's CA directory, names the Secret mirrored there
	// ("namespace/name"), so the local commands refuse to edit a mirror.
	MirrorFile = "kubernetes-secret"
	// maxAttempts bounds a read-modify-write's retries on conflicts; between them it waits a
	// random time up to a doubling bound (from 20 ms to at most a second), so writers racing
	// each other spread out.
	maxAttempts = 20
	maxBackoff  = time.Second
)

// authorityID is what the Secret may name as an authority (package ca makes
// "20060102T150405Z-<hex>"): never a path.
var authorityID = regexp.MustCompile(`^[0-9A-Za-z][-0-9A-Za-z_]*$`)

// caKey reports whether a data key is one of the CA's files.
func caKey(k string) bool {
	return k == ca.StateFile || k == ca.RevokedFile || strings.HasSuffix(k, RootSuffix)
}

// checkLayout refuses a Secret of the earlier layout (a bare root in tls.crt/tls.key).
func checkLayout(ns, name string, data map[string][]byte) error {
	if _, ok := data[ca.StateFile]; !ok && data[corev1.TLSCertKey] != nil {
		return fmt.Errorf("kubestate: Secret %s/%s holds a bare root (tls.crt, tls.key) written by an earlier version, not the CA's state; "+
			"delete it and restart the control plane to create a new CA (workloads then need new SVIDs)", ns, name)
	}
	return nil
}

// writeCA writes the CA files held in data under dataDir/ca, each only when its content
// differs, state.json last so the CA never reads a state naming a root not written yet. It
// removes revoked.json when data has none. It reports whether anything changed. The caller holds
// the CA lock (or owns dataDir).
func writeCA(dataDir string, data map[string][]byte) (bool, error) {
	dir := filepath.Join(dataDir, ca.DirName)
	if err := securefile.EnsureDir(dir, securefile.DirMode); err != nil {
		return false, fmt.Errorf("kubestate: %w", err)
	}
	changed := false
	put := func(path string, content []byte) error {
		old, err := securefile.ReadPrivate(path)
		if err == nil && bytes.Equal(old, content) {
			return nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kubestate: %w", err)
		}
		changed = true
		if err := securefile.WriteAtomic(path, content); err != nil {
			return fmt.Errorf("kubestate: %w", err)
		}
		return nil
	}
	for k, v := range data {
		id, ok := strings.CutSuffix(k, RootSuffix)
		if !ok {
			continue
		}
		if !authorityID.MatchString(id) {
			return false, fmt.Errorf("kubestate: data key %q does not name an authority", k)
		}
		if err := securefile.EnsureDir(filepath.Join(dir, id), securefile.DirMode); err != nil {
			return false, fmt.Errorf("kubestate: %w", err)
		}
		if err := put(filepath.Join(dir, id, ca.RootFile), v); err != nil {
			return false, err
		}
	}
	revoked := filepath.Join(dir, ca.RevokedFile)
	if v, ok := data[ca.RevokedFile]; ok {
		if err := put(revoked, v); err != nil {
			return false, err
		}
	} else if err := os.Remove(revoked); err == nil {
		changed = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("kubestate: %w", err)
	}
	if v, ok := data[ca.StateFile]; ok {
		if err := put(filepath.Join(dir, ca.StateFile), v); err != nil {
			return false, err
		}
	}
	return changed, nil
}

// readCA reads the CA files of dataDir back into Secret data: the state, the root of every
// authority it lists, the revocation list if any.
func readCA(dataDir string) (map[string][]byte, error) {
	st, err := ca.ReadState(dataDir)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, ca.DirName)
	out := map[string][]byte{}
	if out[ca.StateFile], err = securefile.ReadPrivate(filepath.Join(dir, ca.StateFile)); err != nil {
		return nil, fmt.Errorf("kubestate: %w", err)
	}
	for _, a := range st.Authorities {
		if out[a.ID+RootSuffix], err = securefile.ReadPrivate(filepath.Join(dir, a.ID, ca.RootFile)); err != nil {
			return nil, fmt.Errorf("kubestate: authority %s: %w", a.ID, err)
		}
	}
	revoked, err := securefile.ReadPrivate(filepath.Join(dir, ca.RevokedFile))
	switch {
	case err == nil:
		out[ca.RevokedFile] = revoked
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("kubestate: %w", err)
	}
	return out, nil
}

// scratchPrefix names scratch directories; a replica makes them in its data directory (its root
// filesystem is read-only in deploy/) and removes any a crash left there when it starts.
const scratchPrefix = ".ca-scratch-"

// inScratch writes the CA files of data into a new private directory under parent ("" is the
// system's temporary directory), runs f on it and removes it, keys included, whatever happens.
func inScratch(parent string, data map[string][]byte, f func(dir string) error) (err error) {
	dir, err := os.MkdirTemp(parent, scratchPrefix)
	if err != nil {
		return fmt.Errorf("kubestate: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("kubestate: removing the scratch copy of the CA: %w", rerr))
		}
	}()
	if _, err := writeCA(dir, data); err != nil {
		return err
	}
	return f(dir)
}

// change is one read-modify-write of the Secret: apply gets a scratch copy of the CA's files to
// edit with package ca's operations, and extra, the Secret's other keys, to edit in place.
type change struct {
	secrets typedcorev1.SecretInterface
	ns      string
	name    string
	// create makes a missing Secret; without it a missing Secret is ca.ErrNoCA.
	create bool
	// scratch is where the scratch copies go ("" is the system's temporary directory).
	scratch string
	apply   func(dir string, extra map[string][]byte) error
}

// run reads the Secret, applies the change and writes the result with the resourceVersion it
// read (or creates it), starting over from a fresh read when another writer got there first.
// It returns the Secret as stored and whether this call wrote it.
func (c change) run(ctx context.Context) (*corev1.Secret, bool, error) {
	backoff := 20 * time.Millisecond
	for attempt := range maxAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, false, fmt.Errorf("kubestate: updating Secret %s/%s: %w", c.ns, c.name, ctx.Err())
			case <-time.After(rand.N(backoff)):
			}
			backoff = min(2*backoff, maxBackoff)
		}
		sec, err := c.secrets.Get(ctx, c.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) && c.create:
			sec = nil
		case apierrors.IsNotFound(err):
			return nil, false, fmt.Errorf("%w: no Secret %s/%s", ca.ErrNoCA, c.ns, c.name)
		case err != nil:
			return nil, false, fmt.Errorf("kubestate: reading Secret %s/%s: %w", c.ns, c.name, err)
		}
		var old map[string][]byte
		if sec != nil {
			old = sec.Data
		}
		if err := checkLayout(c.ns, c.name, old); err != nil {
			return nil, false, err
		}
		next, err := c.edit(old)
		if err != nil {
			return nil, false, err
		}
		if sec != nil && maps.EqualFunc(old, next, bytes.Equal) {
			return sec, false, nil
		}
		var stored *corev1.Secret
		if sec == nil {
			stored, err = c.secrets.Create(ctx, newSecret(c.ns, c.name, next), metav1.CreateOptions{FieldManager: fieldManager})
		} else {
			upd := sec.DeepCopy()
			upd.Data = next // the resourceVersion read above makes this fail if anyone wrote since
			stored, err = c.secrets.Update(ctx, upd, metav1.UpdateOptions{FieldManager: fieldManager})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("kubestate: writing Secret %s/%s: %w", c.ns, c.name, err)
		}
		return stored, true, nil
	}
	return nil, false, fmt.Errorf("kubestate: Secret %s/%s changed under %d attempts in a row to update it; try again", c.ns, c.name, maxAttempts)
}

// edit applies the change to a copy of data and returns the new data.
func (c change) edit(data map[string][]byte) (map[string][]byte, error) {
	extra := map[string][]byte{}
	for k, v := range data {
		if !caKey(k) {
			extra[k] = v
		}
	}
	var files map[string][]byte
	err := inScratch(c.scratch, data, func(dir string) error {
		if err := c.apply(dir, extra); err != nil {
			return err
		}
		var err error
		files, err = readCA(dir)
		return err
	})
	if err != nil {
		return nil, err
	}
	maps.Copy(extra, files)
	return extra, nil
}

const fieldManager = "portcullis"

func newSecret(ns, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/part-of": "portcullis"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}
