package certsvc_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/portcullis/portcullis/identity/attest"
	"github.com/portcullis/portcullis/identity/ca"
	"github.com/portcullis/portcullis/identity/certpb"
	"github.com/portcullis/portcullis/identity/internal/cptest"
)

var (
	td    = cptest.TrustDomain
	web   = spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	admin = spiffeid.RequireFromPath(td, "/ns/shop/sa/admin")
)

// client dials the control plane, verifying it by the bundle and its SPIFFE ID; with svid set it
// presents that SVID as its client certificate.
func client(t testing.TB, cp *cptest.ControlPlane, svid *x509svid.SVID) certpb.CertificateServiceClient {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(td, cp.Roots())
	var cfg *tls.Config
	if svid == nil {
		cfg = tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(ca.ControlPlaneID(td)))
	} else {
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(ca.ControlPlaneID(td)))
	}
	conn, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return certpb.NewCertificateServiceClient(conn)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t testing.TB, key crypto.Signer, edit func(*x509.CertificateRequest), ids ...spiffeid.ID) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, id := range ids {
		tmpl.URIs = append(tmpl.URIs, id.URL())
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

// join gets an SVID for id with a fresh token.
func join(t testing.TB, cp *cptest.ControlPlane, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	resp, err := client(t, cp, nil).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, key, nil, id), JoinToken: cp.Token(t, id, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return svidOf(t, resp, key)
}

func svidOf(t testing.TB, resp *certpb.SignResponse, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range resp.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

func wantStatus(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	s, _ := status.FromError(err)
	if s.Code() != code || !strings.Contains(s.Message(), contains) {
		t.Fatalf("got %v %q, want %v containing %q", s.Code(), s.Message(), code, contains)
	}
}

func TestJoinWithToken(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	key := newKey(t)
	resp, err := client(t, cp, nil).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, key, nil, web), JoinToken: cp.Token(t, web, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	svid := svidOf(t, resp, key)
	if resp.SpiffeId != web.String() || svid.ID != web || resp.ExpiresAt != svid.Certificates[0].NotAfter.Unix() {
		t.Errorf("response %s / %s / %d", resp.SpiffeId, svid.ID, resp.ExpiresAt)
	}
	if len(resp.TrustBundle) != 1 || string(resp.TrustBundle[0]) != string(cp.Roots()[0].Raw) {
		t.Error("trust bundle is not the CA's root")
	}
	if _, _, err := x509svid.Verify(svid.Certificates, cp.CA); err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(svid.Certificates[0].PublicKey) {
		t.Fatal("SVID is not for the CSR's key")
	}
}

func TestRenewOverMTLS(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	svid := join(t, cp, web)
	key := newKey(t)
	resp, err := client(t, cp, svid).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, key, nil, web)})
	if err != nil {
		t.Fatal(err)
	}
	if got := svidOf(t, resp, key); got.ID != web || got.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0 {
		t.Fatal("renewal did not issue a new SVID for the same ID")
	}
}

// TestRefusals covers every refusal of the service with the status, the reason metric and a log
// line that carries no secret.
func TestRefusals(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	cp := cptest.Start(t, cptest.Options{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")})
	ctx := context.Background()
	anon := client(t, cp, nil)
	key := newKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badSig := csrFor(t, key, nil, web)
	badSig[len(badSig)-2] ^= 0x55
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, _, err := attest.Create(otherKey, attest.Request{SPIFFEID: web, Pins: []string{ca.Pin(cp.Roots()[0])}})
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := attest.Create(cp.Key, attest.Request{SPIFFEID: web, TTL: time.Hour, Pins: []string{ca.Pin(cp.Roots()[0])}, Now: time.Now().Add(-2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	otherTD, _, err := attest.Create(cp.Key, attest.Request{SPIFFEID: spiffeid.RequireFromString("spiffe://other.org/ns/a/sa/b"), Pins: []string{ca.Pin(cp.Roots()[0])}})
	if err != nil {
		t.Fatal(err)
	}
	used := cp.Token(t, web, time.Hour)
	if _, err := anon.Sign(ctx, &certpb.SignRequest{Csr: csrFor(t, key, nil, web), JoinToken: used}); err != nil {
		t.Fatal(err)
	}
	mismatchToken := cp.Token(t, web, time.Hour)
	uri := func(s string) func(*x509.CertificateRequest) {
		return func(r *x509.CertificateRequest) { u, _ := url.Parse(s); r.URIs = append(r.URIs, u) }
	}
	tokens := []string{}
	for name, tc := range map[string]struct {
		csr    []byte
		token  string
		code   codes.Code
		reason string
		msg    string
	}{
		"CSR for another SPIFFE ID": {csrFor(t, key, nil, admin), mismatchToken, codes.PermissionDenied, "spiffe_id_mismatch", "CSR asks for spiffe://example.org/ns/shop/sa/admin but the join token is bound to spiffe://example.org/ns/shop/sa/web"},
		"extra DNS SAN":             {csrFor(t, key, func(r *x509.CertificateRequest) { r.DNSNames = []string{"evil"} }, web), cp.Token(t, web, time.Hour), codes.InvalidArgument, "extra_san", "only the SPIFFE ID"},
		"extra URI SAN":             {csrFor(t, key, uri("spiffe://example.org/ns/shop/sa/admin"), web), cp.Token(t, web, time.Hour), codes.InvalidArgument, "extra_san", "URI SANs"},
		"extra email SAN":           {csrFor(t, key, func(r *x509.CertificateRequest) { r.EmailAddresses = []string{"a@b.c"} }, web), cp.Token(t, web, time.Hour), codes.InvalidArgument, "extra_san", "email"},
		"RSA key":                   {csrFor(t, rsaKey, nil, web), cp.Token(t, web, time.Hour), codes.InvalidArgument, "key_type", "ECDSA P-256 key is required"},
		"P-384 key":                 {csrFor(t, p384, nil, web), cp.Token(t, web, time.Hour), codes.InvalidArgument, "key_type", "ECDSA P-384"},
		"bad CSR signature":         {badSig, cp.Token(t, web, time.Hour), codes.InvalidArgument, "csr_signature", "signature"},
		"not a CSR":                 {[]byte("hello"), cp.Token(t, web, time.Hour), codes.InvalidArgument, "csr_malformed", "PKCS#10"},
		"expired token":             {csrFor(t, key, nil, web), expired, codes.Unauthenticated, "token_expired", "join token expired"},
		"forged token":              {csrFor(t, key, nil, web), forged, codes.Unauthenticated, "token_forged", "not signed by this control plane"},
		"malformed token":           {csrFor(t, key, nil, web), "ptk1.not.a-token", codes.Unauthenticated, "token_malformed", "malformed"},
		"reused token":              {csrFor(t, key, nil, web), used, codes.Unauthenticated, "token_reused", "already used"},
		"token of another domain":   {csrFor(t, key, nil, spiffeid.RequireFromString("spiffe://other.org/ns/a/sa/b")), otherTD, codes.PermissionDenied, "trust_domain", "trust domain other.org"},
		"no credential":             {csrFor(t, key, nil, web), "", codes.Unauthenticated, "no_credential", "no join token and no client certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := anon.Sign(ctx, &certpb.SignRequest{Csr: tc.csr, JoinToken: tc.token})
			wantStatus(t, err, tc.code, tc.msg)
			if !strings.Contains(cp.Logs.String(), "reason="+tc.reason) {
				t.Errorf("no log line with reason=%s", tc.reason)
			}
			if tc.token != "" {
				tokens = append(tokens, tc.token)
			}
		})
	}
	// A refused CSR does not burn the token: the right CSR still works with it.
	if _, err := anon.Sign(ctx, &certpb.SignRequest{Csr: csrFor(t, key, nil, web), JoinToken: mismatchToken}); err != nil {
		t.Fatalf("token burned by a refused request: %v", err)
	}
	logs := cp.Logs.String()
	for _, tok := range tokens {
		if sig := tok[strings.LastIndex(tok, ".")+1:]; len(sig) > 8 && strings.Contains(logs, sig) {
			t.Fatal("a token appears in the log")
		}
	}
	if strings.Contains(logs, "PRIVATE KEY") {
		t.Fatal("a key appears in the log")
	}
	refused := refusedByReason(t, reader)
	for _, r := range []string{"spiffe_id_mismatch", "extra_san", "key_type", "csr_signature", "token_expired", "token_forged", "token_reused", "no_credential"} {
		if refused[r] == 0 {
			t.Errorf("refusal metric has no %s: %v", r, refused)
		}
	}
}

func refusedByReason(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "portcullis_ca_svids_refused" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				v, _ := dp.Attributes.Value(attribute.Key("reason"))
				out[v.AsString()] += dp.Value
			}
		}
	}
	return out
}

func TestRenewalRefusals(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	ctx := context.Background()

	t.Run("CSR for another SPIFFE ID", func(t *testing.T) {
		svid := join(t, cp, web)
		_, err := client(t, cp, svid).Sign(ctx, &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, admin)})
		wantStatus(t, err, codes.PermissionDenied, "client SVID is bound to spiffe://example.org/ns/shop/sa/web")
	})
	t.Run("revoked by serial", func(t *testing.T) {
		svid := join(t, cp, web)
		c := client(t, cp, svid)
		if _, err := ca.Revoke(cp.DataDir, svid.Certificates[0].SerialNumber, spiffeid.ID{}, "test", time.Now()); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return cp.CA.Revoked(svid.Certificates[0].SerialNumber) })
		_, err := c.Sign(ctx, &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web)})
		wantStatus(t, err, codes.PermissionDenied, "is revoked")
		if !strings.Contains(cp.Logs.String(), "reason=svid_revoked") {
			t.Error("revocation refusal not logged")
		}
	})
	t.Run("revoked by SPIFFE ID", func(t *testing.T) {
		svid := join(t, cp, admin)
		if _, err := ca.Revoke(cp.DataDir, nil, admin, "", time.Now()); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return cp.CA.RevokedCert(svid.Certificates[0]) })
		_, err := client(t, cp, svid).Sign(ctx, &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, admin)})
		wantStatus(t, err, codes.PermissionDenied, "is revoked")
		// Joining again with a new token (from the next second on) is the way back.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		if fresh := join(t, cp, admin); cp.CA.RevokedCert(fresh.Certificates[0]) {
			t.Fatal("an SVID issued after the ID revocation is revoked")
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		other := cptest.Start(t, cptest.Options{Quiet: true})
		svid := join(t, other, web)
		_, err := client(t, cp, svid).Sign(ctx, &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web)})
		// The handshake fails; with TLS 1.3 the client may see the alert or only a reset.
		wantStatus(t, err, codes.Unavailable, "")
	})
}

// TestExpiredSVID: an expired client certificate fails the TLS handshake, and a connection that
// outlives its certificate gets Unauthenticated.
func TestExpiredSVID(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{SVIDTTL: 2 * time.Second})
	svid := join(t, cp, web)
	live := client(t, cp, svid)
	if _, err := live.Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(svid.Certificates[0].NotAfter) + 100*time.Millisecond)
	_, err := live.Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web)})
	wantStatus(t, err, codes.Unauthenticated, "client SVID (serial")
	_, err = client(t, cp, svid).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web)})
	wantStatus(t, err, codes.Unavailable, "") // handshake refused: "tls: expired certificate" or a reset
	t.Logf("new connection with the expired SVID: %v", err)
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCSRFlood: 1000 workloads join at once, each with its own token.
func TestCSRFlood(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{Quiet: true})
	const n, workers = 1000, 32
	type job struct {
		csr   []byte
		token string
	}
	jobs := make([]job, n)
	for i := range jobs {
		id := spiffeid.RequireFromPath(td, fmt.Sprintf("/ns/flood/sa/w%d", i))
		jobs[i] = job{csrFor(t, newKey(t), nil, id), cp.Token(t, id, time.Hour)}
	}
	c := client(t, cp, nil)
	var mu sync.Mutex
	serials := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan job)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for j := range next {
				resp, err := c.Sign(context.Background(), &certpb.SignRequest{Csr: j.csr, JoinToken: j.token})
				if err != nil {
					errs <- err
					continue
				}
				leaf, err := x509.ParseCertificate(resp.CertChain[0])
				if err != nil {
					errs <- err
					continue
				}
				mu.Lock()
				serials[leaf.SerialNumber.String()] = true
				mu.Unlock()
			}
		})
	}
	for _, j := range jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(serials) != n {
		t.Fatalf("%d distinct SVIDs, want %d", len(serials), n)
	}
	t.Logf("%d joins in %s", n, time.Since(start).Round(time.Millisecond))
}

// TestRestartKeepsTokensUsedAndCA: a restarted control plane loads the same CA and still
// refuses a token used before the restart.
func TestRestartKeepsTokensUsedAndCA(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cp := cptest.Start(t, cptest.Options{DataDir: dataDir})
	root := cp.Roots()[0]
	tok := cp.Token(t, web, time.Hour)
	key := newKey(t)
	if _, err := client(t, cp, nil).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, key, nil, web), JoinToken: tok}); err != nil {
		t.Fatal(err)
	}
	svid := join(t, cp, admin)
	cp.Stop()

	cp = cptest.Start(t, cptest.Options{DataDir: dataDir})
	if !cp.Roots()[0].Equal(root) {
		t.Fatal("restart made a new root")
	}
	_, err := client(t, cp, nil).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, key, nil, web), JoinToken: tok})
	wantStatus(t, err, codes.Unauthenticated, "already used")
	// SVIDs from before the restart still renew.
	if _, err := client(t, cp, svid).Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, admin)}); err != nil {
		t.Fatalf("renewal after restart: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, attest.DirName, attest.UsedFile)); err != nil {
		t.Fatal(err)
	}
}

// TestSignSpans: every request is a "ca.sign" span naming the credential kind and the SPIFFE ID;
// a refusal is an error span with the reason, and no token appears in it.
func TestSignSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	cp := cptest.Start(t, cptest.Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	token := cp.Token(t, web, time.Hour)
	c := client(t, cp, nil)
	if _, err := c.Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web), JoinToken: token}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Sign(context.Background(), &certpb.SignRequest{Csr: csrFor(t, newKey(t), nil, web), JoinToken: token})
	wantStatus(t, err, codes.Unauthenticated, "already used")
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for i, s := range spans {
		attrs := map[attribute.Key]string{}
		for _, a := range s.Attributes() {
			attrs[a.Key] = a.Value.String()
			if strings.Contains(a.Value.String(), token) {
				t.Errorf("span %d attribute %s holds the token", i, a.Key)
			}
		}
		if s.Name() != "ca.sign" || attrs["portcullis.credential"] != "join_token" || attrs["portcullis.spiffe_id"] != web.String() {
			t.Errorf("span %d: %s %v", i, s.Name(), attrs)
		}
		wantErr := i == 1
		if (s.Status().Code == otelcodes.Error) != wantErr || (wantErr && attrs["portcullis.refused_reason"] != "token_reused") {
			t.Errorf("span %d: status %v, attributes %v", i, s.Status(), attrs)
		}
	}
}
