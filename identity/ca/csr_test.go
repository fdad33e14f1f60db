package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"testing"
)

func TestParseCSR(t *testing.T) {
	p256 := mustKey(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := []string{"spiffe://example.org/ns/a/sa/b"}
	badSig := makeCSR(t, p256, id, nil)
	badSig[len(badSig)-3] ^= 0xff
	// otherName SANs are invisible in Go's parsed request; they must still count.
	otherName := func(r *x509.CertificateRequest) {
		uri, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(id[0])})
		other, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{0x06, 0x01, 0x2a, 0xa0, 0x03, 0x0c, 0x01, 0x78}})
		seq, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: append(uri, other...)})
		r.URIs = nil
		r.ExtraExtensions = []pkix.Extension{{Id: oidSubjectAltName, Value: seq}}
	}
	for name, tc := range map[string]struct {
		der  []byte
		want Reason
	}{
		"valid":           {makeCSR(t, p256, id, nil), ""},
		"empty":           {nil, ReasonCSRMalformed},
		"garbage":         {[]byte("not a csr"), ReasonCSRMalformed},
		"too large":       {make([]byte, MaxCSRBytes+1), ReasonCSRMalformed},
		"bad signature":   {badSig, ReasonCSRSignature},
		"RSA key":         {makeCSR(t, rsaKey, id, nil), ReasonKeyType},
		"P-384 key":       {makeCSR(t, p384, id, nil), ReasonKeyType},
		"Ed25519 key":     {makeCSR(t, edKey, id, nil), ReasonKeyType},
		"DNS SAN":         {makeCSR(t, p256, id, func(r *x509.CertificateRequest) { r.DNSNames = []string{"evil.example"} }), ReasonExtraSAN},
		"IP SAN":          {makeCSR(t, p256, id, func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }), ReasonExtraSAN},
		"email SAN":       {makeCSR(t, p256, id, func(r *x509.CertificateRequest) { r.EmailAddresses = []string{"a@b.c"} }), ReasonExtraSAN},
		"two URIs":        {makeCSR(t, p256, append(id, "spiffe://example.org/ns/x/sa/y"), nil), ReasonExtraSAN},
		"otherName SAN":   {makeCSR(t, p256, nil, otherName), ReasonExtraSAN},
		"no URI":          {makeCSR(t, p256, nil, nil), ReasonCSRSPIFFEID},
		"https URI":       {makeCSR(t, p256, []string{"https://example.org/x"}, nil), ReasonCSRSPIFFEID},
		"trust domain ID": {makeCSR(t, p256, []string{"spiffe://example.org"}, nil), ReasonCSRSPIFFEID},
		"bad SPIFFE path": {makeCSR(t, p256, []string{"spiffe://example.org/a/../b"}, nil), ReasonCSRSPIFFEID},
	} {
		t.Run(name, func(t *testing.T) {
			csr, err := ParseCSR(tc.der)
			if tc.want == "" {
				if err != nil || csr.ID.String() != id[0] {
					t.Fatalf("ParseCSR = %v, %v", csr, err)
				}
				return
			}
			var ce *CSRError
			if !errors.As(err, &ce) || ce.Reason != tc.want {
				t.Fatalf("err = %v, want reason %s", err, tc.want)
			}
		})
	}
}

// FuzzParseCSR: arbitrary bytes never panic, and whatever is accepted holds the invariants the
// signer relies on.
func FuzzParseCSR(f *testing.F) {
	key := mustKey(f)
	f.Add(makeCSR(f, key, []string{"spiffe://example.org/ns/a/sa/b"}, nil))
	f.Add(makeCSR(f, key, []string{"spiffe://example.org/ns/a/sa/b", "spiffe://example.org/x"}, nil))
	f.Add(makeCSR(f, key, []string{"spiffe://example.org/ns/a/sa/b"}, func(r *x509.CertificateRequest) { r.DNSNames = []string{"x"} }))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ParseCSR(der)
		if err != nil {
			var ce *CSRError
			if !errors.As(err, &ce) || ce.Reason == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil || req.CheckSignature() != nil {
			t.Fatal("accepted a CSR that does not parse or verify")
		}
		if csr.PublicKey.Curve != elliptic.P256() || len(req.URIs) != 1 || csr.ID.String() != req.URIs[0].String() {
			t.Fatalf("accepted CSR breaks invariants: %v %v", csr.ID, req.URIs)
		}
		if len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses) > 0 {
			t.Fatal("accepted extra SANs")
		}
	})
}
