package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
)

const revokeMesh = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: example.org}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: acme-login, namespace: acme}
spec: {issuer: https://login.acme.example, jwks: {inline: '%JWKS%'}}
`

func meshDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	jwks := authztest.JWKS(authztest.NewKey(t, "ES256", "k1"))
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(strings.Replace(revokeMesh, "%JWKS%", jwks, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustTime(t *testing.T, name, v string, now time.Time) model.Time {
	t.Helper()
	tm, err := ParseTimeFlag(name, v, now)
	if err != nil || tm == nil {
		t.Fatalf("%s %q: %v", name, v, err)
	}
	return *tm
}

// TestRevokeJWT: entries are added, updated, pruned once expired; the file loads through
// xds/source with the rest of the mesh; what is wrong is refused and leaves the file alone.
func TestRevokeJWT(t *testing.T) {
	dir := meshDir(t)
	file := filepath.Join(dir, "revocations.yaml")
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	revoke := func(e model.JWTRevocation, ns, tokenFile string, at time.Time) error {
		out.Reset()
		return RevokeJWT(&out, RevokeJWTRequest{File: file, Namespace: ns, Entry: e, TokenFile: tokenFile, ConfigDir: dir, Now: at})
	}

	// One token by jti, in the root namespace (the default), expiring in an hour.
	if err := revoke(model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "j1", Expires: mustTime(t, "expires", "1h", now), Reason: "stolen laptop"}, "", "", now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "added jti j1 of https://login.acme.example until 2026-12-05T11:00:00Z to "+file+" (CredentialRevocation portcullis-system/revocations): 1 entries, 0 expired removed") {
		t.Errorf("output %q", out.String())
	}
	// Every token of a subject issued before now, for twelve hours.
	if err := revoke(model.JWTRevocation{Issuer: "https://login.acme.example", Subject: "alice", IssuedBefore: ptr(mustTime(t, "issued-before", "now", now)), Expires: mustTime(t, "expires", "12h", now)}, "", "", now); err != nil {
		t.Fatal(err)
	}
	// The same jti again updates its entry rather than adding one.
	if err := revoke(model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "j1", Expires: mustTime(t, "expires", "2h", now), Reason: "stolen laptop, INC-9"}, "", "", now); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "updated jti j1") {
		t.Errorf("output %q", out.String())
	}

	m, err := LoadMesh(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.CredentialRevocations) != 1 {
		t.Fatalf("%d revocation documents loaded", len(m.CredentialRevocations))
	}
	got := m.CredentialRevocations[0]
	if model.RefOf(got).String() != "portcullis-system/revocations" || len(got.Spec.JWTs) != 2 {
		t.Fatalf("loaded %s with %+v", model.RefOf(got), got.Spec.JWTs)
	}
	j, s := got.Spec.JWTs[0], got.Spec.JWTs[1]
	if j.JTI != "j1" || !j.Expires.Equal(now.Add(2*time.Hour)) || j.Reason != "stolen laptop, INC-9" ||
		s.Subject != "alice" || !s.IssuedBefore.Equal(now) || !s.Expires.Equal(now.Add(12*time.Hour)) {
		t.Errorf("entries %+v", got.Spec.JWTs)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v %v", st.Mode(), err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".revocations.yaml.tmp-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	// Three hours on, the jti entry has expired: the next revocation removes it.
	later := now.Add(3 * time.Hour)
	if err := revoke(model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "j2", Expires: mustTime(t, "expires", "1h", later)}, "", "", later); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2 entries, 1 expired removed") {
		t.Errorf("output %q", out.String())
	}

	// revoke list shows the entries and their state.
	out.Reset()
	if err := ListRevocations(&out, file, now.Add(13*time.Hour)); err != nil {
		t.Fatal(err)
	}
	list := out.String()
	for _, want := range []string{"portcullis-system/revocations spec.jwts[0]", "sub alice issued before 2026-12-05T10:00:00Z", "2026-12-05T22:00:00Z", "expired", "jti j2"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}

	// Refused, the file unchanged.
	before, _ := os.ReadFile(file)
	for name, tc := range map[string]struct {
		e    model.JWTRevocation
		ns   string
		want string
	}{
		"subject without issued-before": {model.JWTRevocation{Issuer: "https://login.acme.example", Subject: "bob", Expires: mustTime(t, "expires", "1h", later)}, "", "spec.jwts[2].issuedBefore: required with subject"},
		"no expiry":                     {model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "j3"}, "", "spec.jwts[2].expires: required"},
		"expiry already past":           {model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "j3", Expires: mustTime(t, "expires", "-1h", later)}, "", "already past"},
		"another namespace":             {model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "j3", Expires: mustTime(t, "expires", "1h", later)}, "acme", `holds the revocations of namespace "portcullis-system", not "acme"`},
	} {
		if err := revoke(tc.e, tc.ns, "", later); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("a refused revocation changed the file")
	}
}

// TestRevokeFromToken: --token-file picks issuer, jti and expiry from the token, verified or not.
func TestRevokeFromToken(t *testing.T) {
	dir := meshDir(t)
	key := authztest.NewKey(t, "ES256", "k1")
	claims := authztest.Claims("https://login.acme.example", "alice", "orders")
	claims["jti"] = "leaked-1"
	tokenFile := filepath.Join(t.TempDir(), "leaked.jwt")
	if err := os.WriteFile(tokenFile, []byte(key.Sign(t, claims, nil)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "acme-revocations.yaml")
	var out bytes.Buffer
	err := RevokeJWT(&out, RevokeJWTRequest{File: file, Namespace: "acme", TokenFile: tokenFile, ConfigDir: dir, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "WITHOUT verifying it") || strings.Contains(out.String(), "warning") {
		t.Errorf("output %q", out.String())
	}
	m, err := LoadMesh(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := m.CredentialRevocations[0].Spec.JWTs[0]
	exp := time.Unix(claims["exp"].(int64), 0)
	if model.RefOf(m.CredentialRevocations[0]).Namespace != "acme" || e.Issuer != "https://login.acme.example" || e.JTI != "leaked-1" || !e.Expires.Equal(exp) {
		t.Errorf("entry %+v", e)
	}

	// acme's list naming an issuer no provider of acme has: written, with a warning that it
	// revokes nothing.
	out.Reset()
	err = RevokeJWT(&out, RevokeJWTRequest{File: file, Entry: model.JWTRevocation{Issuer: "https://sso.example.org", JTI: "x", Expires: model.Time{Time: time.Now().Add(time.Hour)}}, ConfigDir: dir, Now: time.Now()})
	if err != nil || !strings.Contains(out.String(), `warning: no JWTProvider of namespace "acme" has issuer "https://sso.example.org", so this entry revokes nothing`) {
		t.Errorf("%v: %q", err, out.String())
	}

	// A token without jti cannot be revoked by jti; a garbage file is no token.
	delete(claims, "jti")
	if err := os.WriteFile(tokenFile, []byte(key.Sign(t, claims, nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RevokeJWT(&out, RevokeJWTRequest{File: file, TokenFile: tokenFile, Now: time.Now()}); err == nil || !strings.Contains(err.Error(), `the token has no jti: revoke its subject "alice"`) {
		t.Errorf("token without jti: %v", err)
	}
	if err := os.WriteFile(tokenFile, []byte("not a token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RevokeJWT(&out, RevokeJWTRequest{File: file, TokenFile: tokenFile, Now: time.Now()}); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("garbage token: %v", err)
	}
}

// TestRevokeMeshDoesNotLoad: when the directory does not load, the command says the
// revocation is not in force.
func TestRevokeMeshDoesNotLoad(t *testing.T) {
	dir := meshDir(t)
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("apiVersion: portcullis.dev/v1alpha1\nkind: Nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := RevokeJWT(&out, RevokeJWTRequest{File: filepath.Join(dir, "r.yaml"), ConfigDir: dir, Now: time.Now(),
		Entry: model.JWTRevocation{Issuer: "https://login.acme.example", JTI: "x", Expires: model.Time{Time: time.Now().Add(time.Hour)}}})
	if err == nil || !strings.Contains(err.Error(), "the revocation is NOT in force") {
		t.Errorf("%v", err)
	}
}

func ptr[T any](v T) *T { return &v }
