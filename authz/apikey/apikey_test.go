package apikey_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

var now = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// testKey is one key of the test mesh.
type testKey struct {
	provider, id, key, hash string
	fields                  string // the key's YAML fields besides id and hash
}

func newKey(t testing.TB, provider, id, fields string) testKey {
	t.Helper()
	k, h, err := apikey.Generate(id)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{provider: provider, id: id, key: k, hash: h, fields: fields}
}

const valid = `identity: batch-exporter, expires: "2027-01-01T00:00:00Z"`

// buildMesh has a provider "clients" in namespace shop (header x-api-key) and one "corp" in the
// root namespace reading Authorization, holding the keys.
func buildMesh(t testing.TB, keys ...testKey) *model.Mesh {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: portcullis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {trustDomain: t.test}\n")
	for _, p := range []struct{ ns, name, header string }{{"shop", "clients", ""}, {"portcullis-system", "corp", "Authorization"}} {
		fmt.Fprintf(&b, "---\napiVersion: portcullis.dev/v1alpha1\nkind: APIKeyProvider\nmetadata: {name: %s, namespace: %s}\nspec:\n", p.name, p.ns)
		if p.header != "" {
			fmt.Fprintf(&b, "  header: %s\n", p.header)
		}
		b.WriteString("  keys:\n")
		for _, k := range keys {
			if k.provider == p.name {
				fmt.Fprintf(&b, "  - {id: %s, hash: %q, %s}\n", k.id, k.hash, k.fields)
			}
		}
	}
	docs, ps := source.Decode("mesh.yaml", []byte(b.String()))
	if ps != nil {
		t.Fatal(ps)
	}
	m, ps := model.Build(docs)
	if ps != nil {
		t.Fatal(ps)
	}
	return m
}

func TestVerify(t *testing.T) {
	good := newKey(t, "clients", "good", valid+`, attributes: {scopes: [export]}`)
	expired := newKey(t, "clients", "old", `identity: batch-exporter, expires: "2026-12-01T00:00:00Z"`)
	early := newKey(t, "clients", "early", valid+`, notBefore: "2026-12-24T00:00:00Z"`)
	revoked := newKey(t, "clients", "leaked", valid+`, revoked: true`)
	corp := newKey(t, "corp", "corp-1", `identity: ci, expires: "2027-01-01T00:00:00Z"`)
	other := newKey(t, "clients", "good", valid) // same id, another secret: not in the mesh
	v := apikey.New()
	v.Update(buildMesh(t, good, expired, early, revoked, corp))

	id, secret, _ := apikey.Parse(good.key)
	for _, tc := range []struct {
		name    string
		ns      string
		headers map[string][]string
		id      string
		reason  apikey.Reason // "" and a key: verified; "" and no key: not presented
		by      string
	}{
		{name: "valid", ns: "shop", headers: h("x-api-key", good.key), id: "good", by: "shop/clients"},
		{name: "root provider via Authorization", ns: "shop", headers: h("authorization", "ApiKey "+corp.key), id: "corp-1", by: "portcullis-system/corp"},
		{name: "scheme is case-insensitive", ns: "other", headers: h("authorization", "apikey "+corp.key), id: "corp-1", by: "portcullis-system/corp"},
		{name: "root provider reaches every namespace", ns: "other", headers: h("authorization", "ApiKey "+corp.key), id: "corp-1", by: "portcullis-system/corp"},
		{name: "namespace provider does not reach another", ns: "other", headers: h("x-api-key", good.key)},
		{name: "Bearer is not an API key", ns: "shop", headers: h("authorization", "Bearer "+corp.key)},
		{name: "no key", ns: "shop", headers: h("x-other", good.key)},
		{name: "a Bearer token beside the key", ns: "shop", headers: map[string][]string{"authorization": {"Bearer x.y.z", "ApiKey " + corp.key}}, id: "corp-1", by: "portcullis-system/corp"},
		{name: "two keys in Authorization", ns: "shop", headers: map[string][]string{"authorization": {"ApiKey " + corp.key, "ApiKey " + corp.key}}, reason: apikey.ReasonMalformed},
		{name: "wrong secret", ns: "shop", headers: h("x-api-key", other.key), id: "good", reason: apikey.ReasonWrongSecret},
		{name: "unknown id", ns: "shop", headers: h("x-api-key", newKey(t, "clients", "nope", "").key), id: "nope", reason: apikey.ReasonUnknownID},
		{name: "key of the root provider in the wrong header", ns: "shop", headers: h("x-api-key", corp.key), id: "corp-1", reason: apikey.ReasonUnknownID},
		{name: "expired", ns: "shop", headers: h("x-api-key", expired.key), id: "old", reason: apikey.ReasonExpired},
		{name: "not yet valid", ns: "shop", headers: h("x-api-key", early.key), id: "early", reason: apikey.ReasonNotYetValid},
		{name: "revoked", ns: "shop", headers: h("x-api-key", revoked.key), id: "leaked", reason: apikey.ReasonRevoked},
		{name: "malformed", ns: "shop", headers: h("x-api-key", "hunter2"), reason: apikey.ReasonMalformed},
		{name: "truncated", ns: "shop", headers: h("x-api-key", good.key[:len(good.key)-1]), reason: apikey.ReasonMalformed},
		{name: "upper-case id", ns: "shop", headers: h("x-api-key", "pck_GOOD_"+secret), reason: apikey.ReasonMalformed},
		{name: "empty", ns: "shop", headers: h("x-api-key", ""), reason: apikey.ReasonMalformed},
		{name: "sent twice", ns: "shop", headers: map[string][]string{"x-api-key": {good.key, good.key}}, reason: apikey.ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := v.Verify(tc.ns, tc.headers, now)
			if r.Reason != tc.reason || r.ID != tc.id {
				t.Fatalf("reason %q id %q, want %q %q", r.Reason, r.ID, tc.reason, tc.id)
			}
			switch {
			case tc.by != "":
				if r.Key == nil || r.Key.Provider != tc.by || !r.Presented {
					t.Fatalf("not verified by %s: %+v", tc.by, r)
				}
			case tc.reason == "":
				if r.Presented || r.Key != nil {
					t.Fatalf("presented: %+v", r)
				}
			default:
				if !r.Presented || r.Key != nil {
					t.Fatalf("refused key: %+v", r)
				}
			}
		})
	}
	if id != "good" || len(secret) != 43 {
		t.Errorf("Parse: %q %q", id, secret)
	}
	r := v.Verify("shop", h("x-api-key", good.key), now)
	if r.Key.Identity != "batch-exporter" || r.Key.Attributes["scopes"][0] != "export" {
		t.Errorf("verified key %+v", r.Key)
	}
	if !v.Covers("shop") || !v.Covers("anything") {
		t.Error("the root provider covers every namespace")
	}
	st := v.Status()
	if len(st) != 2 || st[1].Provider != "shop/clients" || st[1].Keys != 4 || st[1].Revoked != 1 || st[1].Header != "x-api-key" {
		t.Errorf("status %+v", st)
	}
}

func TestVerifyWithoutProviders(t *testing.T) {
	v := apikey.New()
	if v.Covers("shop") {
		t.Error("covers without providers")
	}
	if r := v.Verify("shop", h("x-api-key", "pck_x_"+strings.Repeat("A", 43)), now); r.Presented {
		t.Errorf("%+v", r)
	}
}

func TestGenerate(t *testing.T) {
	k1, h1, err := apikey.Generate("batch-1")
	if err != nil {
		t.Fatal(err)
	}
	k2, h2, _ := apikey.Generate("batch-1")
	if k1 == k2 || h1 == h2 {
		t.Error("two keys (or salts) alike")
	}
	if !strings.HasPrefix(k1, "pck_batch-1_") || len(k1) != len("pck_batch-1_")+43 {
		t.Errorf("key shape %q", k1)
	}
	salt, digest, err := model.ParseAPIKeyHash(h1)
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := apikey.Parse(k1)
	if !apikey.Matches(salt, digest, secret) || apikey.Matches(salt, digest, secret[:42]+"A") && secret[42] != 'A' {
		t.Error("the hash does not verify its key, or verifies another")
	}
	if strings.Contains(h1, secret) {
		t.Error("the hash contains the secret")
	}
	for _, bad := range []string{"", "Batch", "a_b", "-a", strings.Repeat("a", 64)} {
		if _, _, err := apikey.Generate(bad); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
}

func h(name, value string) map[string][]string { return map[string][]string{name: {value}} }
