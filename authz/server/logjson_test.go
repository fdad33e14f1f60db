package server

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
)

// TestRecordJSONMatchesEncodingJSON keeps the hand-written encoder equal to encoding/json's
// rendering of Record, field for field, for full, empty and awkward records.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	full := &Record{
		Time: time.Date(2026, 1, 5, 10, 0, 0, 123456789, time.UTC), DecisionID: "01ABC", Decision: "DENY",
		Code: policy.CodeDenied, HTTPStatus: 403, Policy: "demo/p", Rule: "r", Reason: `quote " backslash \ <tag> & 
 tab	 ctrl` + "\x01 \u2028 é \xff",
		MeshVersion: "v1", Audits: []policy.Match{{Policy: "demo/a", Action: model.ActionAudit, Rule: "x"}},
		DryRun: &policy.DryRun{Allow: true, Code: policy.CodeAllowed, Policy: "demo/d", Changed: true}, Errors: []string{"e1"},
		Source:      RecordSource{Principal: "spiffe://td/ns/a/sa/b", Address: "10.0.0.1"},
		Destination: RecordDest{Service: "backend", Namespace: "demo", Port: 8080},
		Request:     RecordRequest{ID: "1", Method: "GET", Path: "/a", Host: "h", Protocol: "HTTP/1.1"},
		JWT: &RecordJWT{Issuer: "i", Subject: "s", KeyID: "k", Providers: []string{"demo/p1", "demo/p2"}, CacheHit: true, Error: "x",
			Revoked: &RecordRevocation{Revocation: "demo/r", Entry: "spec.jwts[1]", Reason: "<stolen> \"laptop\""}},
		APIKey:  &RecordAPIKey{ID: "batch-1", Identity: "batch-exporter", Provider: "demo/clients", Error: "expired"},
		TraceID: "abc", DurationUS: 12, EvalUS: 3,
	}
	for name, r := range map[string]*Record{
		"full":               full,
		"empty":              {},
		"jwt with none":      {JWT: &RecordJWT{}},
		"only port":          {Destination: RecordDest{Port: 1}},
		"revoked, no reason": {JWT: &RecordJWT{Issuer: "i", Revoked: &RecordRevocation{Revocation: "demo/r", Entry: "spec.jwts[0]"}}},
		"api key, id only":   {APIKey: &RecordAPIKey{ID: "k"}},
		"api key empty":      {APIKey: &RecordAPIKey{}},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.appendJSON(nil)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("invalid JSON %s: %v", got, err)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if string(got) != string(want) {
				t.Errorf("bytes differ:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}
