package jwt

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
)

// jwksServer is an HTTPS issuer whose key set, status and discovery document tests change.
type jwksServer struct {
	*httptest.Server
	caFile  string
	mu      sync.Mutex
	jwks    string
	status  int
	fetches atomic.Int64
	issuer  string // discovery document's issuer; the server URL unless set
}

func newJWKSServer(t *testing.T, jwks string) *jwksServer {
	t.Helper()
	s := &jwksServer{jwks: jwks, status: http.StatusOK}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		status, body, iss := s.status, s.jwks, s.issuer
		s.mu.Unlock()
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			if iss == "" {
				iss = s.URL
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": s.URL + "/keys"})
		case "/keys":
			s.fetches.Add(1)
			if status != http.StatusOK {
				http.Error(w, "down", status)
				return
			}
			_, _ = w.Write([]byte(body))
		default:
			http.NotFound(w, r)
		}
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes cut short at Close are expected
	s.StartTLS()
	t.Cleanup(s.Close)
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *jwksServer) set(status int, jwks string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.jwks = status, jwks
}

func (s *jwksServer) provider(name string) *model.JWTProviderDoc {
	return providerDoc(name, model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{URI: s.URL + "/keys", CAFile: s.caFile}})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJWKSURLKeyRotation(t *testing.T) {
	k1, k2 := authztest.NewKey(t, "ES256", "k1"), authztest.NewKey(t, "ES256", "k2")
	srv := newJWKSServer(t, authztest.JWKS(k1))
	clk := newClock()
	v := newVerifier(t, Options{Now: clk.Now, MinRefetchInterval: time.Minute, RefetchWait: 5 * time.Second}, srv.provider("idp"))
	c := authztest.Claims(issuer, "alice")
	c["exp"] = clk.Now().Add(time.Hour).Unix()
	c["iat"] = clk.Now().Unix()
	tok1 := k1.Sign(t, c, nil)

	// The first request waits for the first fetch instead of failing.
	if r := v.Verify(context.Background(), "demo", bearer(tok1)); codeOf(r) != CodeOK {
		t.Fatalf("k1 before rotation: %v", r.Err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1", n)
	}

	// The issuer rotates to k2 (and drops k1). A k2 token triggers a fetch at once.
	srv.set(http.StatusOK, authztest.JWKS(k2))
	clk.Advance(2 * time.Minute)
	tok2 := k2.Sign(t, c, nil)
	if r := v.Verify(context.Background(), "demo", bearer(tok2)); codeOf(r) != CodeOK {
		t.Fatalf("k2 after rotation: %v", r.Err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
	// The cached k1 verdict is dropped with k1: revocation takes effect at the fetch.
	if r := v.Verify(context.Background(), "demo", bearer(tok1)); codeOf(r) != CodeUnknownKey || r.CacheHit {
		t.Fatalf("k1 after it was removed: %q cacheHit=%v", codeOf(r), r.CacheHit)
	}
	// Made-up key ids do not make the service hammer the issuer: one fetch per interval.
	for range 5 {
		if r := v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, map[string]any{"kid": "made-up"}))); codeOf(r) != CodeUnknownKey {
			t.Fatalf("made-up kid: %q", codeOf(r))
		}
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("fetches after unknown kids within the interval = %d, want 2", n)
	}
	clk.Advance(2 * time.Minute)
	v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, map[string]any{"kid": "made-up-2"})))
	if n := srv.fetches.Load(); n != 3 {
		t.Fatalf("fetches after the interval = %d, want 3", n)
	}
}

func TestJWKSEndpointDownKeepsLastGoodKeys(t *testing.T) {
	k1 := authztest.NewKey(t, "ES256", "k1")
	srv := newJWKSServer(t, authztest.JWKS(k1))
	clk := newClock()
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	v := newVerifier(t, Options{Now: clk.Now, Meter: meter, MinRefetchInterval: time.Second}, srv.provider("idp"))
	c := authztest.Claims(issuer, "alice")
	c["exp"] = clk.Now().Add(time.Hour).Unix()
	c["iat"] = clk.Now().Unix()
	if r := v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, nil))); codeOf(r) != CodeOK {
		t.Fatalf("before outage: %v", r.Err)
	}
	srv.set(http.StatusInternalServerError, "")
	clk.Advance(2 * time.Second)
	// An unknown kid forces a fetch, which fails.
	v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, map[string]any{"kid": "other"})))
	st := v.Status()[0]
	if st.State != StateStale || st.Keys != 1 || !strings.Contains(st.LastError, "500") || st.ConsecutiveFailures != 1 {
		t.Fatalf("status = %+v", st)
	}
	// A new k1 token (not cached) still verifies with the last good keys.
	c["jti"] = "fresh"
	if r := v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, nil))); codeOf(r) != CodeOK || r.CacheHit {
		t.Fatalf("during outage: %q hit=%v", codeOf(r), r.CacheHit)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					r, _ := p.Attributes.Value(attribute.Key("result"))
					got[m.Name+"/"+r.AsString()] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					got[m.Name] = p.Value
				}
			}
		}
	}
	for k, want := range map[string]int64{
		"portcullis_authz_jwks_fetches/ok": 1, "portcullis_authz_jwks_fetches/error": 1,
		"portcullis_authz_jwks_provider_up": 0, "portcullis_authz_jwks_keys": 1,
		"portcullis_authz_jwt_verifications/ok": 2, "portcullis_authz_jwt_verifications/unknown_key": 1,
	} {
		if got[k] != want {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], want, got)
		}
	}
}

func TestLateIssuerIsRetried(t *testing.T) {
	k1 := authztest.NewKey(t, "ES256", "k1")
	srv := newJWKSServer(t, "")
	srv.set(http.StatusServiceUnavailable, "")
	v := newVerifier(t, Options{RetryBackoff: 20 * time.Millisecond, MinRefetchInterval: time.Hour, RefetchWait: 50 * time.Millisecond}, srv.provider("idp"))
	tok := k1.Sign(t, authztest.Claims(issuer, "alice"), nil)
	eventually(t, "first failed fetch", func() bool { return v.Status()[0].State == StateFailing })
	if r := v.Verify(context.Background(), "demo", bearer(tok)); codeOf(r) != CodeNoKeys {
		t.Fatalf("issuer down: %q", codeOf(r))
	}
	// Up, but serving an empty set: still not good (istio#37456).
	srv.set(http.StatusOK, `{"keys":[]}`)
	n := srv.fetches.Load()
	eventually(t, "fetch of the empty set", func() bool { return srv.fetches.Load() > n+1 })
	if st := v.Status()[0]; st.State != StateFailing || !strings.Contains(st.LastError, "no usable") {
		t.Fatalf("empty set taken as good: %+v", st)
	}
	srv.set(http.StatusOK, authztest.JWKS(k1))
	eventually(t, "the retry to pick up the keys", func() bool { return v.Status()[0].State == StateOK })
	if r := v.Verify(context.Background(), "demo", bearer(tok)); codeOf(r) != CodeOK {
		t.Fatalf("issuer up: %v", r.Err)
	}
}

func TestOIDCDiscovery(t *testing.T) {
	k1 := authztest.NewKey(t, "RS256", "k1")
	srv := newJWKSServer(t, authztest.JWKS(k1))
	doc := providerDoc("oidc", model.JWTProviderSpec{Issuer: srv.URL, JWKS: model.JWKSSource{OIDCDiscovery: true, CAFile: srv.caFile}})
	v := newVerifier(t, Options{}, doc)
	if r := v.Verify(context.Background(), "demo", bearer(k1.Sign(t, authztest.Claims(srv.URL, "alice"), nil))); codeOf(r) != CodeOK {
		t.Fatalf("discovered keys: %v", r.Err)
	}

	srv.mu.Lock()
	srv.issuer = "https://impostor.test"
	srv.mu.Unlock()
	v2 := newVerifier(t, Options{}, doc)
	eventually(t, "discovery to fail", func() bool { return v2.Status()[0].State == StateFailing })
	if st := v2.Status()[0]; !strings.Contains(st.LastError, "impostor") {
		t.Errorf("status = %+v", st)
	}
}

func TestJWKSFileIsReread(t *testing.T) {
	k1, k2 := authztest.NewKey(t, "ES256", "k1"), authztest.NewKey(t, "ES256", "k2")
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, []byte(authztest.JWKS(k1)), 0o600); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	v := newVerifier(t, Options{Now: clk.Now, MinRefetchInterval: time.Second},
		providerDoc("file", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{File: file}}))
	c := authztest.Claims(issuer, "alice")
	c["exp"] = clk.Now().Add(time.Hour).Unix()
	c["iat"] = clk.Now().Unix()
	// File keys are read before Update returns: no wait, no failure on the first request.
	if r := v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, nil))); codeOf(r) != CodeOK {
		t.Fatalf("k1: %v", r.Err)
	}
	if err := os.WriteFile(file, []byte(authztest.JWKS(k1, k2)), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	if r := v.Verify(context.Background(), "demo", bearer(k2.Sign(t, c, nil))); codeOf(r) != CodeOK {
		t.Fatalf("k2 after the file changed: %v", r.Err)
	}
}

func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://idp.example.com/keys", true},
		{"http://127.0.0.1:8080/keys", true},
		{"http://[::1]/keys", true},
		{"http://localhost/keys", true},
		{"http://idp.example.com/keys", false},
		{"ftp://idp.example.com/keys", false},
		{"/keys", false},
	} {
		if err := checkFetchURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkFetchURL(%q) = %v", tc.url, err)
		}
	}
}

// An issuer that hangs must not hold a check past its caller's deadline: the proxy would time
// out and apply its failure mode, which in a mesh that fails open lets the token through.
func TestRefetchForUnknownKidAnswersBeforeTheDeadline(t *testing.T) {
	k1 := authztest.NewKey(t, "ES256", "k1")
	hang := make(chan struct{})
	var hanging atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if hanging.Load() {
			<-hang
			return
		}
		_, _ = w.Write([]byte(authztest.JWKS(k1)))
	}))
	defer srv.Close()
	defer close(hang) // before Close, which waits for the hung handler
	v := newVerifier(t, Options{RefetchWait: 5 * time.Second, MinRefetchInterval: time.Nanosecond}, providerDoc("idp", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{URI: srv.URL}}))
	c := authztest.Claims(issuer, "alice")
	if r := v.Verify(context.Background(), "demo", bearer(k1.Sign(t, c, nil))); codeOf(r) != CodeOK {
		t.Fatalf("known key: %v", r.Err)
	}
	hanging.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := v.Verify(ctx, "demo", bearer(authztest.NewKey(t, "ES256", "k2").Sign(t, c, nil)))
	if took := time.Since(start); codeOf(r) != CodeUnknownKey || took >= 200*time.Millisecond {
		t.Fatalf("unknown kid while the issuer hangs: %q after %s; want %q before the 200ms deadline", codeOf(r), took, CodeUnknownKey)
	}
}
