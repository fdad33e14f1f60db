package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the cluster's one CA and the files it issued, in dir.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newPKI makes a CA valid for a day (a cluster lives for one test or one session).
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "portcullis test cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("cluster: CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("cluster: CA: %w", err)
	}
	p := &pki{dir: dir, cert: cert, key: key}
	if err := writePEM(p.CAFile(), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// CAFile is the CA certificate's path.
func (p *pki) CAFile() string { return filepath.Join(p.dir, "ca.crt") }

// CAKeyFile writes the CA's key (for the controller manager's CSR signer) and returns its path.
func (p *pki) CAKeyFile() (string, error) {
	path := filepath.Join(p.dir, "ca.key")
	der, err := x509.MarshalECPrivateKey(p.key)
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	return path, writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

// issued is a certificate and key pair on disk.
type issued struct{ Cert, Key string }

// client issues a client certificate: Kubernetes takes the user from the common name and the
// groups from the organizations.
func (p *pki) client(name, user string, groups ...string) (issued, error) {
	return p.issue(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// server issues a serving certificate for the host names and addresses.
func (p *pki) server(name string, hosts []string, ips []net.IP) (issued, error) {
	return p.issue(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		DNSNames:    hosts,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

func (p *pki) issue(name string, tmpl *x509.Certificate) (issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return issued{}, fmt.Errorf("cluster: %s: %w", name, err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return issued{}, fmt.Errorf("cluster: %s: %w", name, err)
	}
	tmpl.NotBefore, tmpl.NotAfter = p.cert.NotBefore, p.cert.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return issued{}, fmt.Errorf("cluster: %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return issued{}, fmt.Errorf("cluster: %s: %w", name, err)
	}
	out := issued{Cert: filepath.Join(p.dir, name+".crt"), Key: filepath.Join(p.dir, name+".key")}
	if err := writePEM(out.Cert, "CERTIFICATE", der, 0o644); err != nil {
		return issued{}, err
	}
	return out, writePEM(out.Key, "EC PRIVATE KEY", keyDER, 0o600)
}

// serviceAccountKey writes the key pair the API server signs service-account tokens with and
// returns the private and public key paths.
func (p *pki) serviceAccountKey() (private, public string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("cluster: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("cluster: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("cluster: %w", err)
	}
	private, public = filepath.Join(p.dir, "sa.key"), filepath.Join(p.dir, "sa.pub")
	if err := writePEM(private, "EC PRIVATE KEY", der, 0o600); err != nil {
		return "", "", err
	}
	return private, public, writePEM(public, "PUBLIC KEY", pub, 0o644)
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}
