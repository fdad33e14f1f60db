package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
)

// apiKeyProviders: one provider in demo, one in tenant-b, one in the root namespace, with no
// keys (the engine sees verified keys only); hash and keys are the verifier's business.
var apiKeyProviders = testmesh.Service("tenant-b", "backend") + `apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: clients, namespace: demo}
spec: {}
---
apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: clients, namespace: tenant-b}
spec: {}
---
apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: corp, namespace: ` + testmesh.Root + `}
spec: {}
---
`

func TestFromAPIKey(t *testing.T) {
	e := compile(t, testmesh.Build(t, apiKeyProviders+
		testmesh.Policy("exporters", "backend", "ALLOW", false, `  - name: export
    from: {apiKey: {providers: [clients], attributes: [{claim: scopes, contains: export}, {claim: tenant, in: [acme, umbrella]}]}}
    to: {paths: ["/export/*"]}
  - name: any-key-of-ci
    from: {apiKey: {identities: [ci]}}
    to: {paths: ["/ci/*"]}
  - name: corp-only
    from: {apiKey: {providers: [corp]}}
    to: {paths: ["/corp/*"]}
    when: [{attribute: apiKey.identity, matches: "svc-.*"}]
`)))
	key := func(provider, identity string, attrs map[string][]string) *apikey.Key {
		return &apikey.Key{ID: "k1", Provider: provider, Identity: identity, Attributes: attrs}
	}
	exporter := map[string][]string{"scopes": {"read", "export"}, "tenant": {"acme"}}
	for _, tc := range []struct {
		name string
		path string
		key  *apikey.Key
		code Code
		rule string
	}{
		{"attributes hold", "/export/a", key("demo/clients", "batch", exporter), CodeAllowed, "export"},
		{"no key", "/export/a", nil, CodeDeniedDefault, ""},
		{"missing scope", "/export/a", key("demo/clients", "batch", map[string][]string{"scopes": {"read"}, "tenant": {"acme"}}), CodeDeniedDefault, ""},
		{"other tenant attribute", "/export/a", key("demo/clients", "batch", map[string][]string{"scopes": {"export"}, "tenant": {"evil"}}), CodeDeniedDefault, ""},
		{"another provider than named", "/export/a", key("portcullis-system/corp", "batch", exporter), CodeDeniedDefault, ""},
		{"identity listed, any provider of the destination", "/ci/x", key("portcullis-system/corp", "ci", nil), CodeAllowed, "any-key-of-ci"},
		{"another tenant's provider never counts", "/ci/x", key("tenant-b/clients", "ci", nil), CodeDeniedDefault, ""},
		{"identity not listed", "/ci/x", key("demo/clients", "batch", nil), CodeDeniedDefault, ""},
		{"root provider named from demo, when on identity", "/corp/x", key("portcullis-system/corp", "svc-billing", nil), CodeAllowed, "corp-only"},
		{"when fails", "/corp/x", key("portcullis-system/corp", "billing", nil), CodeDeniedDefault, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := request(t)
			a.Request.Path, a.APIKey = tc.path, tc.key
			d := e.Decide(context.Background(), a)
			if d.Code != tc.code || d.Rule != tc.rule {
				t.Fatalf("%s %s (%s), want %s %s\n%s", d.Code, d.Rule, d.Reason, tc.code, tc.rule, traceText(e, a))
			}
		})
	}
	// The trace says why a key did not do.
	a := request(t)
	a.Request.Path, a.APIKey = "/export/a", key("portcullis-system/corp", "batch", exporter)
	if tr := traceText(e, a); !strings.Contains(tr, `the API key "k1" was verified by portcullis-system/corp, not by demo/clients`) {
		t.Errorf("trace:\n%s", tr)
	}
}

func TestAPIKeyInRego(t *testing.T) {
	e := compile(t, testmesh.Build(t, apiKeyProviders+testmesh.Rego("rego-keys", "ALLOW", `package keys
match if {
	input.apiKey.identity == "batch"
	"export" in input.apiKey.attributes.scopes
	input.apiKey.provider == "demo/clients"
	input.apiKey.id == "k1"
}`)))
	a := request(t)
	a.APIKey = &apikey.Key{ID: "k1", Provider: "demo/clients", Identity: "batch", Attributes: map[string][]string{"scopes": {"export"}}}
	if d := e.Decide(context.Background(), a); d.Code != CodeAllowed {
		t.Fatalf("%s %s %v", d.Code, d.Reason, d.Errors)
	}
	a.APIKey = nil
	if d := e.Decide(context.Background(), a); d.Code != CodeDeniedDefault {
		t.Fatalf("without a key: %s %s", d.Code, d.Reason)
	}
}
