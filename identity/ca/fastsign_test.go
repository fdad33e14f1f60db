package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestSignSVIDMatchesCreateCertificate: the fast path's TBSCertificate is byte for byte what
// x509.CreateCertificate encodes for the same template, across IDs, times, serials and issuers
// (with and without a subject key id), and the result parses and verifies.
func TestSignSVIDMatchesCreateCertificate(t *testing.T) {
	clock := newClock()
	cfg, _ := testConfig(t, clock)
	c := openCA(t, cfg)
	issuers := []*authority{c.signer.current().active}
	// An issuer without a subject key id (no AKI then).
	noSKI := *issuers[0]
	tm, _, err := c.signer.tmpl.Intermediate(24*time.Hour, noSKI.root)
	if err != nil {
		t.Fatal(err)
	}
	tm.SubjectKeyId = []byte{}
	ik := mustKey(t).(*ecdsa.PrivateKey)
	der, err := x509.CreateCertificate(rand.Reader, tm, noSKI.root, ik.Public(), noSKI.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	noSKI.chain, noSKI.key = []*x509.Certificate{ic}, ik
	issuers = append(issuers, &noSKI)

	for i := range 200 {
		a := issuers[i%len(issuers)]
		id := spiffeid.RequireFromPath(testTD, fmt.Sprintf("/ns/n%d/sa/account-%d", i, i*7919))
		clock.Add(time.Duration(i) * 1234567 * time.Microsecond)
		tmpl, _, err := c.signer.tmpl.X509SVID(id, time.Duration(i+1)*time.Minute, a.signingCert())
		if err != nil {
			t.Fatal(err)
		}
		pub := mustKey(t).(*ecdsa.PrivateKey).Public().(*ecdsa.PublicKey)
		want, err := x509.CreateCertificate(rand.Reader, tmpl, a.signingCert(), pub, a.key)
		if err != nil {
			t.Fatal(err)
		}
		wantCert, err := x509.ParseCertificate(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := signSVID(tmpl, a.signingCert(), pub, a.key.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		gotCert, err := x509.ParseCertificate(got)
		if err != nil {
			t.Fatalf("fast SVID does not parse: %v", err)
		}
		if !bytes.Equal(gotCert.RawTBSCertificate, wantCert.RawTBSCertificate) {
			t.Fatalf("TBSCertificate differs from x509.CreateCertificate's for %s:\n got %x\nwant %x", id, gotCert.RawTBSCertificate, wantCert.RawTBSCertificate)
		}
		if err := gotCert.CheckSignatureFrom(a.signingCert()); err != nil {
			t.Fatalf("fast SVID signature: %v", err)
		}
		if _, _, err := x509svid.Verify([]*x509.Certificate{gotCert, a.signingCert()}, c, x509svid.WithTime(clock.Now())); err != nil {
			t.Fatalf("fast SVID is not a valid X.509-SVID: %v", err)
		}
	}
}

// TestDERHelpersMatchEncodingASN1 covers the cases the SVID test may not reach: both time
// encodings, long lengths, integers with the high bit set.
func TestDERHelpersMatchEncodingASN1(t *testing.T) {
	for _, y := range []int{1950, 2030, 2049, 2050, 2100} {
		tm := time.Date(y, 7, 8, 9, 10, 11, 0, time.UTC)
		want, err := asn1.Marshal(tm)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendTime(nil, tm); !bytes.Equal(got, want) {
			t.Errorf("time %d: %x, want %x", y, got, want)
		}
	}
	for _, n := range []int64{1, 127, 128, 255, 256, 1 << 40} {
		want, _ := asn1.Marshal(big.NewInt(n))
		if got := appendInteger(nil, big.NewInt(n)); !bytes.Equal(got, want) {
			t.Errorf("integer %d: %x, want %x", n, got, want)
		}
	}
	for _, l := range []int{0, 127, 128, 255, 256, 1000} {
		content := bytes.Repeat([]byte{'a'}, l)
		want, _ := asn1.Marshal(asn1.RawValue{Tag: 4, Class: asn1.ClassUniversal, Bytes: content})
		if got := appendTLV(nil, 0x04, content); !bytes.Equal(got, want) {
			t.Errorf("length %d: header %x, want %x", l, got[:4], want[:4])
		}
	}
}
