package server

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/portcullis/portcullis/test/testca"
)

// A certificate parsed once is remembered, and the cross-check still runs on every Check: the
// same certificate with another principal is refused, from the cache as on first sight.
func TestPeerCertificateCachedCrossCheck(t *testing.T) {
	f := newFixture(t, "")
	frontend := testca.New(t, "portcullis.local").SVID(t, "spiffe://portcullis.local/ns/demo/sa/frontend")
	cert := url.QueryEscape(string(frontend.CertPEM))
	check := func(principal string) int {
		t.Helper()
		resp, err := f.srv.Check(context.Background(), request(t, func(r *authv3.CheckRequest) {
			r.Attributes.Source.Principal, r.Attributes.Source.Certificate = principal, cert
		}))
		if err != nil {
			t.Fatal(err)
		}
		return httpCode(resp)
	}
	for i := range 2 {
		if code := check("spiffe://portcullis.local/ns/demo/sa/frontend"); code != 200 {
			t.Fatalf("check %d with the matching principal: %d, want 200", i, code)
		}
		if code := check("spiffe://portcullis.local/ns/demo/sa/mallory"); code != 400 {
			t.Fatalf("check %d with another principal: %d, want 400", i, code)
		}
		if code := check(""); code != 400 {
			t.Fatalf("check %d with no principal: %d, want 400", i, code)
		}
	}
	if n := f.srv.certs.len(); n != 1 {
		t.Fatalf("%d certificates cached, want 1", n)
	}
}

// What a proxy sends is the cache's key, so a proxy sending the same certificate encoded in
// ever new ways (or garbage, or huge ones) must not grow it past its bound.
func TestPeerCertificateCacheBounded(t *testing.T) {
	svid := testca.New(t, "portcullis.local").SVID(t, "spiffe://portcullis.local/ns/demo/sa/frontend")
	principal := "spiffe://portcullis.local/ns/demo/sa/frontend"
	pem := string(svid.CertPEM)
	certs := newPeerCerts()
	// The bits of i say which of the first base64 characters are percent-encoded: the same
	// certificate, a new key each time.
	body := strings.Index(pem, "\n") + 1
	for i := range peerCertEntries + 100 {
		var enc strings.Builder
		for k := range pem {
			if k >= body && k-body < 16 && i&(1<<(k-body)) != 0 {
				fmt.Fprintf(&enc, "%%%02X", pem[k])
				continue
			}
			enc.WriteString(url.QueryEscape(pem[k : k+1]))
		}
		if err := crossCheckCertificate(enc.String(), principal, certs); err != nil {
			t.Fatalf("encoding %d: %v", i, err)
		}
	}
	if n := certs.len(); n != peerCertEntries {
		t.Fatalf("%d certificates cached, want the bound, %d", n, peerCertEntries)
	}

	certs = newPeerCerts()
	if err := crossCheckCertificate("garbage", principal, certs); err == nil || !strings.Contains(err.Error(), "not PEM") {
		t.Fatalf("garbage: %v", err)
	}
	huge := url.QueryEscape(pem) + strings.Repeat("%0A", maxCachedPeerCert/3)
	if err := crossCheckCertificate(huge, principal, certs); err != nil {
		t.Fatalf("certificate with trailing newlines: %v", err)
	}
	if n := certs.len(); n != 0 {
		t.Fatalf("%d certificates cached after garbage and one over %d bytes, want 0", n, maxCachedPeerCert)
	}
}

// FuzzPeerCertificateCache decides the cross-check for arbitrary certificates and principals
// with one cache shared by every input, and without: the answers must be the same, first sight
// or hit.
func FuzzPeerCertificateCache(f *testing.F) {
	ca := testca.New(f, "portcullis.local")
	for _, id := range []string{"spiffe://portcullis.local/ns/demo/sa/frontend", "spiffe://portcullis.local/ns/demo/sa/mallory"} {
		cert := url.QueryEscape(string(ca.SVID(f, id).CertPEM))
		f.Add(cert, id)
		f.Add(cert, "spiffe://portcullis.local/ns/demo/sa/frontend")
		f.Add(cert, "")
	}
	f.Add("garbage", "")
	certs := newPeerCerts()
	f.Fuzz(func(t *testing.T, cert, principal string) {
		want := fmt.Sprint(crossCheckCertificate(cert, principal, nil))
		for i := range 2 {
			if got := fmt.Sprint(crossCheckCertificate(cert, principal, certs)); got != want {
				t.Fatalf("with the cache (call %d): %s; without: %s", i, got, want)
			}
		}
	})
}
