package agent

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/portcullis/portcullis/identity/securefile"
)

// Identity is one SVID with its key and the trust bundle it came with. It is immutable; a
// rotation makes a new one.
type Identity struct {
	SVID   *x509svid.SVID
	Bundle *x509bundle.Bundle
	// obtained is when the agent received (or loaded) the SVID.
	obtained time.Time
	// DER forms, built once for the Workload API and SDS.
	chainDER, keyDER, bundleDER []byte
	chainPEM, keyPEM, bundlePEM []byte
}

// ID returns the SPIFFE ID.
func (i *Identity) ID() spiffeid.ID { return i.SVID.ID }

// Leaf returns the SVID's certificate.
func (i *Identity) Leaf() *x509.Certificate { return i.SVID.Certificates[0] }

// NotAfter returns when the SVID expires.
func (i *Identity) NotAfter() time.Time { return i.Leaf().NotAfter }

// RenewAt is half-way through the SVID's remaining life when the agent got it. NotBefore is not
// used: CAs backdate it for clock skew, which would move the renewal early.
func (i *Identity) RenewAt() time.Time {
	return i.obtained.Add(i.NotAfter().Sub(i.obtained) / 2)
}

// GetX509SVID implements x509svid.Source.
func (i *Identity) GetX509SVID() (*x509svid.SVID, error) { return i.SVID, nil }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (i *Identity) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != i.Bundle.TrustDomain() {
		return nil, fmt.Errorf("agent: no bundle for trust domain %q", td)
	}
	return i.Bundle, nil
}

// newIdentity checks that chain is an SVID for key that verifies against roots, and builds the
// identity.
func newIdentity(chain [][]byte, key *ecdsa.PrivateKey, roots [][]byte, now time.Time) (*Identity, error) {
	if len(chain) == 0 || len(roots) == 0 {
		return nil, errors.New("agent: empty certificate chain or bundle")
	}
	certs, err := parseAll(chain)
	if err != nil {
		return nil, fmt.Errorf("agent: SVID chain: %w", err)
	}
	rootCerts, err := parseAll(roots)
	if err != nil {
		return nil, fmt.Errorf("agent: trust bundle: %w", err)
	}
	svid := &x509svid.SVID{Certificates: certs, PrivateKey: key}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, fmt.Errorf("agent: SVID: %w", err)
	}
	svid.ID = id
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("agent: SVID is not for this agent's key")
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain(), rootCerts)
	if _, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("agent: SVID does not verify against its bundle: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	i := &Identity{SVID: svid, Bundle: bundle, keyDER: keyDER, obtained: now}
	for _, c := range certs {
		i.chainDER = append(i.chainDER, c.Raw...)
		i.chainPEM = append(i.chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for _, c := range rootCerts {
		i.bundleDER = append(i.bundleDER, c.Raw...)
		i.bundlePEM = append(i.bundlePEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	i.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return i, nil
}

func parseAll(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// Persisted state: one file, replaced atomically, so key and certificate can never disagree.
const (
	stateDirName  = "state"
	stateFileName = "identity.json"
)

type persisted struct {
	Version int      `json:"version"`
	Chain   [][]byte `json:"chain"`
	Key     []byte   `json:"key"`
	Bundle  [][]byte `json:"bundle"`
}

func statePath(socketDir string) string {
	return filepath.Join(socketDir, stateDirName, stateFileName)
}

func saveIdentity(socketDir string, i *Identity) error {
	if err := securefile.EnsureDir(filepath.Join(socketDir, stateDirName), securefile.DirMode); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	p := persisted{Version: 1, Key: i.keyDER}
	for _, c := range i.SVID.Certificates {
		p.Chain = append(p.Chain, c.Raw)
	}
	for _, c := range i.Bundle.X509Authorities() {
		p.Bundle = append(p.Bundle, c.Raw)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := securefile.WriteAtomic(statePath(socketDir), data); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// loadIdentity returns the persisted identity, or nil when there is none or it is unusable
// (expired, damaged): the agent then joins with its token.
func loadIdentity(socketDir string, now time.Time) (*Identity, error) {
	data, err := securefile.ReadPrivate(statePath(socketDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil || p.Version != 1 {
		return nil, fmt.Errorf("agent: %s is damaged (version %d): %v", statePath(socketDir), p.Version, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(p.Key)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", statePath(socketDir), err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("agent: %s: key is %T", statePath(socketDir), k)
	}
	return newIdentity(p.Chain, key, p.Bundle, now)
}

func removeIdentity(socketDir string) error {
	if err := os.Remove(statePath(socketDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}
