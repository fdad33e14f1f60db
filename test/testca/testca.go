// Package testca mints real X.509-SVIDs for tests: a root CA per trust domain, workload
// certificates with a SPIFFE ID as the only URI SAN, and TLS configurations for mTLS on loopback.
// It is for tests only; the mesh's CA is identity/ca.
package testca

import (
	"crypto"
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

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TB is the part of testing.TB the CA needs, so tools outside tests (test/xdsload) can use it.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// CA is a self-signed root for one trust domain.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	key         crypto.Signer
}

// New returns a CA for the trust domain, valid for a day.
func New(t TB, td string) *CA {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "test root " + td},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{spiffeid.RequireTrustDomainFromString(td).ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{TrustDomain: spiffeid.RequireTrustDomainFromString(td), Cert: cert, key: key}
}

// SVID is a leaf certificate with its key.
type SVID struct {
	ID   spiffeid.ID
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Issue mints an SVID for id, valid for ttl.
func (ca *CA) Issue(t TB, id string, ttl time.Duration) *SVID {
	t.Helper()
	sid := spiffeid.RequireFromString(id)
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{sid.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &SVID{ID: sid, Cert: cert, Key: key}
}

// Pool is the CA as a certificate pool.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// TLSCertificate is the SVID for crypto/tls.
func (s *SVID) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{s.Cert.Raw}, PrivateKey: s.Key, Leaf: s.Cert}
}

// CertPEM and KeyPEM encode the SVID.
func (s *SVID) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw})
}

// KeyPEM encodes the SVID's private key (PKCS#8).
func (s *SVID) KeyPEM(t TB) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
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
		// SVIDs have no DNS names: check the URI SAN instead of the host name.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyID(raw, ca.Pool(), serverID)
		},
	}
	if s != nil {
		cfg.Certificates = []tls.Certificate{s.TLSCertificate()}
	}
	return cfg
}

func verifyID(raw [][]byte, roots *x509.CertPool, want spiffeid.ID) error {
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return err
	}
	if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != want.String() {
		return &x509.CertificateInvalidError{Cert: certs[0], Reason: x509.NameMismatch, Detail: "want " + want.String()}
	}
	return nil
}

func mustKey(t TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
