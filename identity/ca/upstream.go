package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/identity/securefile"
)

// upstream is a CA given with --ca-cert and --ca-key.
type upstream struct {
	root *x509.Certificate
	// chain is the signing certificate and any certificates up to the root; empty when the
	// given certificate is the root itself (the control plane then issues its own intermediate).
	chain []*x509.Certificate
	key   crypto.Signer
}

// loadUpstream reads and checks a user-provided CA: certFile holds the signing certificate first
// and then its chain up to and including a self-signed root; keyFile holds the signing key. Each
// certificate must be a CA that signed the one before it, all valid now, and any SPIFFE ID they
// carry must be the trust domain's.
func loadUpstream(certFile, keyFile string, td spiffeid.TrustDomain, now time.Time) (*upstream, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("ca: --ca-cert: %w", err)
	}
	certs, key, err := DecodePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: --ca-cert %s: %w", certFile, err)
	}
	if key != nil {
		return nil, fmt.Errorf("ca: --ca-cert %s holds a private key; give it with --ca-key", certFile)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("ca: --ca-cert %s holds no certificate", certFile)
	}
	keyPEM, err := securefile.ReadPrivate(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ca: --ca-key: %w", err)
	}
	extra, key, err := DecodePEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: --ca-key %s: %w", keyFile, err)
	}
	if key == nil || len(extra) > 0 {
		return nil, fmt.Errorf("ca: --ca-key %s must hold exactly one private key and nothing else", keyFile)
	}
	if !keyMatches(key, certs[0]) {
		return nil, errors.New("ca: --ca-key is not the key of the first certificate in --ca-cert")
	}
	root := certs[len(certs)-1]
	if root.CheckSignatureFrom(root) != nil {
		return nil, fmt.Errorf("ca: --ca-cert %s must end with its self-signed root", certFile)
	}
	for i, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("ca: --ca-cert certificate %d (%s) is not a CA certificate with the keyCertSign usage", i+1, c.Subject)
		}
		if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
			return nil, fmt.Errorf("ca: --ca-cert certificate %d (%s) is not valid now (valid %s to %s)", i+1, c.Subject, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		}
		for _, u := range c.URIs {
			id, err := spiffeid.FromURI(u)
			if err != nil || id.TrustDomain() != td {
				return nil, fmt.Errorf("ca: --ca-cert certificate %d (%s) has URI SAN %s, not in trust domain %s", i+1, c.Subject, u, td)
			}
		}
		if i+1 < len(certs) {
			if err := c.CheckSignatureFrom(certs[i+1]); err != nil {
				return nil, fmt.Errorf("ca: --ca-cert certificate %d (%s) is not signed by certificate %d: %w", i+1, c.Subject, i+2, err)
			}
		}
	}
	if len(certs) > 1 {
		// The library verifier also checks path length constraints over the whole chain.
		roots, mid := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(root)
		for _, c := range certs[1 : len(certs)-1] {
			mid.AddCert(c)
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: mid, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if _, err := certs[0].Verify(opts); err != nil {
			return nil, fmt.Errorf("ca: --ca-cert chain does not verify: %w", err)
		}
	}
	return &upstream{root: root, chain: certs[:len(certs)-1], key: key}, nil
}
