package revocation

import (
	"testing"
	"time"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// tenants: the platform's root namespace with the corporate SSO, and tenants acme and globex
// with their own issuers. globex also trusts an issuer of the same name as acme's.
const tenants = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: example.org, rootNamespace: portcullis-system}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: corp-sso, namespace: portcullis-system}
spec: {issuer: https://sso.example.org, jwks: {inline: '{"keys":[]}'}}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: acme-login, namespace: acme}
spec: {issuer: https://login.acme.example, jwks: {inline: '{"keys":[]}'}}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: globex-login, namespace: globex}
spec: {issuer: https://login.globex.example, jwks: {inline: '{"keys":[]}'}}
---
apiVersion: portcullis.dev/v1alpha1
kind: CredentialRevocation
metadata: {name: platform, namespace: portcullis-system}
spec:
  jwts:
  - {issuer: https://sso.example.org, jti: sso-leaked, expires: "2026-12-05T12:00:00Z", reason: pasted in a ticket}
  - {issuer: https://login.globex.example, subject: mallory, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T11:00:00Z"}
  - {issuer: https://sso.example.org, jti: long-gone, expires: "2026-12-01T00:00:00Z"}
---
apiVersion: portcullis.dev/v1alpha1
kind: CredentialRevocation
metadata: {name: acme-revocations, namespace: acme}
spec:
  jwts:
  - {issuer: https://login.acme.example, jti: acme-leaked, expires: "2026-12-05T12:00:00Z", reason: laptop stolen}
  - {issuer: https://login.acme.example, subject: alice, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T20:00:00Z", reason: log out everywhere}
  # acme trying to revoke other tenants' users and the platform's: these must do nothing.
  - {issuer: https://login.globex.example, jti: globex-token, expires: "2026-12-05T12:00:00Z"}
  - {issuer: https://login.globex.example, subject: bob, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T20:00:00Z"}
  - {issuer: https://sso.example.org, subject: carol, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T20:00:00Z"}
`

func tenantMesh(t *testing.T) *model.Mesh {
	t.Helper()
	docs, ps := source.Decode("mesh.yaml", []byte(tenants))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	m, ps := model.Build(docs)
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	return m
}

var (
	built = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	cut   = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
)

func TestRevoked(t *testing.T) {
	x := New(tenantMesh(t), built)
	if x.Len() != 7 {
		t.Errorf("%d entries indexed, want 7 (the one expired before the build is left out)", x.Len())
	}
	now := built.Add(time.Hour)
	cases := []struct {
		name      string
		providers []string
		claims    map[string]any
		at        time.Time
		want      string // document and field of the matching entry, "" for none
		reason    string
	}{
		{"root jti", []string{"portcullis-system/corp-sso"}, map[string]any{"iss": "https://sso.example.org", "sub": "dave", "jti": "sso-leaked"}, now, "portcullis-system/platform spec.jwts[0]", "pasted in a ticket"},
		{"another token of the issuer", []string{"portcullis-system/corp-sso"}, map[string]any{"iss": "https://sso.example.org", "sub": "dave", "jti": "sso-fine"}, now, "", ""},
		{"same jti, another issuer", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "dave", "jti": "sso-leaked"}, now, "", ""},
		{"root entry for a tenant's issuer", []string{"globex/globex-login"}, map[string]any{"iss": "https://login.globex.example", "sub": "mallory", "iat": cut.Add(-time.Second).Unix()}, now, "portcullis-system/platform spec.jwts[1]", ""},
		{"tenant jti", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "erin", "jti": "acme-leaked"}, now, "acme/acme-revocations spec.jwts[0]", "laptop stolen"},
		{"jti entry past its expiry", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "erin", "jti": "acme-leaked"}, time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC), "", ""},
		{"jti entry just before its expiry", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "erin", "jti": "acme-leaked"}, time.Date(2026, 12, 5, 11, 59, 59, 0, time.UTC), "acme/acme-revocations spec.jwts[0]", "laptop stolen"},
		{"subject issued before", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alice", "iat": cut.Add(-time.Second).Unix()}, now, "acme/acme-revocations spec.jwts[1]", "log out everywhere"},
		{"subject issued at the time", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alice", "iat": cut.Unix()}, now, "", ""},
		{"subject issued after", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alice", "iat": cut.Add(time.Minute).Unix()}, now, "", ""},
		{"subject without iat", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alice"}, now, "acme/acme-revocations spec.jwts[1]", "log out everywhere"},
		{"subject entry past its expiry", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alice", "iat": cut.Add(-time.Hour).Unix()}, time.Date(2026, 12, 5, 20, 0, 0, 0, time.UTC), "", ""},
		{"another subject", []string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alicia", "iat": cut.Add(-time.Hour).Unix()}, now, "", ""},
		// acme's entries for tokens it did not verify do nothing.
		{"tenant revoking another tenant's token", []string{"globex/globex-login"}, map[string]any{"iss": "https://login.globex.example", "sub": "zed", "jti": "globex-token"}, now, "", ""},
		{"tenant revoking another tenant's user", []string{"globex/globex-login"}, map[string]any{"iss": "https://login.globex.example", "sub": "bob", "iat": cut.Add(-time.Hour).Unix()}, now, "", ""},
		{"tenant revoking the platform's user", []string{"portcullis-system/corp-sso"}, map[string]any{"iss": "https://sso.example.org", "sub": "carol", "iat": cut.Add(-time.Hour).Unix()}, now, "", ""},
		// Unless its own provider verified it: then the token is one acme accepts, at acme only.
		{"tenant revoking a token its own provider verified", []string{"acme/sso-mirror", "portcullis-system/corp-sso"}, map[string]any{"iss": "https://sso.example.org", "sub": "carol", "iat": cut.Add(-time.Hour).Unix()}, now, "acme/acme-revocations spec.jwts[4]", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := jwt.NewToken(tc.providers, tc.claims)
			if err != nil {
				t.Fatal(err)
			}
			e := x.Revoked(tok, tc.at)
			got := ""
			if e != nil {
				got = e.Document + " " + e.Field()
			}
			if got != tc.want {
				t.Fatalf("revoked by %q, want %q", got, tc.want)
			}
			if e != nil && e.Reason != tc.reason {
				t.Errorf("reason %q, want %q", e.Reason, tc.reason)
			}
		})
	}
}

func TestEmptyIndex(t *testing.T) {
	tok, err := jwt.NewToken([]string{"acme/acme-login"}, map[string]any{"iss": "https://login.acme.example", "sub": "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var none *Index
	if none.Revoked(tok, built) != nil || none.Len() != 0 {
		t.Error("a nil index revoked a token")
	}
	m := tenantMesh(t)
	after := New(m, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	if after.Len() != 0 || after.Revoked(tok, built) != nil {
		t.Errorf("an index built after every expiry holds %d entries", after.Len())
	}
}
