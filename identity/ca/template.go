package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Backdate is how far before "now" a certificate's NotBefore is set, so a peer whose clock is a
// little behind does not reject a certificate that was just issued.
const Backdate = 10 * time.Second

// MinSVIDLifetime is the shortest certificate the CA issues when the issuer's remaining life caps
// the TTL (or half the TTL, for TTLs under two minutes); below it the request fails instead of
// handing out a certificate that is useless on arrival.
const MinSVIDLifetime = time.Minute

// ErrIssuerExpiring means the issuing certificate has too little life left to issue from.
var ErrIssuerExpiring = errors.New("ca: issuing certificate expired or about to expire")

// Templates builds certificate templates apart from signing them, so that lifetimes, key usage
// and extensions are decided (and tested) in one place. Clock and Serial are injectable.
type Templates struct {
	TrustDomain spiffeid.TrustDomain
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// Serial returns a new serial number; RandomSerial when nil.
	Serial func() (*big.Int, error)
}

// Capped reports that a template's lifetime was cut short by its issuer's remaining life.
type Capped struct {
	Requested time.Duration
	Granted   time.Duration
	IssuerEnd time.Time
}

func (t *Templates) now() time.Time {
	if t.Clock != nil {
		return t.Clock()
	}
	return time.Now()
}

func (t *Templates) serial() (*big.Int, error) {
	if t.Serial != nil {
		return t.Serial()
	}
	return RandomSerial()
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// RandomSerial returns a uniformly random, non-zero 128-bit serial number.
func RandomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func (t *Templates) base(ttl time.Duration, parent *x509.Certificate) (*x509.Certificate, *Capped, error) {
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("ca: TTL must be positive, got %s", ttl)
	}
	now := t.now()
	serial, err := t.serial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(ttl)
	var capped *Capped
	if parent != nil && parent.NotAfter.Before(notAfter) {
		granted := parent.NotAfter.Sub(now)
		if granted < min(MinSVIDLifetime, ttl/2) {
			return nil, nil, fmt.Errorf("%w: %s expires at %s (in %s)", ErrIssuerExpiring, parent.Subject.CommonName, parent.NotAfter.UTC().Format(time.RFC3339), granted.Round(time.Second))
		}
		notAfter = parent.NotAfter
		capped = &Capped{Requested: ttl, Granted: granted, IssuerEnd: parent.NotAfter}
	}
	// Not clamped to the parent's NotBefore (chains do not require nesting): revocation by
	// SPIFFE ID relies on NotBefore+Backdate being the issuance time.
	return &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-Backdate),
		NotAfter:     notAfter,
	}, capped, nil
}

func (t *Templates) trustDomainURI() *url.URL {
	return t.TrustDomain.ID().URL()
}

// Root returns the template of a self-signed root CA certificate.
func (t *Templates) Root(ttl time.Duration) (*x509.Certificate, error) {
	tmpl, _, err := t.base(ttl, nil)
	if err != nil {
		return nil, err
	}
	tmpl.Subject = pkix.Name{
		Organization: []string{"Portcullis"},
		CommonName:   "Portcullis root CA " + t.TrustDomain.Name(),
		SerialNumber: tmpl.SerialNumber.Text(16),
	}
	tmpl.URIs = []*url.URL{t.trustDomainURI()}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLen = 1
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return tmpl, nil
}

// Intermediate returns the template of an intermediate (signing) CA certificate under parent,
// its lifetime capped by the parent's.
func (t *Templates) Intermediate(ttl time.Duration, parent *x509.Certificate) (*x509.Certificate, *Capped, error) {
	tmpl, capped, err := t.base(ttl, parent)
	if err != nil {
		return nil, nil, err
	}
	tmpl.Subject = pkix.Name{
		Organization: []string{"Portcullis"},
		CommonName:   "Portcullis intermediate CA " + t.TrustDomain.Name(),
		SerialNumber: tmpl.SerialNumber.Text(16),
	}
	tmpl.URIs = []*url.URL{t.trustDomainURI()}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLen = 0
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return tmpl, capped, nil
}

// svidSubject is shared by every SVID: identity is the URI SAN, never the subject.
var svidSubject = pkix.Name{Organization: []string{"Portcullis"}}

// X509SVID returns the template of an X.509-SVID for id under parent, per the X.509-SVID
// specification: the SPIFFE ID as the only URI SAN, CA=false, key usage digitalSignature only,
// extended key usage serverAuth and clientAuth. Its lifetime is ttl, capped by the parent's.
func (t *Templates) X509SVID(id spiffeid.ID, ttl time.Duration, parent *x509.Certificate) (*x509.Certificate, *Capped, error) {
	if id.IsZero() {
		return nil, nil, errors.New("ca: SVID needs a SPIFFE ID")
	}
	if id.TrustDomain() != t.TrustDomain {
		return nil, nil, fmt.Errorf("ca: %s is not in trust domain %s", id, t.TrustDomain)
	}
	tmpl, capped, err := t.base(ttl, parent)
	if err != nil {
		return nil, nil, err
	}
	tmpl.Subject = svidSubject
	tmpl.URIs = []*url.URL{id.URL()}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	return tmpl, capped, nil
}

// sign creates the certificate for tmpl and pub, signed by parent/parentKey (tmpl itself and
// key for a self-signed root), and parses it back.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("ca: signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing signed certificate: %w", err)
	}
	return cert, nil
}
