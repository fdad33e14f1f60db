package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Fast SVID signing. x509.CreateCertificate verifies every signature it makes, to catch faulty
// signers (the RSA-CRT fault attack); for an ECDSA P-256 key held in this process that check
// costs more than the signature itself and halved the CA's throughput. signSVID encodes the
// TBSCertificate exactly as x509.CreateCertificate does for an SVID template (a test compares
// the bytes for many templates) and signs it once. Issuers with other key types, and every CA
// certificate, go through x509.CreateCertificate.

var (
	oidSignatureECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidExtensionKeyUsage        = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtensionExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtensionBasicConstr     = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtensionAuthorityKeyID  = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtKeyUsageServerAuth    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidExtKeyUsageClientAuth    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	ecdsaWithSHA256             = pkix.AlgorithmIdentifier{Algorithm: oidSignatureECDSAWithSHA256}
)

// svidExtensions are the extensions every SVID shares, in x509.CreateCertificate's order:
// keyUsage (critical, digitalSignature), extKeyUsage (serverAuth, clientAuth), basicConstraints
// (critical, CA=false).
var svidExtensions = func() []pkix.Extension {
	must := func(b []byte, err error) []byte {
		if err != nil {
			panic(err) // constant input; covered by tests
		}
		return b
	}
	return []pkix.Extension{
		{Id: oidExtensionKeyUsage, Critical: true, Value: must(asn1.Marshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1}))},
		{Id: oidExtensionExtKeyUsage, Value: must(asn1.Marshal([]asn1.ObjectIdentifier{oidExtKeyUsageServerAuth, oidExtKeyUsageClientAuth}))},
		{Id: oidExtensionBasicConstr, Critical: true, Value: must(asn1.Marshal(struct{}{}))},
	}
}()

var svidSubjectDER = func() []byte {
	b, err := asn1.Marshal(svidSubject.ToRDNSequence())
	if err != nil {
		panic(err) // constant input; covered by tests
	}
	return b
}()

// DER building blocks of an SVID that do not depend on the request, encoded once.
var (
	derVersion3 = []byte{0xa0, 0x03, 0x02, 0x01, 0x02} // [0] EXPLICIT INTEGER 2
	derSigAlg   = mustMarshal(ecdsaWithSHA256)
	derSVIDExts = concat(mustMarshal(svidExtensions[0]), mustMarshal(svidExtensions[1]), mustMarshal(svidExtensions[2]))
	derSANOID   = mustMarshal(oidSubjectAltName)
	derAKIOID   = mustMarshal(oidExtensionAuthorityKeyID)
	derSPKIP256 = p256SPKIPrefix()
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err) // constant input; covered by tests
	}
	return b
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// p256SPKIPrefix is the DER of a P-256 SubjectPublicKeyInfo up to the uncompressed point.
func p256SPKIPrefix() []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err) // no entropy: nothing can work
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		panic(err)
	}
	return der[:len(der)-65]
}

// appendTLV appends a DER element with a short- or long-form length.
func appendTLV(b []byte, tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	b = append(b, tag)
	switch {
	case n < 0x80:
		b = append(b, byte(n))
	case n < 0x100:
		b = append(b, 0x81, byte(n))
	default:
		b = append(b, 0x82, byte(n>>8), byte(n))
	}
	for _, c := range content {
		b = append(b, c...)
	}
	return b
}

// appendTime encodes t as encoding/asn1 does: UTCTime for 1950-2049, GeneralizedTime otherwise.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		return appendTLV(b, 0x17, []byte(t.Format("060102150405Z0700")))
	}
	return appendTLV(b, 0x18, []byte(t.Format("20060102150405Z0700")))
}

// appendInteger encodes a non-negative integer.
func appendInteger(b []byte, n *big.Int) []byte {
	v := n.Bytes()
	if len(v) == 0 || v[0]&0x80 != 0 {
		v = append([]byte{0}, v...)
	}
	return appendTLV(b, 0x02, v)
}

// canSignFast reports whether an issuer key can use signSVID.
func canSignFast(key any) bool {
	k, ok := key.(*ecdsa.PrivateKey)
	return ok && k.Curve == elliptic.P256()
}

// svidTBS encodes the TBSCertificate of an SVID template made by Templates.X509SVID, the way
// x509.CreateCertificate does: version, serial, signature algorithm, issuer, validity, subject,
// key, then the extensions keyUsage, extKeyUsage, basicConstraints, authorityKeyId (when the
// issuer has a subject key id) and subjectAltName.
func svidTBS(tmpl, issuer *x509.Certificate, pub *ecdsa.PublicKey) ([]byte, error) {
	if len(tmpl.URIs) != 1 || tmpl.IsCA || tmpl.KeyUsage != x509.KeyUsageDigitalSignature || tmpl.SerialNumber.Sign() <= 0 {
		return nil, errors.New("ca: not an SVID template")
	}
	if len(issuer.RawSubject)+len(tmpl.URIs[0].String()) > 16<<10 {
		return nil, errors.New("ca: SVID template too large") // appendTLV encodes lengths up to 64 KiB
	}
	point, err := pub.Bytes()
	if err != nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("ca: SVID key: not a P-256 point: %v", err)
	}
	buf := make([]byte, 0, 640)
	validity := appendTime(appendTime(nil, tmpl.NotBefore), tmpl.NotAfter)
	exts := derSVIDExts
	if len(issuer.SubjectKeyId) > 0 && !bytes.Equal(issuer.RawSubject, svidSubjectDER) {
		aki := appendTLV(nil, 0x30, appendTLV(nil, 0x80, issuer.SubjectKeyId))
		exts = appendTLV(append([]byte{}, exts...), 0x30, derAKIOID, appendTLV(nil, 0x04, aki))
	}
	uri := appendTLV(nil, 0x86, []byte(tmpl.URIs[0].String()))
	san := appendTLV(nil, 0x30, derSANOID, appendTLV(nil, 0x04, appendTLV(nil, 0x30, uri)))
	extensions := appendTLV(nil, 0xa3, appendTLV(nil, 0x30, exts, san))
	body := appendInteger(append(buf, derVersion3...), tmpl.SerialNumber)
	body = append(body, derSigAlg...)
	body = append(body, issuer.RawSubject...)
	body = appendTLV(body, 0x30, validity)
	body = append(body, svidSubjectDER...)
	body = append(body, derSPKIP256...) // headers included: a P-256 point is always 65 bytes
	body = append(body, point...)
	body = append(body, extensions...)
	return appendTLV(nil, 0x30, body), nil
}

// signSVID returns the DER certificate for an SVID template signed by an ECDSA P-256 issuer.
func signSVID(tmpl, issuer *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) ([]byte, error) {
	tbs, err := svidTBS(tmpl, issuer, pub)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("ca: signing SVID: %w", err)
	}
	bits := appendTLV(nil, 0x03, []byte{0}, sig) // BIT STRING, no unused bits
	return appendTLV(make([]byte, 0, len(tbs)+len(bits)+len(derSigAlg)+4), 0x30, tbs, derSigAlg, bits), nil
}
