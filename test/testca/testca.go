// Package testca mints real X.509-SVIDs for tests: a root CA per trust domain, workload
// certificates with a SPIFFE ID as the only URI SAN, and TLS configurations for mTLS on
// loopback. It is for tests and load tools only; the mesh's CA is identity/ca.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a test certificate authority for one SPIFFE trust domain.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	CertPEM     []byte
	key         *ecdsa.PrivateKey
}

// SVID is an X.509-SVID and its private key.
type SVID struct {
	ID      spiffeid.ID
	Leaf    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
	key     *ecdsa.PrivateKey
}

// New makes a self-signed ECDSA P-256 root for the trust domain, valid for a day.
func New(t TB, trustDomain string) *CA {
	t.Helper()
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{"portcullis test"}, CommonName: "test root " + trustDomain},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &CA{TrustDomain: td, Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// SVID issues an X.509-SVID for id (a SPIFFE ID in any trust domain: tests use foreign ones too),
// valid for an hour, usable as client and server certificate.
func (ca *CA) SVID(t TB, id string) *SVID {
	t.Helper()
	return ca.Issue(t, id, time.Hour)
}

// Issue is SVID with a chosen lifetime.
func (ca *CA) Issue(t TB, id string, ttl time.Duration) *SVID {
	t.Helper()
	sid, err := spiffeid.FromString(id)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		URIs:         []*url.URL{sid.URL()},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return &SVID{
		ID: sid, Leaf: leaf, key: key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// Pool returns a pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Bundle returns the root as a go-spiffe X.509 bundle (a bundle source for tlsconfig).
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
}

// TLSCertificate returns the SVID for crypto/tls.
func (s *SVID) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{s.Leaf.Raw}, PrivateKey: s.key, Leaf: s.Leaf}
}

// X509SVID returns the SVID as go-spiffe's type, which is also an x509svid.Source.
func (s *SVID) X509SVID() *x509svid.SVID {
	return &x509svid.SVID{ID: s.ID, Certificates: []*x509.Certificate{s.Leaf}, PrivateKey: s.key}
}

func serial(t TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return n
}

// TB is the part of testing.TB the CA needs, so load tools can use it too.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// ServerTLS presents the SVID and verifies client certificates against the CA when given, the
// way the control plane's port does (first contact may come without one).
func (ca *CA) ServerTLS(s *SVID) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{s.TLSCertificate()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}
}

// ClientTLS presents the SVID (nil for none) and requires the server to be serverID.
func (ca *CA) ClientTLS(s *SVID, serverID spiffeid.ID) *tls.Config {
	cfg := &tls.Config{
		RootCAs:    ca.Pool(),
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		// SVIDs have no DNS names: the URI SAN is checked instead of the host name.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(ca.Bundle(), tlsconfig.AuthorizeID(serverID)),
	}
	if s != nil {
		cfg.Certificates = []tls.Certificate{s.TLSCertificate()}
	}
	return cfg
}
