package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// loadKeys loads the directory as the control plane would (with a Mesh document beside the
// file) and returns a verifier of its keys.
func loadKeys(t *testing.T, dir string) (*model.Mesh, *apikey.Verifier) {
	t.Helper()
	var docs []model.Document
	for _, name := range []string{"mesh.yaml", "apikeys.yaml"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		d, ps := source.Decode(name, data)
		if ps != nil {
			t.Fatalf("%s does not decode: %v\n%s", name, ps, data)
		}
		docs = append(docs, d...)
	}
	m, ps := model.Build(docs)
	if ps != nil {
		t.Fatal(ps)
	}
	v := apikey.New()
	v.Update(m)
	return m, v
}

func TestAPIKeyCreateRotateRevoke(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte("apiVersion: portcullis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {trustDomain: t.test}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "apikeys.yaml")
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	f := APIKeyFile{File: file, Provider: "batch", Namespace: "shop"}

	// create makes the file and the provider.
	k1, id1, err := CreateAPIKey(APIKeyRequest{APIKeyFile: f, Identity: "Batch.Exporter", Attributes: []string{"scopes=export", "scopes=read", "owner=data-team"}, TTL: 2160 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id1, "batch-exporter-") || !strings.HasPrefix(k1, "pck_"+id1+"_") {
		t.Errorf("id %q key prefix %q", id1, k1[:20])
	}
	m, v := loadKeys(t, dir)
	p := m.APIKeyProviders[0]
	if model.RefOf(p).String() != "shop/batch" || len(p.Spec.Keys) != 1 {
		t.Fatalf("provider %+v", p)
	}
	k := p.Spec.Keys[0]
	if k.Identity != "Batch.Exporter" || k.Expires != "2027-03-05T12:00:00Z" || strings.Join(k.Attributes["scopes"], ",") != "export,read" || k.Attributes["owner"][0] != "data-team" {
		t.Errorf("key %+v", k)
	}
	if r := v.Verify("shop", map[string][]string{"x-api-key": {k1}}, now); r.Key == nil {
		t.Fatalf("the created key does not verify: %+v", r)
	}
	data, _ := os.ReadFile(file)
	_, secret, _ := apikey.Parse(k1)
	if strings.Contains(string(data), secret) {
		t.Fatal("the file holds the key's secret")
	}

	// The file keeps what else it holds: comments, other documents.
	if err := os.WriteFile(file, append([]byte("# API keys of the shop\n"), append(data, []byte("---\n# the other provider\napiVersion: portcullis.dev/v1alpha1\nkind: APIKeyProvider\nmetadata: {name: other, namespace: shop}\nspec: {}\n")...)...), 0o600); err != nil {
		t.Fatal(err)
	}

	// rotate: a new key of the same identity; the old one expires after the overlap.
	k2, id2, err := RotateAPIKey(APIKeyRequest{APIKeyFile: f, OldID: id1, ID: "batch-2", TTL: time.Hour * 24 * 30, Overlap: 24 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if id2 != "batch-2" {
		t.Errorf("new id %q", id2)
	}
	m, v = loadKeys(t, dir)
	if len(m.APIKeyProviders) != 2 {
		t.Fatalf("%d providers after rotate", len(m.APIKeyProviders))
	}
	keys := m.APIKeyProvider("shop", "batch").Spec.Keys
	if len(keys) != 2 || keys[0].Expires != "2026-12-06T12:00:00Z" || keys[1].Identity != "Batch.Exporter" || keys[1].Attributes["owner"][0] != "data-team" {
		t.Fatalf("keys after rotate %+v", keys)
	}
	for _, key := range []string{k1, k2} {
		if r := v.Verify("shop", map[string][]string{"x-api-key": {key}}, now.Add(time.Hour)); r.Key == nil {
			t.Errorf("during the overlap a key does not verify: %+v", r)
		}
	}
	if r := v.Verify("shop", map[string][]string{"x-api-key": {k1}}, now.Add(25*time.Hour)); r.Reason != apikey.ReasonExpired {
		t.Errorf("after the overlap the old key: %+v", r)
	}
	data, _ = os.ReadFile(file)
	if !strings.Contains(string(data), "# API keys of the shop") || !strings.Contains(string(data), "# the other provider") {
		t.Errorf("comments lost:\n%s", data)
	}

	// revoke.
	if err := RevokeAPIKey(f, id2); err != nil {
		t.Fatal(err)
	}
	_, v = loadKeys(t, dir)
	if r := v.Verify("shop", map[string][]string{"x-api-key": {k2}}, now); r.Reason != apikey.ReasonRevoked {
		t.Errorf("revoked key: %+v", r)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v %v", st.Mode(), err)
	}

	// Refusals leave the file alone.
	before, _ := os.ReadFile(file)
	for name, err := range map[string]error{
		"rotate a revoked key": func() error {
			_, _, err := RotateAPIKey(APIKeyRequest{APIKeyFile: f, OldID: id2, TTL: time.Hour, Now: now})
			return err
		}(),
		"revoke an unknown key": RevokeAPIKey(f, "nope"),
		"an unknown provider":   RevokeAPIKey(APIKeyFile{File: file, Provider: "nope", Namespace: "shop"}, id2),
		"a duplicate id": func() error {
			_, _, err := CreateAPIKey(APIKeyRequest{APIKeyFile: f, ID: "batch-2", Identity: "x", TTL: time.Hour, Now: now})
			return err
		}(),
		"an invalid id": func() error {
			_, _, err := CreateAPIKey(APIKeyRequest{APIKeyFile: f, ID: "Bad_Id", Identity: "x", TTL: time.Hour, Now: now})
			return err
		}(),
		"an invalid attribute": func() error {
			_, _, err := CreateAPIKey(APIKeyRequest{APIKeyFile: f, Identity: "x", Attributes: []string{"a.b=c"}, TTL: time.Hour, Now: now})
			return err
		}(),
		"an attribute without =": func() error {
			_, _, err := CreateAPIKey(APIKeyRequest{APIKeyFile: f, Identity: "x", Attributes: []string{"scopes"}, TTL: time.Hour, Now: now})
			return err
		}(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Errorf("a refused edit changed the file:\n%s", after)
	}
}
