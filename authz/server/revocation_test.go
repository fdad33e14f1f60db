package server

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/portcullis/portcullis/authz/policy"
)

// revocations is a CredentialRevocation of the test mesh's namespace, revoking the token with jti
// "leaked" until expires and every token of subject "mallory" issued before issuedBefore.
func revocations(expires, issuedBefore time.Time) string {
	return fmt.Sprintf(`---
apiVersion: portcullis.dev/v1alpha1
kind: CredentialRevocation
metadata: {name: revoked, namespace: demo}
spec:
  jwts:
  - {issuer: https://idp.test, jti: leaked, expires: %q, reason: "pasted in ticket INC-7"}
  - {issuer: https://idp.test, subject: mallory, issuedBefore: %q, expires: %q}
`, expires.Format(time.RFC3339), issuedBefore.Format(time.RFC3339), expires.Format(time.RFC3339))
}

// TestRevokedTokens: a revoked token is refused with 401 revoked before any policy, logged with
// the entry and its reason, traced and counted; other tokens of the issuer are not; a change of
// the list applies at the next mesh version, and an entry stops applying at its expiry.
func TestRevokedTokens(t *testing.T) {
	var skew atomic.Int64 // how far the server's clock is ahead of the real one
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	f := newFixture(t, "", func(o *Options) { o.Now = now })
	start := time.Now()
	leaked := f.token(t, map[string]any{"roles": []string{"admin"}, "jti": "leaked"})
	fine := f.token(t, map[string]any{"roles": []string{"admin"}, "jti": "fine"})
	malloryOld := f.token(t, map[string]any{"roles": []string{"admin"}, "sub": "mallory", "iat": start.Add(-3 * time.Minute).Unix()})
	malloryNew := f.token(t, map[string]any{"roles": []string{"admin"}, "sub": "mallory", "iat": start.Add(-time.Minute).Unix()})
	malloryNoIat := f.token(t, map[string]any{"roles": []string{"admin"}, "sub": "mallory", "iat": nil})
	check := func(tok string) (int, policy.Code) {
		t.Helper()
		resp, err := f.srv.Check(context.Background(), request(t, all(setPath("/admin/users"), setHeader("authorization", "Bearer "+tok))))
		if err != nil {
			t.Fatal(err)
		}
		return httpCode(resp), decisionCode(resp)
	}
	for name, tok := range map[string]string{"leaked": leaked, "fine": fine, "mallory old": malloryOld} {
		if status, code := check(tok); status != 200 {
			t.Fatalf("%s before any revocation: %d %s", name, status, code)
		}
	}

	f.publish(t, f.mesh+revocations(start.Add(30*time.Minute), start.Add(-2*time.Minute)))
	waitFor(t, "the revocation", func() bool { s, _ := check(leaked); return s == 401 })
	for _, tc := range []struct {
		name   string
		tok    string
		status int
		code   policy.Code
	}{
		{"revoked by jti", leaked, 401, policy.CodeRevoked},
		{"another token of the issuer", fine, 200, policy.CodeAllowed},
		{"subject, issued before", malloryOld, 401, policy.CodeRevoked},
		{"subject, issued after", malloryNew, 200, policy.CodeAllowed},
		{"subject, no iat", malloryNoIat, 401, policy.CodeRevoked},
	} {
		if status, code := check(tc.tok); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
	if n := f.srv.Status().Revocations; n != 2 {
		t.Errorf("/debug/authz counts %d revocations, want 2", n)
	}

	// The response: a 401 with the invalid_token challenge.
	f.spans.Reset()
	resp, err := f.srv.Check(context.Background(), request(t, all(setPath("/admin/users"), setHeader("authorization", "Bearer "+leaked),
		setHeader("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))))
	if err != nil {
		t.Fatal(err)
	}
	if got := responseHeader(resp, "www-authenticate"); got != `Bearer realm="portcullis", error="invalid_token"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	// The trace: the JWT span says revoked and by what; the check span has the code.
	var jwtAttrs, checkAttrs map[string]string
	for _, s := range f.spans.GetSpans() {
		switch s.Name {
		case spanJWT:
			jwtAttrs = attrMap(s.Attributes)
		case spanCheck:
			checkAttrs = attrMap(s.Attributes)
		case spanPolicy:
			t.Error("policies were evaluated for a revoked token")
		}
	}
	if jwtAttrs["authz.jwt.revoked"] != "true" || jwtAttrs["authz.jwt.revocation"] != "demo/revoked spec.jwts[0]" || checkAttrs["authz.code"] != "revoked" || checkAttrs["http.response.status_code"] != "401" {
		t.Errorf("spans: jwt %v, check %v", jwtAttrs, checkAttrs)
	}
	// The decision log: who, which entry, why.
	var rec *Record
	for _, r := range f.records(t) {
		if r.Code == policy.CodeRevoked && r.JWT != nil && r.JWT.Revoked != nil && r.JWT.Revoked.Entry == "spec.jwts[0]" {
			rec = &r
		}
	}
	if rec == nil {
		t.Fatal("no revoked decision with entry spec.jwts[0] logged")
	}
	if rec.HTTPStatus != 401 || rec.JWT.Issuer != "https://idp.test" || rec.JWT.Subject != "alice" || rec.JWT.Revoked.Revocation != "demo/revoked" ||
		rec.JWT.Revoked.Reason != "pasted in ticket INC-7" || rec.Reason != "JWT revoked by demo/revoked spec.jwts[0]" || rec.Policy != "" {
		t.Errorf("record %+v, jwt %+v", rec, rec.JWT)
	}
	if strings.Contains(f.dlog.String(), leaked) {
		t.Error("the decision log holds the token")
	}
	// The metrics count it by code, as every code.
	if n := checksWithCode(t, f, policy.CodeRevoked); n < 4 {
		t.Errorf("%d checks counted with code revoked, want at least 4", n)
	}

	// Past the entries' expiry (31 minutes on), the tokens work again: the entry is ignored
	// without a new mesh version.
	skew.Store(int64(31 * time.Minute))
	if status, code := check(leaked); status != 200 {
		t.Errorf("leaked token after its entry expired: %d %s", status, code)
	}
	if status, code := check(malloryOld); status != 200 {
		t.Errorf("mallory's old token after the entry expired: %d %s", status, code)
	}
	skew.Store(0)

	// Removing the list lifts the revocation at the next version.
	f.publish(t, f.mesh)
	waitFor(t, "the revocation to be lifted", func() bool { s, _ := check(leaked); return s == 200 })
}

func checksWithCode(t *testing.T, f *fixture, code policy.Code) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "portcullis_authz_checks" {
				for _, p := range d.DataPoints {
					if c, _ := p.Attributes.Value("code"); c.AsString() == string(code) {
						n += p.Value
					}
				}
			}
		}
	}
	return n
}
