package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRBytes bounds the CSRs the CA parses; a P-256 CSR with one URI SAN is about 300 bytes.
const MaxCSRBytes = 8 << 10

// Reason says why a request was refused, in a form fit for a metric label.
type Reason string

// Reasons a CSR is refused.
const (
	ReasonCSRMalformed Reason = "csr_malformed"
	ReasonCSRSignature Reason = "csr_signature"
	ReasonKeyType      Reason = "key_type"
	ReasonExtraSAN     Reason = "extra_san"
	ReasonCSRSPIFFEID  Reason = "csr_spiffe_id"
)

// CSRError is a refused CSR: the reason (a metric label) and a message for the requester.
type CSRError struct {
	Reason Reason
	Msg    string
}

func (e *CSRError) Error() string { return "ca: CSR refused: " + e.Msg }

var _ error = (*CSRError)(nil)

func csrErr(r Reason, format string, args ...any) error {
	return &CSRError{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// CSR is a certificate request that passed ParseCSR.
type CSR struct {
	ID        spiffeid.ID
	PublicKey *ecdsa.PublicKey
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// ParseCSR parses a DER PKCS#10 request and checks what an X.509-SVID request must be: an ECDSA
// P-256 key, a valid self-signature, and a subject alternative name extension holding exactly
// one name, a URI that is a SPIFFE ID. Nothing else of the request (subject, other extensions)
// is ever copied into a certificate. Errors are *CSRError.
func ParseCSR(der []byte) (*CSR, error) {
	if len(der) == 0 {
		return nil, csrErr(ReasonCSRMalformed, "empty CSR")
	}
	if len(der) > MaxCSRBytes {
		return nil, csrErr(ReasonCSRMalformed, "CSR is %d bytes, more than the %d allowed", len(der), MaxCSRBytes)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, csrErr(ReasonCSRMalformed, "not a DER PKCS#10 request: %v", err)
	}
	pub, ok := req.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, csrErr(ReasonKeyType, "key is %s; an ECDSA P-256 key is required", describeKey(req))
	}
	if err := req.CheckSignature(); err != nil {
		return nil, csrErr(ReasonCSRSignature, "signature does not verify with the request's key: %v", err)
	}
	names, err := countSANs(req)
	if err != nil {
		return nil, csrErr(ReasonCSRMalformed, "%v", err)
	}
	if extra := len(req.DNSNames) + len(req.IPAddresses) + len(req.EmailAddresses); extra > 0 {
		return nil, csrErr(ReasonExtraSAN, "only the SPIFFE ID may be requested as a SAN; found DNS %q, IP %v, email %q", req.DNSNames, req.IPAddresses, req.EmailAddresses)
	}
	switch {
	case len(req.URIs) == 0:
		return nil, csrErr(ReasonCSRSPIFFEID, "no URI SAN: the SPIFFE ID must be requested as the only URI SAN")
	case len(req.URIs) > 1:
		return nil, csrErr(ReasonExtraSAN, "%d URI SANs; exactly one (the SPIFFE ID) is allowed", len(req.URIs))
	case names != 1:
		return nil, csrErr(ReasonExtraSAN, "the SAN extension holds %d names; only the SPIFFE ID is allowed", names)
	}
	id, err := spiffeid.FromURI(req.URIs[0])
	if err != nil {
		return nil, csrErr(ReasonCSRSPIFFEID, "URI SAN is not a SPIFFE ID: %v", err)
	}
	if id.Path() == "" {
		return nil, csrErr(ReasonCSRSPIFFEID, "%s names a trust domain, not a workload", id)
	}
	return &CSR{ID: id, PublicKey: pub}, nil
}

func describeKey(req *x509.CertificateRequest) string {
	if pub, ok := req.PublicKey.(*ecdsa.PublicKey); ok && pub.Curve != nil {
		return "ECDSA " + pub.Curve.Params().Name
	}
	return req.PublicKeyAlgorithm.String()
}

// countSANs counts every GeneralName in the request's SAN extensions, including kinds Go does not
// expose (otherName, directoryName, registeredID), so none can ride along unseen.
func countSANs(req *x509.CertificateRequest) (int, error) {
	n, exts := 0, 0
	for _, ext := range req.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		exts++
		if exts > 1 {
			return 0, errors.New("more than one subject alternative name extension")
		}
		names, err := countDERElements(ext.Value)
		if err != nil {
			return 0, errors.New("malformed subject alternative name extension")
		}
		n += names
	}
	return n, nil
}

// countDERElements counts the elements of a DER SEQUENCE (tags below 31, definite lengths up to
// four bytes), without encoding/asn1's reflection: this runs on every certificate request.
func countDERElements(der []byte) (int, error) {
	content, rest, err := readDER(der)
	if err != nil || len(rest) > 0 || der[0] != 0x30 {
		return 0, errors.New("not a DER SEQUENCE")
	}
	n := 0
	for len(content) > 0 {
		if _, content, err = readDER(content); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

// readDER splits one element off b, returning its content and what follows it.
func readDER(b []byte) (content, rest []byte, err error) {
	if len(b) < 2 || b[0]&0x1f == 0x1f {
		return nil, nil, errors.New("truncated or high-tag-number element")
	}
	l, hdr := int(b[1]), 2
	if l&0x80 != 0 {
		k := l & 0x7f
		if k == 0 || k > 4 || len(b) < 2+k {
			return nil, nil, errors.New("bad length")
		}
		l = 0
		for _, c := range b[2 : 2+k] {
			l = l<<8 | int(c)
		}
		hdr += k
	}
	if l < 0 || len(b)-hdr < l {
		return nil, nil, errors.New("element longer than its container")
	}
	return b[hdr : hdr+l], b[hdr+l:], nil
}
