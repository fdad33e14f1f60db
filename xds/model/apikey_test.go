package model_test

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/xds/model"
)

// A well-formed hash: a 16-byte salt and a 32-byte digest, unpadded base64url.
var testHash = "sha256:" + strings.Repeat("A", 22) + ":" + strings.Repeat("B", 43)

const apiKeyMeshHead = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: t.test}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{name: http, port: 8080}]}
---
`

func TestAPIKeyProviderBuilds(t *testing.T) {
	m, ps := buildYAML(t, apiKeyMeshHead+`apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: clients, namespace: shop}
spec:
  keys:
  - {id: batch-1, hash: "`+testHash+`", identity: batch-exporter, attributes: {scopes: [read, export]}, expires: "2027-01-01T00:00:00Z"}
  - {id: batch-2, hash: "`+testHash+`", identity: batch-exporter, expires: "2027-02-01T00:00:00Z", notBefore: "2026-12-01T00:00:00Z"}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: export, namespace: shop}
spec:
  action: ALLOW
  rules:
  - from: {apiKey: {providers: [clients], identities: [batch-exporter], attributes: [{claim: scopes, contains: export}]}}
    when: [{attribute: apiKey.attributes.scopes, equals: export}]
`)
	if ps != nil {
		t.Fatal(ps)
	}
	if len(m.APIKeyProviders) != 1 {
		t.Fatalf("%d providers", len(m.APIKeyProviders))
	}
	p := m.APIKeyProviders[0]
	if p.Spec.Header != model.DefaultAPIKeyHeader {
		t.Errorf("header defaulted to %q", p.Spec.Header)
	}
	if got := m.APIKeyProvider("shop", "clients"); got != p {
		t.Errorf("APIKeyProvider(shop, clients) = %v", got)
	}
	if m.APIKeyProvider("other", "clients") != nil {
		t.Error("a provider of namespace shop was found from namespace other")
	}
	if s := model.NewMeshContext(m).Service(model.Ref{Namespace: "shop", Name: "api"}); len(s.APIKeyProviders) != 1 || s.APIKeyProviders[0] != p {
		t.Errorf("the provider does not act on its namespace's service: %v", s.APIKeyProviders)
	}
	nbf, exp := p.Spec.Keys[1].Validity()
	if nbf.Month() != 12 || exp.Month() != 2 {
		t.Errorf("validity %v %v", nbf, exp)
	}
}

func TestAPIKeyProviderRootNamespaceProvider(t *testing.T) {
	_, ps := buildYAML(t, apiKeyMeshHead+`apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: corp, namespace: portcullis-system}
spec: {header: Authorization}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: any-key, namespace: shop}
spec: {action: ALLOW, rules: [{from: {apiKey: {providers: [corp]}}}]}
`)
	if ps != nil {
		t.Fatal(ps)
	}
}

func TestAPIKeyProviderProblems(t *testing.T) {
	_, ps := buildYAML(t, apiKeyMeshHead+`apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: clients, namespace: shop}
spec:
  header: "x api key"
  keys:
  - {id: Batch_1, hash: "md5:abc", identity: "", expires: "tomorrow"}
  - {id: dup, hash: "sha256:AAAA:`+strings.Repeat("B", 43)+`", identity: "two words", expires: "2027-01-01T00:00:00Z"}
  - {id: dup, hash: "`+testHash+`", identity: x, expires: "2027-01-01T00:00:00Z", notBefore: "2027-02-01T00:00:00Z", attributes: {"a.b": [], ok: [""]}}
  - {id: noexp, hash: "`+testHash+`", identity: x}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: shop}
spec:
  action: ALLOW
  rules:
  - from: {apiKey: {providers: [missing], identities: [""], attributes: [{claim: "a.b", equals: x}, {claim: scopes}]}}
`)
	want := []string{
		`spec.header: "x api key" is not a valid header name`,
		`spec.keys[0].id: "Batch_1" is not a DNS label`,
		`spec.keys[0].hash: must be "sha256:<salt>:<digest>"`,
		`spec.keys[0].identity: required`,
		`spec.keys[0].expires: must be an RFC 3339 time`,
		`spec.keys[1].hash: the salt must be at least 16 bytes`,
		`spec.keys[1].identity: must be at most 253 characters without spaces`,
		`spec.keys[2].id: duplicate key id "dup" (first at keys[1])`,
		`spec.keys[2].notBefore: must be before expires`,
		`spec.keys[2].attributes["a.b"]: attribute names are letters`,
		`spec.keys[2].attributes["a.b"]: must list at least one value`,
		`spec.keys[2].attributes["ok"][0]: must be a non-empty string`,
		`spec.keys[3].expires: required`,
		`spec.rules[0].from.apiKey.identities[0]: must not be empty`,
		`spec.rules[0].from.apiKey.attributes[0].claim: must be an attribute name`,
		`spec.rules[0].from.apiKey.attributes[1]: needs exactly one of equals, in, contains or matches`,
	}
	got := ps.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing problem %q", w)
		}
	}
	if t.Failed() {
		t.Log(got)
	}
	// The policy is invalid on its own, so its provider reference is not checked: fix the rest
	// and the missing provider is reported.
	_, ps = buildYAML(t, apiKeyMeshHead+`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: shop}
spec: {action: ALLOW, rules: [{from: {apiKey: {providers: [missing]}}}]}
`)
	if w := `spec.rules[0].from.apiKey.providers[0]: APIKeyProvider "missing" not found in namespace "shop" or the root namespace "portcullis-system"`; !strings.Contains(ps.Error(), w) {
		t.Errorf("got %v, want %q", ps, w)
	}
}

func TestAPIKeyHashFormat(t *testing.T) {
	salt, digest := make([]byte, 16), make([]byte, 32)
	salt[0], digest[31] = 1, 2
	s := model.FormatAPIKeyHash(salt, digest)
	gs, gd, err := model.ParseAPIKeyHash(s)
	if err != nil || gs[0] != 1 || gd[31] != 2 || len(gs) != 16 || len(gd) != 32 {
		t.Fatalf("round trip of %q: %v %v %v", s, gs, gd, err)
	}
	for _, bad := range []string{"", "sha256:", "sha256::", "sha512:" + s[7:], s + "x", s[:len(s)-1], "sha256:" + strings.Repeat("A", 22) + ":" + strings.Repeat("*", 43)} {
		if _, _, err := model.ParseAPIKeyHash(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRateLimitByAPIKey(t *testing.T) {
	m, ps := buildYAML(t, apiKeyMeshHead+`apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: per-client, namespace: shop}
spec:
  selector: {service: api}
  trustedProxyHops: 1
  limits:
  - {name: per-key, bucket: {maxTokens: 100, fillInterval: 1m}, by: {apiKey: true}}
`)
	if ps != nil {
		t.Fatal(ps)
	}
	l := model.ResolvedRateLimit{RateLimit: m.RateLimitPolicies[0].Spec.Limits[0], TrustedProxyHops: 1}
	if !l.Verified() || l.VerifiedKey().String() != "apiKey:1" {
		t.Errorf("verified %v, key %q", l.Verified(), l.VerifiedKey())
	}
	if k, err := model.ParseVerifiedKey("apiKey:1"); err != nil || k != l.VerifiedKey() {
		t.Errorf("ParseVerifiedKey: %v %v", k, err)
	}
	if _, err := model.ParseVerifiedKey("apiKey:0:owner"); err == nil {
		t.Error("an argument to apiKey was accepted")
	}
	_, ps = buildYAML(t, apiKeyMeshHead+`apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: per-client, namespace: shop}
spec:
  selector: {service: api}
  limits:
  - {name: per-key, bucket: {maxTokens: 100, fillInterval: 1m}, by: {apiKey: true, clientIP: true}}
`)
	if w := "spec.limits[0].by: needs exactly one of header, sourcePrincipal, jwtClaim, apiKey or clientIP"; !strings.Contains(ps.Error(), w) {
		t.Errorf("got %v, want %q", ps, w)
	}
}
