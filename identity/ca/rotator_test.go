package ca

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// The rotator's tests run the CA's loop in a synctest bubble: days pass in fake time, and each
// step waits until the loop has acted on what came due.

func TestIntermediateRenewedAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, _ := bubbleConfig(t)
		c := runCA(t, cfg)
		changed := c.Changed()
		old := signingCert(c)
		svid, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public())
		if err != nil {
			t.Fatal(err)
		}
		advance(cfg.IntermediateTTL/2 - time.Minute)
		if !signingCert(c).Equal(old) {
			t.Fatal("renewed before half-life")
		}
		advance(2 * time.Minute)
		renewed := signingCert(c)
		if renewed.Equal(old) {
			t.Fatal("intermediate not renewed after half-life")
		}
		select {
		case <-changed:
		default:
			t.Error("Changed not signalled")
		}
		// Persisted: a restart signs with the renewed intermediate.
		if got := signingCert(openCA(t, cfg)); !got.Equal(renewed) {
			t.Error("restart did not load the renewed intermediate")
		}
		// SVIDs from the old intermediate still verify: the bundle holds roots only.
		if _, _, err := x509svid.Verify(parseChain(t, svid.Chain), c, x509svid.WithTime(parseChain(t, svid.Chain)[0].NotAfter.Add(-time.Second))); err != nil {
			t.Errorf("old SVID no longer verifies: %v", err)
		}
	})
}

func TestRootRotationOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, logs := bubbleConfig(t)
		c := runCA(t, cfg)
		oldRoot := c.Roots()[0]

		// Phase 1: prepared. In the bundle, not signing.
		rotated, err := Rotate(cfg.DataDir, RotateOptions{RootTTL: cfg.RootTTL, IntermediateTTL: cfg.IntermediateTTL})
		if err != nil {
			t.Fatal(err)
		}
		if rotated.Phase != PhasePrepared || !rotated.ActivateAt.Equal(time.Now().Add(time.Hour)) {
			t.Fatalf("rotated = %+v, want prepared, activating after the SVID TTL", rotated)
		}
		if _, err := Rotate(cfg.DataDir, RotateOptions{}); err == nil {
			t.Error("a second rotation while one is prepared was accepted")
		}
		changed := c.Changed()
		advance(cfg.ReloadInterval)
		select {
		case <-changed:
		default:
			t.Fatal("Changed not signalled for the prepared root")
		}
		roots := c.Roots()
		if len(roots) != 2 || !roots[0].Equal(oldRoot) {
			t.Fatalf("prepared phase: bundle %d roots, active first = %v", len(roots), roots[0].Equal(oldRoot))
		}
		newRoot := roots[1]
		if signedBy(t, c, newRoot) {
			t.Fatal("prepared root signs already")
		}

		// Phase 2: active. The new root signs from the first reload after its activation time;
		// the old stays for SVIDs it signed.
		advance(time.Until(rotated.ActivateAt) - time.Second)
		oldSVID, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public())
		if err != nil {
			t.Fatal(err)
		}
		if chain := parseChain(t, oldSVID.Chain); chain[len(chain)-1].CheckSignatureFrom(oldRoot) != nil {
			t.Fatal("the new root signs before its activation time")
		}
		advance(time.Second + cfg.ReloadInterval)
		if !signedBy(t, c, newRoot) {
			t.Fatal("new root does not sign after its activation time")
		}
		if _, _, err := x509svid.Verify(parseChain(t, oldSVID.Chain), c, x509svid.WithTime(time.Now())); err != nil {
			t.Fatalf("SVID of the old root rejected during overlap: %v", err)
		}
		if len(c.Roots()) != 2 {
			t.Fatal("old root left the bundle too early")
		}

		// Phase 3: dropped after the longest SVID TTL plus grace.
		advance(time.Until(rotated.ActivateAt.Add(time.Hour+DropGrace)) + cfg.ReloadInterval)
		if roots := c.Roots(); len(roots) != 1 || !roots[0].Equal(newRoot) {
			t.Fatalf("after overlap the bundle has %d roots", len(roots))
		}
		st, err := ReadStatus(cfg.DataDir, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if st.Authorities[0].Phase != PhaseDropped || st.Authorities[1].Phase != PhaseActive || st.Authorities[0].InBundle {
			t.Errorf("status = %+v", st.Authorities)
		}
		if !strings.Contains(logs.String(), "CA authorities changed") {
			t.Error("phase changes not logged")
		}
		// A restart computes the same phases.
		if got := openCA(t, cfg).Roots(); len(got) != 1 || !got[0].Equal(newRoot) {
			t.Error("restart disagrees about the bundle")
		}
	})
}

func TestRotateNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, _ := bubbleConfig(t)
		c := runCA(t, cfg)
		if _, err := Rotate(cfg.DataDir, RotateOptions{Now: true}); err != nil {
			t.Fatal(err)
		}
		advance(cfg.ReloadInterval)
		roots := c.Roots()
		if len(roots) != 2 || !signedBy(t, c, roots[0]) {
			t.Fatal("rotate --now did not activate the new root at once")
		}
	})
}

func TestRevocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, _ := bubbleConfig(t)
		c := runCA(t, cfg)
		idA, idB := workload(t, "/ns/a/sa/a"), workload(t, "/ns/a/sa/b")
		issue := func(id spiffeid.ID) *x509.Certificate {
			s, err := c.SignX509SVID(id, mustKey(t).Public())
			if err != nil {
				t.Fatal(err)
			}
			return parseChain(t, s.Chain)[0]
		}
		a1, b1 := issue(idA), issue(idB)
		if c.RevokedCert(a1) || c.RevokedCert(b1) {
			t.Fatal("revoked before any revocation")
		}
		advance(time.Minute)
		if _, err := Revoke(cfg.DataDir, a1.SerialNumber, spiffeid.ID{}, "", time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := Revoke(cfg.DataDir, nil, idB, "compromised host", time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := Revoke(cfg.DataDir, nil, spiffeid.RequireFromString("spiffe://other.org/x"), "", time.Now()); err == nil {
			t.Error("revoked an ID of another trust domain")
		}
		// The running CA reloads the list within its reload interval.
		advance(cfg.ReloadInterval)
		if !c.Revoked(a1.SerialNumber) || !c.RevokedCert(a1) {
			t.Error("serial revocation not applied")
		}
		if !c.RevokedCert(b1) || c.Revoked(b1.SerialNumber) {
			t.Error("ID revocation: want the cert revoked by ID, not by serial")
		}
		advance(time.Minute)
		if b2 := issue(idB); c.RevokedCert(b2) {
			t.Error("an SVID issued after the ID revocation counts as revoked")
		}
		if a2 := issue(idA); c.RevokedCert(a2) {
			t.Error("serial revocation hit another SVID of the same ID")
		}
		// Entries are pruned once every SVID they could match has expired.
		advance(2 * time.Hour)
		if _, err := Revoke(cfg.DataDir, must(ParseSerial("0a:0b")), spiffeid.ID{}, "", time.Now()); err != nil {
			t.Fatal(err)
		}
		f, err := readRevocations(cfg.DataDir)
		if err != nil || len(f.Entries) != 1 || f.Entries[0].Serial != "a0b" {
			t.Fatalf("after pruning: %+v, %v", f, err)
		}
	})
}

func TestExpiryMetricsAndWarnings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg, logs := bubbleConfig(t)
		// Hourly checks over the root's 30 days.
		cfg.ReloadInterval, cfg.WarnInterval = time.Hour, time.Hour
		reader := sdkmetric.NewManualReader()
		cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
		runCA(t, cfg)
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		roles := map[string]float64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "portcullis_ca_certificate_expiry_seconds" {
					continue
				}
				for _, dp := range m.Data.(metricdata.Gauge[float64]).DataPoints {
					role, _ := dp.Attributes.Value("role")
					roles[role.AsString()] = dp.Value
				}
			}
		}
		if roles["root"] != cfg.RootTTL.Seconds() || roles["intermediate"] != cfg.IntermediateTTL.Seconds() {
			t.Errorf("expiry gauge = %v", roles)
		}
		synctest.Wait() // the loop's first check, at start
		if strings.Contains(logs.String(), "nearing expiry") {
			t.Fatal("warned about a fresh root")
		}
		// A quarter of the root's life left: warned, with the command to run; once a day only
		// (three checks here).
		advance(cfg.RootTTL*3/4 + 2*cfg.WarnInterval)
		if n := strings.Count(logs.String(), `level=WARN msg="CA certificate nearing expiry" role=root`); n != 1 {
			t.Errorf("root warning logged %d times, want 1:\n%s", n, logs)
		}
		if !strings.Contains(logs.String(), "portcullis ca rotate --data-dir") {
			t.Error("warning does not say what to do")
		}
		advance(cfg.RootTTL / 5)
		if !strings.Contains(logs.String(), `level=ERROR msg="CA certificate nearing expiry" role=root`) {
			t.Error("no error-level log with 5% of the root's life left")
		}
	})
}
