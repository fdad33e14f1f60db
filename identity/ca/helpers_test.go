package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(t testing.TB, clock *fakeClock) (Config, *syncBuf) {
	t.Helper()
	logs := &syncBuf{}
	return Config{
		DataDir:         filepath.Join(t.TempDir(), "data"),
		TrustDomain:     testTD,
		RootTTL:         30 * 24 * time.Hour,
		IntermediateTTL: 24 * time.Hour,
		SVIDTTL:         time.Hour,
		Clock:           clock.Now,
		Logger:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

// bubbleConfig is testConfig for a test inside testing/synctest's bubble: the CA reads the
// bubble's clock (time.Now), so time.Sleep moves its clock and the rotator's tickers together.
// Reloads every 10s keep the number of ticks in days of fake time low.
func bubbleConfig(t *testing.T) (Config, *syncBuf) {
	t.Helper()
	cfg, logs := testConfig(t, newClock())
	cfg.Clock, cfg.ReloadInterval = nil, 10*time.Second
	return cfg, logs
}

// runCA opens the CA and runs it (the rotator's loop) until the test ends.
func runCA(t *testing.T, cfg Config) *CA {
	t.Helper()
	c := openCA(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

// advance lets d pass on the bubble's clock, then waits until every goroutine (the rotator,
// a SelfSource) has done what came due and waits again.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// signingCert is the certificate the CA signs SVIDs with now.
func signingCert(c *CA) *x509.Certificate { return c.signer.current().active.signingCert() }

func openCA(t *testing.T, cfg Config) *CA {
	t.Helper()
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func workload(t testing.TB, path string) spiffeid.ID {
	t.Helper()
	return spiffeid.RequireFromPath(testTD, path)
}

func parseChain(t testing.TB, chain [][]byte) []*x509.Certificate {
	t.Helper()
	out := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = c
	}
	return out
}

// makeCSR builds a CSR; edit may change the template before signing.
func makeCSR(t testing.TB, key crypto.Signer, uris []string, edit func(*x509.CertificateRequest)) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// userCA writes a user-provided CA (root, and an intermediate when withIntermediate) and returns
// the --ca-cert and --ca-key paths.
func userCA(t *testing.T, now time.Time, withIntermediate bool) (certFile, keyFile string, root *x509.Certificate) {
	t.Helper()
	tm := &Templates{TrustDomain: testTD, Clock: func() time.Time { return now }}
	rootKey := mustKey(t)
	rt, err := tm.Root(90 * 24 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root, err = sign(rt, rt, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	certs, key := []*x509.Certificate{root}, rootKey
	if withIntermediate {
		ik := mustKey(t)
		it, _, err := tm.Intermediate(60*24*time.Hour, root)
		if err != nil {
			t.Fatal(err)
		}
		ic, err := sign(it, root, ik.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		certs, key = []*x509.Certificate{ic, root}, ik
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, EncodeCertsPEM(certs...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, root
}
