package jwt

import (
	"context"
	"testing"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
)

// TestProvidersReachTheirNamespace: a provider verifies tokens, reads its headers and refuses
// invalid tokens only for destinations of its own namespace; a provider of the root namespace
// does so for every destination.
func TestProvidersReachTheirNamespace(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	jwks := model.JWKSSource{Inline: authztest.JWKS(es)}
	in := func(ns string, d *model.JWTProviderDoc) *model.JWTProviderDoc { d.Metadata.Namespace = ns; return d }
	// tenant-a is the attacker: a provider of its own for the default location, and one reading
	// a header every client sends.
	v := newVerifier(t, Options{},
		in("tenant-a", providerDoc("evil", model.JWTProviderSpec{Issuer: "https://evil.test", JWKS: jwks})),
		in("tenant-a", providerDoc("agent", model.JWTProviderSpec{Issuer: "https://agent.test", JWKS: jwks,
			FromHeaders: []model.JWTHeader{{Name: "User-Agent"}}})),
		in("tenant-b", providerDoc("idp", model.JWTProviderSpec{Issuer: "https://idp-b.test", JWKS: jwks,
			FromHeaders: []model.JWTHeader{{Name: "X-Token"}}})),
		in(model.DefaultRootNamespace, providerDoc("corp", model.JWTProviderSpec{Issuer: "https://corp.test", JWKS: jwks})),
	)
	evil := es.Sign(t, authztest.Claims("https://evil.test", "mallory"), nil)
	corp := es.Sign(t, authztest.Claims("https://corp.test", "alice"), nil)
	cases := []struct {
		name      string
		namespace string
		headers   map[string][]string
		want      Code // "" for no token
		provider  string
	}{
		{"tenant-a's token verifies in tenant-a", "tenant-a", bearer(evil), CodeOK, "tenant-a/evil"},
		{"tenant-a's token is not verified in tenant-b", "tenant-b", bearer(evil), CodeUnknownIssuer, ""},
		{"tenant-a's token is refused by the root provider elsewhere", "tenant-c", bearer(evil), CodeUnknownIssuer, ""},
		{"tenant-a's user-agent provider refuses tenant-a's requests", "tenant-a", map[string][]string{"user-agent": {"curl/8.5.0"}}, CodeMalformed, ""},
		{"tenant-a's user-agent provider does not touch tenant-b's", "tenant-b", map[string][]string{"user-agent": {"curl/8.5.0"}}, "", ""},
		{"an opaque Bearer credential where only the root provider reads it", "tenant-b", bearer("opaque-api-key"), CodeMalformed, ""},
		{"the root provider's token verifies in tenant-b", "tenant-b", bearer(corp), CodeOK, model.DefaultRootNamespace + "/corp"},
		{"the root provider's token verifies where no tenant has a provider", "tenant-c", bearer(corp), CodeOK, model.DefaultRootNamespace + "/corp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := v.Verify(context.Background(), tc.namespace, tc.headers)
			if got := codeOf(r); got != tc.want {
				t.Fatalf("code = %q (%v), want %q", got, r.Err, tc.want)
			}
			if r.Presented != (tc.want != "") {
				t.Errorf("Presented = %v", r.Presented)
			}
			if tc.provider != "" && (len(r.Token.Providers) != 1 || !r.Token.VerifiedBy(tc.provider)) {
				t.Errorf("providers = %v, want %s alone", r.Token.Providers, tc.provider)
			}
		})
	}
	// Verdicts are cached per namespace's providers: tenant-a's token, verified (and cached) for
	// tenant-a above, is still refused in tenant-b.
	if got := codeOf(v.Verify(context.Background(), "tenant-b", bearer(evil))); got != CodeUnknownIssuer {
		t.Errorf("tenant-a's cached token in tenant-b: %q", got)
	}
	for ns, want := range map[string]bool{"tenant-a": true, "tenant-b": true, "tenant-c": true} {
		if v.Covers(ns) != want {
			t.Errorf("Covers(%q) = %v", ns, !want)
		}
	}
}

// TestOpaqueBearerWithoutProviders: where no provider covers a destination, an Authorization
// header that is not a JWT (an API key the application checks) is left to the application.
func TestOpaqueBearerWithoutProviders(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	v := newVerifier(t, Options{}, providerDoc("idp", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{Inline: authztest.JWKS(es)}}))
	if r := v.Verify(context.Background(), "demo", bearer("opaque-api-key")); codeOf(r) != CodeMalformed {
		t.Errorf("in demo, whose provider reads Authorization: %q, want %q", codeOf(r), CodeMalformed)
	}
	if r := v.Verify(context.Background(), "payments", bearer("opaque-api-key")); r.Presented || r.Err != nil || v.Covers("payments") {
		t.Errorf("in payments, which no provider covers: %+v", r)
	}
}

// TestRootNamespaceChange: moving the root namespace moves the providers' reach, though no
// provider changed.
func TestRootNamespaceChange(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	m := meshOf(providerDoc("idp", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{Inline: authztest.JWKS(es)}}))
	v := newVerifier(t, Options{})
	if err := v.Update(m); err != nil {
		t.Fatal(err)
	}
	tok := es.Sign(t, authztest.Claims(issuer, "alice"), nil)
	if r := v.Verify(context.Background(), "other", bearer(tok)); r.Presented {
		t.Fatal("demo's provider verified a token for namespace other")
	}
	m.Config = &model.MeshDoc{Spec: model.MeshSpec{RootNamespace: "demo"}}
	if err := v.Update(m); err != nil {
		t.Fatal(err)
	}
	if r := v.Verify(context.Background(), "other", bearer(tok)); codeOf(r) != CodeOK {
		t.Fatalf("with demo the root namespace, its provider must verify everywhere: %q", codeOf(r))
	}
}
