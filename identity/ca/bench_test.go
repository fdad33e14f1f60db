package ca

import (
	"testing"
)

// BenchmarkSignX509SVID is the CA's signing path alone: template, ECDSA P-256 signature, and
// the library's check of the signature it made.
func BenchmarkSignX509SVID(b *testing.B) {
	cfg, _ := testConfig(b, newClock())
	cfg.Clock = nil
	cfg.Logger = nil
	c, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	id := workload(b, "/ns/shop/sa/web")
	pub := mustKey(b).Public()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.SignX509SVID(id, pub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCSR is the CSR check the service runs before signing.
func BenchmarkParseCSR(b *testing.B) {
	der := makeCSR(b, mustKey(b), []string{"spiffe://example.org/ns/shop/sa/web"}, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSR(der); err != nil {
			b.Fatal(err)
		}
	}
}
