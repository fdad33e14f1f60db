package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	cfg, _ := testConfig(t, newClock())
	c := openCA(t, cfg)
	if n := len(c.Roots()); n != 1 {
		t.Fatalf("bundle has %d roots, want 1", n)
	}
	err := filepath.WalkDir(filepath.Join(cfg.DataDir, DirName), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(cfg.DataDir)
	if err != nil || st.TrustDomain != "example.org" || st.MaxSVIDTTL() != time.Hour || len(st.Authorities) != 1 {
		t.Fatalf("state = %+v, %v", st, err)
	}
	root := c.Roots()[0]
	if !root.IsCA || root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("root: CA=%v usage=%v URIs=%v", root.IsCA, root.KeyUsage, root.URIs)
	}
	if got := root.NotAfter.Sub(root.NotBefore); got != cfg.RootTTL+Backdate {
		t.Errorf("root lifetime = %s, want %s", got, cfg.RootTTL+Backdate)
	}
}

func TestSignX509SVIDFollowsTheSpec(t *testing.T) {
	clock := newClock()
	cfg, _ := testConfig(t, clock)
	c := openCA(t, cfg)
	id := workload(t, "/ns/shop/sa/web")
	key := mustKey(t)
	svid, err := c.SignX509SVID(id, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, svid.Chain)
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want SVID + intermediate", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("SANs: URIs=%v DNS=%v IP=%v email=%v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Error("SVID must carry basicConstraints CA=false")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU = %v", leaf.ExtKeyUsage)
	}
	if leaf.NotAfter != clock.Now().Add(time.Hour) || leaf.NotBefore != clock.Now().Add(-Backdate) {
		t.Errorf("validity %s..%s", leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.SerialNumber.Cmp(svid.Serial) != 0 || leaf.SerialNumber.BitLen() < 64 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %x (%d bits)", leaf.SerialNumber, leaf.SerialNumber.BitLen())
	}
	got, _, err := x509svid.Verify(chain, c, x509svid.WithTime(clock.Now()))
	if err != nil || got != id {
		t.Fatalf("x509svid.Verify = %v, %v", got, err)
	}
	seen := map[string]bool{}
	for range 50 {
		s, err := c.SignX509SVID(id, key.Public())
		if err != nil {
			t.Fatal(err)
		}
		if seen[s.Serial.String()] {
			t.Fatal("serial repeated")
		}
		seen[s.Serial.String()] = true
	}
}

func TestSignRefusesOtherTrustDomainAndKeyType(t *testing.T) {
	cfg, _ := testConfig(t, newClock())
	c := openCA(t, cfg)
	other := spiffeid.RequireFromString("spiffe://other.org/ns/a/sa/b")
	if _, err := c.SignX509SVID(other, mustKey(t).Public()); err == nil {
		t.Error("signed an SVID for another trust domain")
	}
	if _, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), "not a key"); err == nil {
		t.Error("signed a non-ECDSA key")
	}
}

func TestSVIDTTLCappedByIssuerAndLogged(t *testing.T) {
	clock := newClock()
	cfg, logs := testConfig(t, clock)
	c := openCA(t, cfg)
	inter := c.signer.current().active.signingCert()
	// 30 minutes before the intermediate ends (no refresh, so no renewal).
	clock.Add(inter.NotAfter.Sub(clock.Now()) - 30*time.Minute)
	for range 3 {
		svid, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public())
		if err != nil {
			t.Fatal(err)
		}
		if !svid.NotAfter.Equal(inter.NotAfter) {
			t.Fatalf("NotAfter = %s, want the issuer's %s", svid.NotAfter, inter.NotAfter)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"SVID TTL capped"); n != 1 {
		t.Errorf("cap logged %d times at warning level, want once per issuer:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "granted_ttl=30m0s") {
		t.Errorf("cap log lacks the granted TTL:\n%s", logs)
	}
	// Under a minute left: refuse rather than issue a certificate useless on arrival.
	clock.Add(30*time.Minute - 30*time.Second)
	if _, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public()); !errors.Is(err, ErrIssuerExpiring) {
		t.Errorf("err = %v, want ErrIssuerExpiring", err)
	}
}

func TestReopenLoadsTheSameCA(t *testing.T) {
	cfg, _ := testConfig(t, newClock())
	a := openCA(t, cfg)
	b := openCA(t, cfg)
	if !a.Roots()[0].Equal(b.Roots()[0]) || !a.signer.current().active.signingCert().Equal(b.signer.current().active.signingCert()) {
		t.Fatal("reopening made a new root or intermediate")
	}
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.org")
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), `"example.org", not "other.org"`) {
		t.Fatalf("opening with another trust domain: %v", err)
	}
	td, err := ReadTrustDomain(cfg.DataDir)
	if err != nil || td != testTD {
		t.Fatalf("ReadTrustDomain = %v, %v", td, err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	cfg, _ := testConfig(t, newClock())
	for name, edit := range map[string]func(*Config){
		"no trust domain":        func(c *Config) { c.TrustDomain = spiffeid.TrustDomain{} },
		"no data dir":            func(c *Config) { c.DataDir = "" },
		"cert without key":       func(c *Config) { c.UpstreamCert = "x" },
		"svid ttl too short":     func(c *Config) { c.SVIDTTL = time.Second },
		"intermediate too short": func(c *Config) { c.IntermediateTTL = c.SVIDTTL },
		"root too short":         func(c *Config) { c.RootTTL = c.IntermediateTTL },
	} {
		c := cfg
		edit(&c)
		if _, err := Open(c); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// signedBy reports whether a fresh SVID chains to root.
func signedBy(t *testing.T, c *CA, root *x509.Certificate) bool {
	t.Helper()
	svid, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, svid.Chain)
	return chain[len(chain)-1].CheckSignatureFrom(root) == nil
}

func TestUpstreamCA(t *testing.T) {
	for _, withIntermediate := range []bool{true, false} {
		t.Run(map[bool]string{true: "intermediate", false: "root"}[withIntermediate], func(t *testing.T) {
			clock := newClock()
			cfg, _ := testConfig(t, clock)
			cfg.UpstreamCert, cfg.UpstreamKey, _ = userCA(t, clock.Now(), withIntermediate)
			certs, _, err := DecodePEM(must(os.ReadFile(cfg.UpstreamCert)))
			if err != nil {
				t.Fatal(err)
			}
			userRoot := certs[len(certs)-1]
			c := openCA(t, cfg)
			if roots := c.Roots(); len(roots) != 1 || !roots[0].Equal(userRoot) {
				t.Fatal("bundle is not the user's root")
			}
			svid, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public())
			if err != nil {
				t.Fatal(err)
			}
			chain := parseChain(t, svid.Chain)
			if withIntermediate && !chain[1].Equal(certs[0]) {
				t.Error("SVID not issued by the user's intermediate")
			}
			if _, _, err := x509svid.Verify(chain, c, x509svid.WithTime(clock.Now())); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(authorityDir(cfg.DataDir, c.signer.current().active.id), RootFile)); err != nil {
				t.Fatal(err)
			}
			// The user's key is never copied into the data directory.
			data, err := os.ReadFile(filepath.Join(authorityDir(cfg.DataDir, c.signer.current().active.id), RootFile))
			if err != nil || strings.Contains(string(data), "PRIVATE KEY") {
				t.Errorf("upstream root file holds a key (%v)", err)
			}
			if _, err := Rotate(cfg.DataDir, RotateOptions{Clock: clock.Now}); err == nil {
				t.Error("rotate accepted for an upstream CA")
			}
			// Restart without the flags: refused, not silently replaced.
			cfg.UpstreamCert, cfg.UpstreamKey = "", ""
			if _, err := Open(cfg); err == nil {
				t.Error("restart without --ca-cert accepted")
			}
		})
	}
}

func TestUpstreamCAChecks(t *testing.T) {
	now := newClock().Now()
	certFile, keyFile, _ := userCA(t, now, true)
	otherCert, otherKey, _ := userCA(t, now, true)
	certs, _, err := DecodePEM(must(os.ReadFile(certFile)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leafTmpl, _, err := (&Templates{TrustDomain: testTD, Clock: func() time.Time { return now }}).X509SVID(workload(t, "/ns/a/sa/b"), time.Hour, certs[0])
	if err != nil {
		t.Fatal(err)
	}
	leafKey := mustKey(t)
	leaf, err := sign(leafTmpl, certs[0], leafKey.Public(), mustKeyFromFile(t, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	leafKeyPEM, _ := EncodeKeyPEM(leafKey)
	looseKey := write("loose.key", must(os.ReadFile(keyFile)))
	if err := os.Chmod(looseKey, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, files := range map[string][2]string{
		"key of another CA":    {certFile, otherKey},
		"no root in the chain": {write("noroot.pem", EncodeCertsPEM(certs[0])), keyFile},
		"chain out of order":   {write("mixed.pem", EncodeCertsPEM(certs[0], must(DecodeFirst(otherCert)))), keyFile},
		"not a CA":             {write("leaf.pem", EncodeCertsPEM(leaf, certs[0], certs[1])), write("leaf.key", leafKeyPEM)},
		"key readable by all":  {certFile, looseKey},
		"missing file":         {filepath.Join(dir, "nope.pem"), keyFile},
	} {
		if _, err := loadUpstream(files[0], files[1], testTD, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadUpstream(certFile, keyFile, spiffeid.RequireTrustDomainFromString("other.org"), now); err == nil {
		t.Error("CA with another trust domain's SPIFFE ID accepted")
	}
	if _, err := loadUpstream(certFile, keyFile, testTD, now.Add(100*24*time.Hour)); err == nil {
		t.Error("expired CA accepted")
	}
}

// DecodeFirst returns the last certificate (the root) of a PEM file, for building bad chains.
func DecodeFirst(path string) (*x509.Certificate, error) {
	certs, _, err := DecodePEM(must(os.ReadFile(path)))
	if err != nil {
		return nil, err
	}
	return certs[len(certs)-1], nil
}

func mustKeyFromFile(t *testing.T, path string) crypto.Signer {
	t.Helper()
	_, k, err := DecodePEM(must(os.ReadFile(path)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestParseSerial(t *testing.T) {
	for in, want := range map[string]string{"0A:0B": "a0b", "0x1f": "1f", "abc": "abc", " 01 ": "1"} {
		got, err := ParseSerial(in)
		if err != nil || got.Text(16) != want {
			t.Errorf("ParseSerial(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "xyz", "0x", strings.Repeat("a", 65)} {
		if _, err := ParseSerial(bad); err == nil {
			t.Errorf("ParseSerial(%q) accepted", bad)
		}
	}
}

// TestNewRootPEMServesAsUpstream: a root made with NewRootPEM is a valid upstream CA, and two
// control planes opening it issue SVIDs under one bundle.
func TestNewRootPEMServesAsUpstream(t *testing.T) {
	clock := &fakeClock{now: time.Now()} // NewRootPEM dates the root from the real clock
	certPEM, keyPEM, err := NewRootPEM(testTD, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var replicas []*CA
	for range 2 {
		cfg, _ := testConfig(t, clock)
		cfg.UpstreamCert, cfg.UpstreamKey = certFile, keyFile
		replicas = append(replicas, openCA(t, cfg))
	}
	for i, c := range replicas {
		svid, err := c.SignX509SVID(workload(t, "/ns/a/sa/b"), mustKey(t).Public())
		if err != nil {
			t.Fatal(err)
		}
		// Each replica's SVID verifies against the other's bundle.
		if _, _, err := x509svid.Verify(parseChain(t, svid.Chain), replicas[1-i], x509svid.WithTime(clock.Now())); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
}
