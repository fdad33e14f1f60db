package certsvc

import (
	"crypto/tls"
	"crypto/x509"
	"github.com/portcullis/portcullis/identity/ca"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ServingIdentity is the control plane's own certificate and its trust bundle.
type ServingIdentity interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error)
}

// TLSConfig is the certificate service's server TLS: it serves the control plane's SVID (with
// its root, for agents verifying by pin) and verifies a client certificate against the current
// bundle when one is given — a joining agent has none yet.
func TLSConfig(id ServingIdentity, td spiffeid.TrustDomain) *tls.Config {
	p := &poolCache{}
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: id.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		NextProtos:     []string{"h2"},
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		b, err := id.GetX509BundleForTrustDomain(td)
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.ClientCAs = p.get(b)
		return c, nil
	}
	return cfg
}

// poolCache rebuilds the client CA pool only when the bundle changes (a new bundle value).
type poolCache struct {
	mu     sync.Mutex
	bundle *x509bundle.Bundle
	pool   *x509.CertPool
}

func (p *poolCache) get(b *x509bundle.Bundle) *x509.CertPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b != p.bundle {
		p.pool = x509.NewCertPool()
		for _, c := range b.X509Authorities() {
			p.pool.AddCert(c)
		}
		p.bundle = b
	}
	return p.pool
}

var _ Authority = (*ca.CA)(nil)
