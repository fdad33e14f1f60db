package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/securefile"
)

// authority is one root generation in memory. It is immutable: renewing the intermediate makes
// a new authority value.
type authority struct {
	id       string
	upstream bool
	root     *x509.Certificate
	// rootKey signs intermediates; nil when the root's key is not available (a root given with
	// an upstream intermediate, or an upstream root the control plane was not started with).
	rootKey crypto.Signer
	// chain is the signing certificate first, then any certificates between it and the root;
	// empty when this authority cannot sign.
	chain []*x509.Certificate
	key   crypto.Signer
}

func (a *authority) canSign() bool { return len(a.chain) > 0 && a.key != nil }

// signingCert is the certificate SVIDs are issued under (the intermediate).
func (a *authority) signingCert() *x509.Certificate { return a.chain[0] }

// NewRootPEM makes a self-signed root for td, PEM-encoded, for a root kept outside any data
// directory and given back as Config's upstream files (--ca-cert, --ca-key).
func NewRootPEM(td spiffeid.TrustDomain, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	root, key, err := newRoot(&Templates{TrustDomain: td}, ttl)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = EncodeKeyPEM(key); err != nil {
		return nil, nil, err
	}
	return EncodeCertsPEM(root), keyPEM, nil
}

func newRoot(t *Templates, ttl time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := t.Root(ttl)
	if err != nil {
		return nil, nil, err
	}
	root, err := sign(tmpl, tmpl, key.Public(), key)
	return root, key, err
}

// createManagedAuthority makes a self-signed root and an intermediate under it and writes both to
// the authority's directory. The caller holds the state lock.
func createManagedAuthority(dataDir, id string, t *Templates, rootTTL, intermediateTTL time.Duration) (*authority, error) {
	root, rootKey, err := newRoot(t, rootTTL)
	if err != nil {
		return nil, err
	}
	dir := authorityDir(dataDir, id)
	if err := securefile.EnsureDir(dir, securefile.DirMode); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(rootKey)
	if err != nil {
		return nil, err
	}
	if err := securefile.CreateExclusive(filepath.Join(dir, RootFile), append(EncodeCertsPEM(root), keyPEM...)); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	a := &authority{id: id, root: root, rootKey: rootKey}
	a, _, err = a.renewIntermediate(dataDir, t, intermediateTTL)
	return a, err
}

// renewIntermediate issues a new intermediate under the root, writes it (certificate and key in
// one file, replaced atomically) and returns the authority that signs with it.
func (a *authority) renewIntermediate(dataDir string, t *Templates, ttl time.Duration) (*authority, *Capped, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl, capped, err := t.Intermediate(ttl, a.root)
	if err != nil {
		return nil, nil, err
	}
	cert, err := sign(tmpl, a.root, key.Public(), a.rootKey)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(authorityDir(dataDir, a.id), IntermediateFile)
	if err := securefile.WriteAtomic(path, append(EncodeCertsPEM(cert), keyPEM...)); err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	next := *a
	next.chain, next.key = []*x509.Certificate{cert}, key
	return &next, capped, nil
}

// loadAuthority reads an authority from its directory. up is the upstream CA the control plane
// was started with (nil if none); it supplies the keys of an upstream authority whose root it is.
func loadAuthority(dataDir string, rec AuthorityRecord, up *upstream) (*authority, error) {
	dir := authorityDir(dataDir, rec.ID)
	data, err := securefile.ReadPrivate(filepath.Join(dir, RootFile))
	if err != nil {
		return nil, fmt.Errorf("ca: authority %s: %w", rec.ID, err)
	}
	certs, key, err := DecodePEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: authority %s: %s: %w", rec.ID, RootFile, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("ca: authority %s: %s must hold exactly one certificate, has %d", rec.ID, RootFile, len(certs))
	}
	a := &authority{id: rec.ID, upstream: rec.Upstream, root: certs[0]}
	if err := a.root.CheckSignatureFrom(a.root); err != nil {
		return nil, fmt.Errorf("ca: authority %s: root is not self-signed: %w", rec.ID, err)
	}
	switch {
	case !rec.Upstream:
		if key == nil || !keyMatches(key, a.root) {
			return nil, fmt.Errorf("ca: authority %s: %s has no matching root key", rec.ID, RootFile)
		}
		a.rootKey = key
	case key != nil:
		return nil, fmt.Errorf("ca: authority %s: upstream root file must not hold a key", rec.ID)
	case up != nil && up.root.Equal(a.root):
		if len(up.chain) > 0 {
			a.chain, a.key = up.chain, up.key
			return a, nil
		}
		a.rootKey = up.key
	}
	if a.rootKey == nil {
		return a, nil
	}
	data, err = securefile.ReadPrivate(filepath.Join(dir, IntermediateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil // issued by the caller
	}
	if err != nil {
		return nil, fmt.Errorf("ca: authority %s: %w", rec.ID, err)
	}
	certs, key, err = DecodePEM(data)
	if err != nil {
		return nil, fmt.Errorf("ca: authority %s: %s: %w", rec.ID, IntermediateFile, err)
	}
	if len(certs) != 1 || key == nil || !keyMatches(key, certs[0]) {
		return nil, fmt.Errorf("ca: authority %s: %s must hold one certificate and its key", rec.ID, IntermediateFile)
	}
	if err := certs[0].CheckSignatureFrom(a.root); err != nil {
		// A root replaced under the same id: issue a new intermediate rather than sign
		// certificates that chain nowhere.
		return a, nil
	}
	a.chain, a.key = certs, key
	return a, nil
}
