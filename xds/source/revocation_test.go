package source

import (
	"strings"
	"testing"
	"time"
)

const revocationHeader = header + `kind: CredentialRevocation
metadata: {name: revoked, namespace: portcullis-system}
spec:
  jwts:
`

// TestRevocationProblems: each bad entry is reported at its field, with its line, and the valid
// ones around it do not hide it.
func TestRevocationProblems(t *testing.T) {
	doc := revocationHeader + `    - {issuer: https://idp.test, jti: ok, expires: "2026-12-05T14:00:00Z", reason: stolen laptop}
    - {issuer: https://idp.test, jti: t1, expires: "yesterday"}
    - {jti: t2, expires: "2026-12-05T14:00:00Z"}
    - {issuer: https://idp.test, expires: "2026-12-05T14:00:00Z"}
    - {issuer: https://idp.test, jti: t3, subject: alice, expires: "2026-12-05T14:00:00Z"}
    - {issuer: https://idp.test, subject: alice, expires: "2026-12-05T14:00:00Z"}
    - {issuer: https://idp.test, jti: t4, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T14:00:00Z"}
    - {issuer: https://idp.test, subject: bob, issuedBefore: "2026-12-05T10:00:00Z", expires: "2026-12-05T09:00:00Z"}
    - {issuer: https://idp.test, jti: t5}
    - {issuer: https://idp.test, jti: t6, expires: "2026-12-05T14:00:00Z", reason: "` + strings.Repeat("x", 300) + `"}
`
	_, err := loadFiles(t, map[string]string{"mesh.yaml": validMesh, "revoked.yaml": doc})
	if err == nil {
		t.Fatal("Load succeeded, want problems")
	}
	got := err.Error()
	p := "revoked.yaml: document 1 (CredentialRevocation/portcullis-system/revoked): "
	for _, w := range []string{
		p + `spec.jwts[1].expires: not an RFC 3339 time (want e.g. "2026-12-05T14:00:00Z"): "yesterday" (line 7)`,
		p + `spec.jwts[2].issuer: required (line 8)`,
		p + `spec.jwts[3]: exactly one of jti (one token) or subject with issuedBefore (every token of the subject) is required (line 9)`,
		p + `spec.jwts[4].subject: give either jti (one token) or subject (every token of the subject), not both (line 10)`,
		p + `spec.jwts[5].issuedBefore: required with subject: the subject's tokens issued before this time are revoked (line 11)`,
		p + `spec.jwts[6].issuedBefore: only with subject: a jti names one token whatever its issue time (line 12)`,
		p + `spec.jwts[7].expires: 2026-12-05T09:00:00Z is not after issuedBefore 2026-12-05T10:00:00Z: the entry would never apply (line 13)`,
		p + `spec.jwts[8].expires: required: when the entry may go`,
		p + `spec.jwts[9].reason: 300 bytes, more than the 256 allowed (line 15)`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing problem\n  %s\nin\n%s", w, got)
		}
	}
	if strings.Contains(got, "spec.jwts[0]") {
		t.Errorf("the valid entry was reported:\n%s", got)
	}
}

// TestRevocationLoads: a valid list, including an entry long expired (ignored, not an error: a
// list must not stop loading as time passes), is in the mesh.
func TestRevocationLoads(t *testing.T) {
	doc := revocationHeader + `    - {issuer: https://idp.test, jti: t1, expires: "2026-12-05T14:00:00+02:00", reason: stolen laptop}
    - {issuer: https://idp.test, subject: alice, issuedBefore: "2001-01-01T00:00:00Z", expires: "2001-01-02T00:00:00Z"}
`
	d, err := loadFiles(t, map[string]string{"mesh.yaml": validMesh, "revoked.yaml": doc})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := d.Current()
	if len(m.CredentialRevocations) != 1 {
		t.Fatalf("%d revocation documents", len(m.CredentialRevocations))
	}
	e := m.CredentialRevocations[0].Spec.JWTs
	if len(e) != 2 || !e[0].Expires.Equal(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)) || e[0].Reason != "stolen laptop" || e[1].IssuedBefore == nil {
		t.Errorf("entries %+v", e)
	}
	if e[1].Live(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !e[0].Live(time.Date(2026, 12, 5, 11, 59, 0, 0, time.UTC)) {
		t.Error("Live is wrong about expiry")
	}
}
