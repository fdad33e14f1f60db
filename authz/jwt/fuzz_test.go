package jwt

import (
	"context"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
)

// FuzzVerify feeds arbitrary text as a bearer token: verification must never panic, and nothing
// but the one genuinely signed seed may verify.
func FuzzVerify(f *testing.F) {
	key := authztest.NewKey(f, "ES256", "k1")
	good := key.Sign(f, authztest.Claims(issuer, "alice"), nil)
	for _, seed := range []string{
		good, good[:len(good)/2], good + "x", strings.Replace(good, ".", "..", 1),
		authztest.Unsigned(f, authztest.Claims(issuer, "alice")),
		"a.b.c", "..", "e30.e30.", "e30.e30.e30", "eyJhbGciOiJFUzI1NiJ9.bnVsbA.AA", "a.b.c.d.e",
		"eyJhbGciOiJFUzI1NiIsImNyaXQiOlsieCJdfQ.e30.AA", strings.Repeat("A", MaxTokenBytes+1),
	} {
		f.Add(seed)
	}
	v, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	if err := v.Update(meshOf(providerDoc("idp", model.JWTProviderSpec{
		Issuer: issuer, Algorithms: model.JWTAlgorithms, JWKS: model.JWKSSource{Inline: authztest.JWKS(key)},
	}))); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		r := v.Verify(context.Background(), "demo", bearer(tok))
		if r.Token != nil && strings.TrimSpace(tok) != good {
			t.Fatalf("forged token verified: %q", tok)
		}
		if r.Err != nil && r.Token != nil {
			t.Fatal("both a token and an error")
		}
	})
}

// FuzzParseUnverified: reading a token for `portcullis revoke --token-file` never panics, and
// what it reads is what the verifier would read.
func FuzzParseUnverified(f *testing.F) {
	key := authztest.NewKey(f, "ES256", "k1")
	claims := authztest.Claims(issuer, "alice")
	claims["jti"] = "j-1"
	good := key.Sign(f, claims, nil)
	for _, seed := range []string{good, good[:len(good)/2], "a.b.c", "e30.e30.", "e30.eyJqdGkiOjF9.AA", strings.Repeat("A", MaxTokenBytes+1)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		u, err := ParseUnverified(tok)
		if err != nil && u != (Unverified{}) {
			t.Fatalf("an error and claims: %+v", u)
		}
		if strings.TrimSpace(tok) == good && (err != nil || u.Issuer != issuer || u.Subject != "alice" || u.ID != "j-1" || u.Expiry.IsZero()) {
			t.Fatalf("the signed seed read as %+v, %v", u, err)
		}
	})
}
