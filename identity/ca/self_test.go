package ca

import (
	"context"
	"crypto/x509"
	"testing"
	"testing/synctest"
)

func TestSelfSourceRotatesWithTheCA(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, _ := bubbleConfig(t)
		c := runCA(t, cfg)
		id := ControlPlaneID(testTD)
		src, err := NewSelfSource(c, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		svid, err := src.GetX509SVID()
		if err != nil || svid.ID != id {
			t.Fatalf("SVID %v, %v", svid, err)
		}
		tc, err := src.GetCertificate(nil)
		if err != nil || len(tc.Certificate) != 3 {
			t.Fatalf("TLS chain has %d certificates, want SVID, intermediate, root", len(tc.Certificate))
		}
		if root := must(x509.ParseCertificate(tc.Certificate[2])); !root.Equal(c.Roots()[0]) {
			t.Error("TLS chain does not end with the bundle's root")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("self source: %v", err)
			}
		})
		if _, err := Rotate(cfg.DataDir, RotateOptions{Now: true}); err != nil {
			t.Fatal(err)
		}
		// The CA picks the rotation up at its next reload and the source reissues at once.
		oldRoot := c.Roots()[0]
		advance(cfg.ReloadInterval)
		if c.Roots()[0].Equal(oldRoot) {
			t.Fatal("the CA did not activate the new root")
		}
		tc, _ = src.GetCertificate(nil)
		if !must(x509.ParseCertificate(tc.Certificate[2])).Equal(c.Roots()[0]) {
			t.Fatal("control plane SVID not reissued under the new root")
		}
	})
}
