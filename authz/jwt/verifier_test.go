package jwt

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/xds/model"
)

const issuer = "https://idp.test"

func providerDoc(name string, spec model.JWTProviderSpec) *model.JWTProviderDoc {
	return &model.JWTProviderDoc{
		TypeMeta: model.TypeMeta{APIVersion: model.APIVersion, Kind: model.KindJWTProvider},
		Metadata: model.ObjectMeta{Name: name, Namespace: "demo"},
		Spec:     spec,
	}
}

func meshOf(docs ...*model.JWTProviderDoc) *model.Mesh {
	return &model.Mesh{Version: "test", JWTProviders: docs}
}

func newVerifier(t *testing.T, opts Options, docs ...*model.JWTProviderDoc) *Verifier {
	t.Helper()
	v, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	if err := v.Update(meshOf(docs...)); err != nil {
		t.Fatal(err)
	}
	return v
}

func bearer(tok string) map[string][]string {
	return map[string][]string{"authorization": {"Bearer " + tok}}
}

func codeOf(r Result) Code {
	if r.Err != nil {
		return r.Err.Code
	}
	if r.Token == nil {
		return ""
	}
	return CodeOK
}

// keys made once per test binary: RSA generation is slow under -race.
var testKeys = struct {
	once                       atomic.Bool
	rs, rsOther, ps, es, es384 *authztest.Key
	ed                         *authztest.Key
}{}

func keys(t *testing.T) (rs, rsOther, ps, es, es384, ed *authztest.Key) {
	k := &testKeys
	if !k.once.Load() {
		k.rs = authztest.NewKey(t, "RS256", "rs1")
		k.rsOther = authztest.NewKey(t, "RS256", "rs1") // same kid, different key
		k.ps = authztest.NewKey(t, "PS256", "ps1")
		k.es = authztest.NewKey(t, "ES256", "es1")
		k.es384 = authztest.NewKey(t, "ES384", "es384")
		k.ed = authztest.NewKey(t, "EdDSA", "ed1")
		k.once.Store(true)
	}
	return k.rs, k.rsOther, k.ps, k.es, k.es384, k.ed
}

func with(c map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func TestVerifyTokens(t *testing.T) {
	rs, rsOther, ps, es, es384, ed := keys(t)
	v := newVerifier(t, Options{}, providerDoc("idp", model.JWTProviderSpec{
		Issuer:     issuer,
		Audiences:  []string{"backend"},
		Algorithms: model.JWTAlgorithms,
		JWKS:       model.JWKSSource{Inline: authztest.JWKS(rs, ps, es, es384, ed)},
	}))
	now := time.Now()
	good := authztest.Claims(issuer, "alice", "backend")
	rsaPub, err := x509.MarshalPKIXPublicKey(rs.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})
	goodRS := rs.Sign(t, good, nil)
	parts := strings.Split(goodRS, ".")
	tampered := parts[0] + "." + authztestSegment(t, with(good, "sub", "mallory")) + "." + parts[2]

	cases := []struct {
		name  string
		token string
		want  []Code
	}{
		{"RS256", goodRS, []Code{CodeOK}},
		{"PS256", ps.Sign(t, good, nil), []Code{CodeOK}},
		{"ES256", es.Sign(t, good, nil), []Code{CodeOK}},
		{"ES384", es384.Sign(t, good, nil), []Code{CodeOK}},
		{"EdDSA", ed.Sign(t, good, nil), []Code{CodeOK}},
		{"audience in a list", es.Sign(t, with(good, "aud", []string{"other", "backend"}), nil), []Code{CodeOK}},
		{"expired within clock skew", es.Sign(t, with(good, "exp", now.Add(-10*time.Second).Unix()), nil), []Code{CodeOK}},
		{"fractional exp", es.Sign(t, with(good, "exp", float64(now.Unix())+3600.5), nil), []Code{CodeOK}},
		{"expired", es.Sign(t, with(good, "exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix()), nil), []Code{CodeExpired}},
		{"not yet valid", es.Sign(t, with(good, "nbf", now.Add(time.Hour).Unix()), nil), []Code{CodeNotYetValid}},
		// iat is informational (RFC 7519): an issuer's clock ahead of this one is no reason to refuse.
		{"issued in the future", es.Sign(t, with(good, "iat", now.Add(time.Hour).Unix()), nil), []Code{CodeOK}},
		{"no exp", es.Sign(t, with(good, "exp", nil), nil), []Code{CodeMissingExpiry}},
		{"wrong issuer", es.Sign(t, with(good, "iss", "https://evil.test"), nil), []Code{CodeUnknownIssuer}},
		{"no issuer", es.Sign(t, with(good, "iss", nil), nil), []Code{CodeUnknownIssuer}},
		{"wrong audience", es.Sign(t, with(good, "aud", "frontend"), nil), []Code{CodeAudience}},
		{"no audience", es.Sign(t, with(good, "aud", nil), nil), []Code{CodeAudience}},
		{"aud not a string", es.Sign(t, with(good, "aud", 42), nil), []Code{CodeClaims}},
		{"exp not a number", es.Sign(t, with(good, "exp", "tomorrow"), nil), []Code{CodeClaims}},
		{"alg none", authztest.Unsigned(t, good), []Code{CodeAlgorithm}},
		{"HS256 with the RSA public key (PEM)", authztest.SignHMAC(t, rsaPEM, "rs1", good), []Code{CodeAlgorithm}},
		{"HS256 with the RSA public key (DER)", authztest.SignHMAC(t, rsaPub, "rs1", good), []Code{CodeAlgorithm}},
		{"signed by another key with the same kid", rsOther.Sign(t, good, nil), []Code{CodeSignature}},
		{"tampered payload", tampered, []Code{CodeSignature}},
		{"truncated signature", goodRS[:len(goodRS)-6], []Code{CodeSignature, CodeMalformed}},
		{"truncated to two parts", parts[0] + "." + parts[1], []Code{CodeMalformed}},
		{"empty signature", parts[0] + "." + parts[1] + ".", []Code{CodeSignature, CodeMalformed}},
		{"oversized", es.Sign(t, with(good, "pad", strings.Repeat("x", MaxTokenBytes)), nil), []Code{CodeTooLarge}},
		{"not base64", "!!!.@@@.###", []Code{CodeMalformed}},
		{"standard base64 with padding", "eyJhbGciOiJFUzI1NiJ9==.e30=.AAAA", []Code{CodeMalformed}},
		{"encrypted (five parts)", "a.b.c.d.e", []Code{CodeMalformed}},
		{"payload not an object", parts[0] + "." + authztestSegment(t, []int{1}) + "." + parts[2], []Code{CodeMalformed}},
		{"critical header", es.Sign(t, good, map[string]any{"crit": []string{"exp"}, "exp": 1}), []Code{CodeMalformed}},
		{"unknown kid", es.Sign(t, good, map[string]any{"kid": "nope"}), []Code{CodeUnknownKey}},
		{"ES256 token naming an RSA key", es.Sign(t, good, map[string]any{"kid": "rs1"}), []Code{CodeUnknownKey}},
		{"no kid: any fitting key", (&authztest.Key{Alg: "ES256", Signer: es.Signer}).Sign(t, good, nil), []Code{CodeOK}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := v.Verify(context.Background(), "demo", bearer(tc.token))
			got := codeOf(r)
			ok := false
			for _, w := range tc.want {
				ok = ok || got == w
			}
			if !ok {
				t.Fatalf("code = %q (%v), want one of %q", got, r.Err, tc.want)
			}
			if !r.Presented {
				t.Error("Presented = false")
			}
			if got == CodeOK {
				if r.Token.Subject != "alice" || r.Token.Issuer != issuer || !r.Token.VerifiedBy("demo/idp") {
					t.Errorf("token = %+v", r.Token)
				}
			} else {
				if r.Token != nil {
					t.Error("rejected token returned")
				}
				if strings.Contains(r.Err.Error(), tc.token) && len(tc.token) > 8 {
					t.Errorf("error text contains the token: %v", r.Err)
				}
			}
		})
	}
}

func authztestSegment(t *testing.T, v any) string {
	t.Helper()
	return authztest.Segment(t, v)
}

func TestProviderAlgorithmsRestrict(t *testing.T) {
	rs, _, _, es, _, _ := keys(t)
	v := newVerifier(t, Options{}, providerDoc("idp", model.JWTProviderSpec{
		Issuer: issuer, Algorithms: []string{"ES256"},
		JWKS: model.JWKSSource{Inline: authztest.JWKS(rs, es)},
	}))
	c := authztest.Claims(issuer, "alice")
	if got := codeOf(v.Verify(context.Background(), "demo", bearer(rs.Sign(t, c, nil)))); got != CodeAlgorithm {
		t.Errorf("RS256 with only ES256 allowed: %q", got)
	}
	if got := codeOf(v.Verify(context.Background(), "demo", bearer(es.Sign(t, c, nil)))); got != CodeOK {
		t.Errorf("ES256: %q", got)
	}
}

func TestTokenLocations(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	jwks := model.JWKSSource{Inline: authztest.JWKS(es)}
	v := newVerifier(t, Options{},
		providerDoc("bearer", model.JWTProviderSpec{Issuer: issuer, JWKS: jwks}),
		providerDoc("custom", model.JWTProviderSpec{Issuer: "https://other.test", JWKS: jwks,
			FromHeaders: []model.JWTHeader{{Name: "X-Token"}, {Name: "X-Auth", Prefix: "Token "}},
			FromCookies: []string{"session"}}),
	)
	tok := es.Sign(t, authztest.Claims(issuer, "alice"), nil)
	other := es.Sign(t, authztest.Claims("https://other.test", "bob"), nil)
	h := func(kv ...string) map[string][]string {
		m := map[string][]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = append(m[kv[i]], kv[i+1])
		}
		return m
	}
	cases := []struct {
		name     string
		headers  map[string][]string
		want     Code
		provider string
	}{
		{"no token", h("x-other", "1"), "", ""},
		{"Bearer", h("authorization", "Bearer "+tok), CodeOK, "demo/bearer"},
		{"bearer is case-insensitive", h("authorization", "bearer "+tok), CodeOK, "demo/bearer"},
		{"Basic is not a token", h("authorization", "Basic dXNlcjpwYXNz"), "", ""},
		{"named header", h("x-token", other), CodeOK, "demo/custom"},
		{"named header with prefix", h("x-auth", "Token "+other), CodeOK, "demo/custom"},
		{"prefix missing", h("x-auth", other), "", ""},
		{"cookie", h("cookie", "theme=dark; session="+other+"; x=y"), CodeOK, "demo/custom"},
		{"issuer read elsewhere only", h("x-token", tok), CodeUnknownIssuer, ""},
		{"two tokens, both valid", h("authorization", "Bearer "+tok, "x-token", other), CodeOK, "demo/bearer"},
		{"two tokens, one invalid", h("authorization", "Bearer "+tok, "x-token", "a.b.c"), CodeMalformed, ""},
		// One location, two tokens: the application may read the other one.
		{"header sent twice with two tokens", h("authorization", "Bearer "+tok, "authorization", "Bearer "+other), CodeAmbiguous, ""},
		{"header sent twice, a valid token and junk", h("x-token", other, "x-token", "a.b.c"), CodeAmbiguous, ""},
		{"header sent twice with the same token", h("authorization", "Bearer "+tok, "authorization", "Bearer "+tok), CodeOK, "demo/bearer"},
		{"header sent twice, one a token", h("authorization", "Basic dXNlcjpwYXNz", "authorization", "Bearer "+tok), CodeOK, "demo/bearer"},
		{"cookie named twice", h("cookie", "session="+other+"; session=x.y.z"), CodeAmbiguous, ""},
		{"cookie in two headers", h("cookie", "session="+other, "cookie", "a=b; session=x.y.z"), CodeAmbiguous, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := v.Verify(context.Background(), "demo", tc.headers)
			if got := codeOf(r); got != tc.want {
				t.Fatalf("code = %q (%v), want %q", got, r.Err, tc.want)
			}
			if r.Presented != (tc.want != "") {
				t.Errorf("Presented = %v", r.Presented)
			}
			if tc.provider != "" && !r.Token.VerifiedBy(tc.provider) {
				t.Errorf("providers = %v, want %s", r.Token.Providers, tc.provider)
			}
		})
	}
}

type clock struct{ ns atomic.Int64 }

func newClock() *clock { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestVerifiedTokenCache(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	clk := newClock()
	v := newVerifier(t, Options{Now: clk.Now}, providerDoc("idp", model.JWTProviderSpec{
		Issuer: issuer, JWKS: model.JWKSSource{Inline: authztest.JWKS(es)},
	}))
	c := authztest.Claims(issuer, "alice")
	c["exp"] = clk.Now().Add(time.Minute).Unix()
	tok := es.Sign(t, c, nil)
	first := v.Verify(context.Background(), "demo", bearer(tok))
	second := v.Verify(context.Background(), "demo", bearer(tok))
	if codeOf(first) != CodeOK || first.CacheHit || codeOf(second) != CodeOK || !second.CacheHit {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	if first.Token != second.Token {
		t.Error("cache returned a different token")
	}
	clk.Advance(time.Minute + model.DefaultClockSkew + time.Second)
	third := v.Verify(context.Background(), "demo", bearer(tok))
	if codeOf(third) != CodeExpired || !third.CacheHit {
		t.Fatalf("after expiry: %+v %v", third, third.Err)
	}
	if v.CacheLen() != 0 {
		t.Errorf("expired token still cached")
	}
}

func TestUpdateKeepsUnchangedProviders(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	doc := providerDoc("idp", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{Inline: authztest.JWKS(es)}})
	v := newVerifier(t, Options{}, doc)
	before := v.set.Load().providers[0]
	tok := es.Sign(t, authztest.Claims(issuer, "alice", "a"), nil)
	v.Verify(context.Background(), "demo", bearer(tok))
	if err := v.Update(meshOf(providerDoc("idp", doc.Spec))); err != nil {
		t.Fatal(err)
	}
	if v.set.Load().providers[0] != before || v.CacheLen() != 1 {
		t.Fatal("an unchanged provider was replaced or its cache dropped")
	}
	changed := doc.Spec
	changed.Audiences = []string{"b"}
	if err := v.Update(meshOf(providerDoc("idp", changed))); err != nil {
		t.Fatal(err)
	}
	if v.set.Load().providers[0] == before || v.CacheLen() != 0 {
		t.Fatal("a changed provider was kept, or verdicts of the old one were")
	}
	if got := codeOf(v.Verify(context.Background(), "demo", bearer(tok))); got != CodeAudience {
		t.Errorf("token for the old audience: %q", got)
	}
	if err := v.Update(meshOf()); err != nil {
		t.Fatal(err)
	}
	if v.Covers("demo") {
		t.Error("providers left after removing them all")
	}
	if r := v.Verify(context.Background(), "demo", bearer(tok)); r.Presented {
		t.Error("token looked for with no providers")
	}
}

func TestUpdateReportsBadInlineKeys(t *testing.T) {
	v, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	err = v.Update(meshOf(providerDoc("idp", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{Inline: `{"keys":[]}`}})))
	if err == nil || !strings.Contains(err.Error(), "inline JWKS") {
		t.Fatalf("err = %v", err)
	}
	if st := v.Status(); len(st) != 1 || st[0].State != StateFailing {
		t.Errorf("status = %+v", st)
	}
}

func TestClaimsFlatten(t *testing.T) {
	tok, err := NewToken([]string{"idp"}, map[string]any{
		"iss": issuer, "sub": "alice", "exp": 2000000000,
		"scope":                       "read write",
		"realm_access":                map[string]any{"roles": []any{"admin", "dev"}},
		"groups":                      []any{map[string]any{"name": "a"}, map[string]any{"name": "b"}},
		"age":                         42,
		"big":                         9007199254740993,
		"ok":                          true,
		"nothing":                     nil,
		"https://example.com/tenants": []any{"t1"},
		"nested":                      []any{"a", []any{"b"}, map[string]any{"c": []any{"d"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		want ClaimValue
		ok   bool
	}{
		{"scope", ClaimValue{Values: []string{"read write"}}, true},
		{"realm_access.roles", ClaimValue{Values: []string{"admin", "dev"}, List: true}, true},
		{"groups.name", ClaimValue{Values: []string{"a", "b"}, List: true}, true},
		{"age", ClaimValue{Values: []string{"42"}}, true},
		{"big", ClaimValue{Values: []string{"9007199254740993"}}, true},
		{"ok", ClaimValue{Values: []string{"true"}}, true},
		{"https://example.com/tenants", ClaimValue{Values: []string{"t1"}, List: true}, true},
		// A list in a list is not looked into; a list in an object in a list is (a field).
		{"nested", ClaimValue{Values: []string{"a"}, List: true}, true},
		{"nested.c", ClaimValue{Values: []string{"d"}, List: true}, true},
		{"nothing", ClaimValue{}, false},
		{"realm_access", ClaimValue{}, false},
		{"missing", ClaimValue{}, false},
	}
	for _, tc := range cases {
		got, ok := tok.Claims.Get(tc.path)
		if ok != tc.ok || strings.Join(got.Values, ",") != strings.Join(tc.want.Values, ",") || got.List != tc.want.List {
			t.Errorf("%s = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	if tok.Subject != "alice" || !tok.VerifiedBy("default/idp") || tok.Expiry.Unix() != 2000000000 {
		t.Errorf("token = %+v", tok)
	}
}

// A dot path that names two claims — the nested one and a top-level claim whose name has the
// dots — is ambiguous and absent, so a claim of that literal name cannot stand in for the
// nested one (or the other way round).
func TestAmbiguousClaimPathsAreAbsent(t *testing.T) {
	tok, err := NewToken([]string{"idp"}, map[string]any{
		"iss": issuer, "sub": "alice", "exp": 2000000000,
		"realm_access.roles": []any{"admin"},
		"realm_access":       map[string]any{"roles": []any{"viewer"}, "team": "ops"},
		"a.b":                map[string]any{"c": "1"},
		"a":                  map[string]any{"b.c": "2", "d": "3"},
		"groups":             []any{map[string]any{"name": "x"}, map[string]any{"name": "y"}},
		"only.literal":       "z",
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"realm_access.roles": "", "a.b.c": "", // ambiguous
		"realm_access.team": "ops", "a.d": "3", "groups.name": "x,y", "only.literal": "z", // not
	} {
		got, ok := tok.Claims.Get(path)
		if ok != (want != "") || strings.Join(got.Values, ",") != want || tok.Claims.Ambiguous(path) != (want == "") {
			t.Errorf("%s = %+v, %v (ambiguous %v); want %q", path, got, ok, tok.Claims.Ambiguous(path), want)
		}
	}
}

func TestClaimsNoAmbiguityWhenUnambiguous(t *testing.T) {
	tok, err := NewToken([]string{"idp"}, map[string]any{"iss": issuer, "sub": "alice", "exp": 2000000000})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Claims.ambiguous != nil {
		t.Errorf("ambiguous = %v", tok.Claims.ambiguous)
	}
	if tok.Subject != "alice" {
		t.Errorf("token = %+v", tok)
	}
}

func TestCheck(t *testing.T) {
	_, _, _, es, _, _ := keys(t)
	m := meshOf(
		providerDoc("good", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{Inline: authztest.JWKS(es)}}),
		providerDoc("bad-json", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{Inline: "{"}}),
		providerDoc("no-usable", model.JWTProviderSpec{Issuer: issuer, Algorithms: []string{"RS256"}, JWKS: model.JWKSSource{Inline: authztest.JWKS(es)}}),
		providerDoc("bad-ca", model.JWTProviderSpec{Issuer: issuer, JWKS: model.JWKSSource{URI: "https://idp.test/keys", CAFile: "/nonexistent/ca.pem"}}),
	)
	ps := Check(m)
	want := []string{"demo/bad-json spec.jwks.inline", "demo/no-usable spec.jwks.inline", "demo/bad-ca spec.jwks.caFile"}
	if len(ps) != len(want) {
		t.Fatalf("problems = %v", ps)
	}
	for i, p := range ps {
		if p.Name+" "+p.Field != want[i] {
			t.Errorf("problem %d = %s, want %s", i, p, want[i])
		}
	}
}
