package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/portcullis/portcullis/authz/apikey"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// apiKeys are the keys of the API key fixture, by role.
type apiKeys struct {
	exporter, reporter, expired, revoked, rotatedOld string
}

// newAPIKeyFixture adds to the test mesh a provider "clients" in demo with keys of two
// identities (one with the export scope), an expired and a revoked key, and a policy letting
// keys with the export scope call /export/*.
func newAPIKeyFixture(t *testing.T) (*fixture, apiKeys) {
	t.Helper()
	var ks apiKeys
	var entries []string
	for _, k := range []struct {
		key    *string
		id     string
		fields string
	}{
		{&ks.exporter, "exp-2", `identity: batch-exporter, attributes: {scopes: [read, export], owner: [data-team]}, expires: "2099-01-01T00:00:00Z"`},
		{&ks.rotatedOld, "exp-1", `identity: batch-exporter, attributes: {scopes: [read, export]}, expires: "2099-01-01T00:00:00Z"`},
		{&ks.reporter, "rep-1", `identity: reporter, attributes: {scopes: [read]}, expires: "2099-01-01T00:00:00Z"`},
		{&ks.expired, "old-1", `identity: batch-exporter, attributes: {scopes: [export]}, expires: "2020-01-01T00:00:00Z"`},
		{&ks.revoked, "leaked-1", `identity: batch-exporter, attributes: {scopes: [export]}, expires: "2099-01-01T00:00:00Z", revoked: true`},
	} {
		key, hash, err := apikey.Generate(k.id)
		if err != nil {
			t.Fatal(err)
		}
		*k.key = key
		entries = append(entries, fmt.Sprintf("  - {id: %s, hash: %q, %s}", k.id, hash, k.fields))
	}
	f := newFixture(t, `---
apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: clients, namespace: demo}
spec:
  keys:
`+strings.Join(entries, "\n")+`
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: exporters, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
  - name: export-scope
    from: {apiKey: {providers: [clients], attributes: [{claim: scopes, contains: export}]}}
    to: {paths: ["/export/*"]}
  - name: reporter-reads
    from: {apiKey: {identities: [reporter]}}
    to: {paths: ["/reports/*"]}
    when: [{attribute: apiKey.attributes.scopes, equals: read}]
`)
	return f, ks
}

func TestAPIKeyDecisions(t *testing.T) {
	f, ks := newAPIKeyFixture(t)
	_, secret, _ := apikey.Parse(ks.exporter)
	wrong := "pck_exp-2_" + strings.Repeat("A", len(secret))
	for _, tc := range []struct {
		name   string
		mutate func(*authv3.CheckRequest)
		status int
		code   policy.Code
		rule   string
	}{
		{"key with the export scope", all(setPath("/export/x"), setHeader("x-api-key", ks.exporter)), 200, policy.CodeAllowed, "export-scope"},
		{"the rotated key of the same identity, in its overlap", all(setPath("/export/x"), setHeader("x-api-key", ks.rotatedOld)), 200, policy.CodeAllowed, "export-scope"},
		{"key without the export scope", all(setPath("/export/x"), setHeader("x-api-key", ks.reporter)), 403, policy.CodeDeniedDefault, ""},
		{"identity and when condition", all(setPath("/reports/x"), setHeader("x-api-key", ks.reporter)), 200, policy.CodeAllowed, "reporter-reads"},
		{"another identity", all(setPath("/reports/x"), setHeader("x-api-key", ks.exporter)), 403, policy.CodeDeniedDefault, ""},
		{"no key", setPath("/export/x"), 403, policy.CodeDeniedDefault, ""},
		{"wrong secret", all(setPath("/export/x"), setHeader("x-api-key", wrong)), 401, policy.CodeAPIKeyInvalid, ""},
		{"expired", all(setPath("/export/x"), setHeader("x-api-key", ks.expired)), 401, policy.CodeAPIKeyInvalid, ""},
		{"revoked", all(setPath("/export/x"), setHeader("x-api-key", ks.revoked)), 401, policy.CodeRevoked, ""},
		{"malformed", all(setPath("/export/x"), setHeader("x-api-key", "hunter2")), 401, policy.CodeAPIKeyInvalid, ""},
		{"an invalid key is refused even where no policy needs one", all(setPath("/api/items"), setHeader("x-api-key", wrong)), 401, policy.CodeAPIKeyInvalid, ""},
		{"a key where no provider acts is the application's", all(toNamespace("payments"), setHeader("x-api-key", wrong)), 403, policy.CodeDeniedDefault, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.srv.Check(context.Background(), request(t, tc.mutate))
			if err != nil {
				t.Fatal(err)
			}
			if httpCode(resp) != tc.status || decisionCode(resp) != tc.code || resp.GetDynamicMetadata().GetFields()["rule"].GetStringValue() != tc.rule {
				t.Fatalf("got %d %s, want %d %s %s\n%s", httpCode(resp), decisionCode(resp), tc.status, tc.code, tc.rule, describe(resp))
			}
			// Every refusal reads the same to the client: 401, the same challenge, no reason.
			if tc.status == 401 && (strings.Contains(resp.GetDeniedResponse().GetBody(), "reason") || strings.Contains(resp.GetDeniedResponse().GetBody(), "expired")) {
				t.Errorf("the body explains the refusal: %s", resp.GetDeniedResponse().GetBody())
			}
			if c := responseHeader(resp, "www-authenticate"); tc.status == 401 && c != `Bearer realm="portcullis", error="invalid_token"` {
				t.Errorf("challenge %q", c)
			}
		})
	}
}

// TestAPIKeyNeverLeaks checks each key presented, valid or not, against everything the server
// writes: the decision log, its own log, span attributes, /debug/authz and response metadata.
func TestAPIKeyNeverLeaks(t *testing.T) {
	f, ks := newAPIKeyFixture(t)
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	_, secret, _ := apikey.Parse(ks.exporter)
	wrong := "pck_exp-2_" + strings.Repeat("A", len(secret))
	presented := []string{ks.exporter, ks.reporter, ks.expired, ks.revoked, wrong}
	f.spans.Reset()
	for _, k := range presented {
		resp, err := f.srv.Check(context.Background(), request(t, all(setPath("/export/x"), setHeader("x-api-key", k), setHeader("traceparent", parent))))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(describe(resp), k) {
			t.Errorf("the response carries the key: %s", describe(resp))
		}
	}
	recs := f.records(t)
	if len(recs) != len(presented) {
		t.Fatalf("%d records", len(recs))
	}
	if r := recs[0].APIKey; r == nil || r.ID != "exp-2" || r.Identity != "batch-exporter" || r.Provider != "demo/clients" || r.Error != "" {
		t.Errorf("allowed record's api_key = %+v", r)
	}
	if r := recs[2].APIKey; r == nil || r.ID != "old-1" || r.Error != string(apikey.ReasonExpired) || recs[2].Code != policy.CodeAPIKeyInvalid {
		t.Errorf("expired record's api_key = %+v", r)
	}
	if r := recs[4].APIKey; r == nil || r.ID != "exp-2" || r.Error != string(apikey.ReasonWrongSecret) {
		t.Errorf("wrong secret record's api_key = %+v", r)
	}
	var spanText strings.Builder
	verifySpans := 0
	for _, s := range f.spans.GetSpans() {
		a := attrMap(s.Attributes)
		fmt.Fprintf(&spanText, "%s %v %v\n", s.Name, a, s.Status)
		if s.Name == spanAPIKey {
			verifySpans++
			if a["authz.apikey.id"] == "" || a["authz.apikey.present"] != "true" {
				t.Errorf("%s attributes %v", spanAPIKey, a)
			}
		}
	}
	if verifySpans != len(presented) {
		t.Errorf("%d %s spans, want %d", verifySpans, spanAPIKey, len(presented))
	}
	debug := fmt.Sprintf("%+v", f.srv.Status())
	if !strings.Contains(debug, "demo/clients") {
		t.Errorf("/debug/authz does not list the provider: %s", debug)
	}
	for _, k := range presented {
		_, sec, _ := apikey.Parse(k)
		for where, text := range map[string]string{"decision log": f.dlog.String(), "log": f.logs.String(), "spans": spanText.String(), "/debug/authz": debug} {
			if strings.Contains(text, k) || strings.Contains(text, sec) {
				t.Errorf("the %s contains a key", where)
			}
		}
	}
}

func TestAPIKeyVerifiedAttributes(t *testing.T) {
	f, ks := newAPIKeyFixture(t)
	withKeys := func(r *authv3.CheckRequest) {
		r.Attributes.ContextExtensions[model.ContextKeyRateLimit] = "apiKey:0,apiKey:1"
	}
	for _, tc := range []struct {
		name     string
		mutate   func(*authv3.CheckRequest)
		want0    string
		want1    string
		verified bool
	}{
		{"two keys of one identity share a bucket", all(withKeys, setPath("/export/x"), setHeader("x-api-key", ks.exporter)), `apikey:"demo/clients"batch-exporter`, `apikey:"demo/clients"batch-exporter`, true},
		{"", all(withKeys, setPath("/export/x"), setHeader("x-api-key", ks.rotatedOld)), `apikey:"demo/clients"batch-exporter`, `apikey:"demo/clients"batch-exporter`, true},
		{"without a key, the client IP", all(withKeys, setHeader("x-forwarded-for", "203.0.113.9")), "ip:10.0.0.7", "ip:203.0.113.9", true},
		{"a refused key selects nothing", all(withKeys, setPath("/export/x"), setHeader("x-api-key", ks.revoked)), "", "", false},
	} {
		resp, err := f.srv.Check(context.Background(), request(t, tc.mutate))
		if err != nil {
			t.Fatal(err)
		}
		v, ok := resp.GetDynamicMetadata().GetFields()[model.MetadataVerified]
		if ok != tc.verified {
			t.Fatalf("%s: verified attributes %v", tc.name, v)
		}
		fs := v.GetStructValue().GetFields()
		if fs["apiKey:0"].GetStringValue() != tc.want0 || fs["apiKey:1"].GetStringValue() != tc.want1 {
			t.Errorf("%s: %v", tc.name, fs)
		}
	}
}
