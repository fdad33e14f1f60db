package model

import (
	"strings"
	"testing"
	"time"
)

func TestRevocationEntryBound(t *testing.T) {
	doc := &CredentialRevocationDoc{Metadata: ObjectMeta{Name: "many", Namespace: "demo"}}
	exp := Time{time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)}
	for range MaxRevocationEntries {
		doc.Spec.JWTs = append(doc.Spec.JWTs, JWTRevocation{Issuer: "https://idp.test", JTI: "x", Expires: exp})
	}
	if errs := doc.Validate(); len(errs) != 0 {
		t.Fatalf("%d entries refused: %v", MaxRevocationEntries, errs)
	}
	doc.Spec.JWTs = append(doc.Spec.JWTs, JWTRevocation{Issuer: "https://idp.test", JTI: "x", Expires: exp})
	errs := doc.Validate()
	if len(errs) != 1 || errs[0].Field != "spec.jwts" || !strings.Contains(errs[0].Message, "10001 entries, more than the 10000 allowed") {
		t.Errorf("got %v", errs)
	}
}

func TestTimeRoundTrip(t *testing.T) {
	var tm Time
	if err := tm.UnmarshalJSON([]byte(`"2026-12-05T14:00:00+01:00"`)); err != nil {
		t.Fatal(err)
	}
	b, err := tm.MarshalJSON()
	if err != nil || string(b) != `"2026-12-05T13:00:00Z"` {
		t.Errorf("%s %v", b, err)
	}
	for _, bad := range []string{`"2026-12-05"`, `"tomorrow"`, `1733400000`, `""`} {
		if err := tm.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
