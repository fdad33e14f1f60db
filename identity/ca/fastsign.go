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

type tbsCertificate struct {
	Version            int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber       *big.Int
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Issuer             asn1.RawValue
	Validity           validity
	Subject            asn1.RawValue
	PublicKey          asn1.RawValue
	Extensions         []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

type validity struct {
	NotBefore, NotAfter time.Time
}

type certificate struct {
	TBSCertificate     asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	SignatureValue     asn1.BitString
}

type authKeyID struct {
	ID []byte `asn1:"optional,tag:0"`
}

// canSignFast reports whether an issuer key can use signSVID.
func canSignFast(key any) bool {
	k, ok := key.(*ecdsa.PrivateKey)
	return ok && k.Curve == elliptic.P256()
}

// svidTBS encodes the TBSCertificate of an SVID template made by Templates.X509SVID.
func svidTBS(tmpl, issuer *x509.Certificate, pub *ecdsa.PublicKey) ([]byte, error) {
	if len(tmpl.URIs) != 1 || tmpl.IsCA || tmpl.KeyUsage != x509.KeyUsageDigitalSignature {
		return nil, errors.New("ca: not an SVID template")
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte(tmpl.URIs[0].String())}})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	exts := make([]pkix.Extension, 0, len(svidExtensions)+2)
	exts = append(exts, svidExtensions...)
	if len(issuer.SubjectKeyId) > 0 && !bytes.Equal(issuer.RawSubject, svidSubjectDER) {
		aki, err := asn1.Marshal(authKeyID{issuer.SubjectKeyId})
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: oidExtensionAuthorityKeyID, Value: aki})
	}
	exts = append(exts, pkix.Extension{Id: oidSubjectAltName, Value: san})
	tbs, err := asn1.Marshal(tbsCertificate{
		Version:            2,
		SerialNumber:       tmpl.SerialNumber,
		SignatureAlgorithm: ecdsaWithSHA256,
		Issuer:             asn1.RawValue{FullBytes: issuer.RawSubject},
		Validity:           validity{tmpl.NotBefore.UTC(), tmpl.NotAfter.UTC()},
		Subject:            asn1.RawValue{FullBytes: svidSubjectDER},
		PublicKey:          asn1.RawValue{FullBytes: spki},
		Extensions:         exts,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return tbs, nil
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
	der, err := asn1.Marshal(certificate{
		TBSCertificate:     asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: ecdsaWithSHA256,
		SignatureValue:     asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return der, nil
}
