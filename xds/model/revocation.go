package model

import (
	"encoding/json"
	"fmt"
	"time"
)

// Bounds of CredentialRevocation documents: the entries of every document are indexed in the
// memory of every authorization replica, and each field may reach the decision log.
const (
	// MaxRevocationEntries bounds the entries of one document. Expired entries are ignored and
	// `portcullis revoke` prunes them, so a list only holds what is still live.
	MaxRevocationEntries = 10000
	// MaxRevocationField bounds issuer, jti and subject.
	MaxRevocationField = 512
	// MaxRevocationReason bounds the free-text reason.
	MaxRevocationReason = 256
)

// CredentialRevocationDoc lists credentials refused before their expiry. The name says
// credential, not token: the list is where any credential kind's revocations may go; today it
// holds JWTs.
type CredentialRevocationDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta               `json:"metadata"`
	Spec     CredentialRevocationSpec `json:"spec"`
}

// CredentialRevocationSpec is the list of revoked credentials.
type CredentialRevocationSpec struct {
	// JWTs are revoked tokens: one by its jti, or every token of a subject issued before a time.
	// A document of the root namespace revokes tokens whichever provider verified them; one of
	// any other namespace, only tokens its own namespace's JWTProviders verified.
	// +kubebuilder:validation:MaxItems=10000
	JWTs []JWTRevocation `json:"jwts,omitempty"`
}

// JWTRevocation revokes one token (Issuer and JTI) or every token of a subject issued before a
// time (Issuer, Subject and IssuedBefore: "log out everywhere").
type JWTRevocation struct {
	// Issuer is the tokens' "iss" claim.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Issuer string `json:"issuer"`
	// JTI is the revoked token's "jti" claim.
	// +kubebuilder:validation:MaxLength=512
	JTI string `json:"jti,omitempty"`
	// Subject is the "sub" claim of the revoked tokens.
	// +kubebuilder:validation:MaxLength=512
	Subject string `json:"subject,omitempty"`
	// IssuedBefore: the subject's tokens issued ("iat") before this time are revoked, and so are
	// its tokens without an "iat" (nothing shows they are newer).
	IssuedBefore *Time `json:"issuedBefore,omitempty"`
	// Expires is when the entry may go: the revoked token's own expiry, or for a subject the
	// issuedBefore time plus the longest lifetime the issuer gives tokens. From then on the entry
	// is ignored.
	Expires Time `json:"expires"`
	// Reason is free text for the decision log ("laptop stolen, INC-1234"). Not a secret.
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
}

// Time is a point in time written in RFC 3339 ("2026-12-05T14:00:00Z").
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Format=date-time
type Time struct{ time.Time }

// UnmarshalText parses an RFC 3339 time.
func (t *Time) UnmarshalText(b []byte) error {
	v, err := time.Parse(time.RFC3339, string(b))
	if err != nil {
		return fmt.Errorf("not an RFC 3339 time (want e.g. \"2026-12-05T14:00:00Z\"): %q", b)
	}
	t.Time = v
	return nil
}

// MarshalText writes the time in RFC 3339, in UTC.
func (t Time) MarshalText() ([]byte, error) {
	return []byte(t.UTC().Format(time.RFC3339Nano)), nil
}

// MarshalJSON keeps the string form in JSON.
func (t Time) MarshalJSON() ([]byte, error) {
	b, _ := t.MarshalText()
	return json.Marshal(string(b))
}

// UnmarshalJSON accepts the string form; null leaves the time zero, as encoding/json does.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time must be a string like \"2026-12-05T14:00:00Z\": %s", b)
	}
	return t.UnmarshalText([]byte(s))
}

// GetKind implements Object.
func (d *CredentialRevocationDoc) GetKind() string { return KindCredentialRevocation }

// GetMeta implements Object.
func (d *CredentialRevocationDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the CredentialRevocation document on its own. An entry already expired is
// valid (it is ignored): a list written a while ago must not stop loading as time passes.
func (d *CredentialRevocationDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	p := Path("spec.jwts")
	if n := len(d.Spec.JWTs); n > MaxRevocationEntries {
		errs.Addf(p, "%d entries, more than the %d allowed: remove expired ones (`portcullis revoke` prunes them) or split the list into several documents", n, MaxRevocationEntries)
		return errs
	}
	for i := range d.Spec.JWTs {
		d.Spec.JWTs[i].validate(&errs, p.Index(i))
	}
	return errs
}

func (e *JWTRevocation) validate(errs *FieldErrors, p Path) {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"issuer", e.Issuer, MaxRevocationField}, {"jti", e.JTI, MaxRevocationField}, {"subject", e.Subject, MaxRevocationField}, {"reason", e.Reason, MaxRevocationReason}} {
		if len(f.v) > f.max {
			errs.Addf(p.Field(f.name), "%d bytes, more than the %d allowed", len(f.v), f.max)
		}
	}
	if e.Issuer == "" {
		errs.Addf(p.Field("issuer"), "required")
	}
	switch {
	case e.JTI == "" && e.Subject == "":
		errs.Addf(p, "exactly one of jti (one token) or subject with issuedBefore (every token of the subject) is required")
	case e.JTI != "" && e.Subject != "":
		errs.Addf(p.Field("subject"), "give either jti (one token) or subject (every token of the subject), not both")
	case e.JTI != "" && e.IssuedBefore != nil:
		errs.Addf(p.Field("issuedBefore"), "only with subject: a jti names one token whatever its issue time")
	case e.Subject != "" && e.IssuedBefore == nil:
		errs.Addf(p.Field("issuedBefore"), "required with subject: the subject's tokens issued before this time are revoked")
	}
	if e.Expires.IsZero() {
		errs.Addf(p.Field("expires"), "required: when the entry may go (the token's expiry, or issuedBefore plus the longest token lifetime)")
	} else if e.IssuedBefore != nil && !e.Expires.After(e.IssuedBefore.Time) {
		errs.Addf(p.Field("expires"), "%s is not after issuedBefore %s: the entry would never apply", e.Expires.UTC().Format(time.RFC3339), e.IssuedBefore.UTC().Format(time.RFC3339))
	}
}

// Live reports whether the entry still applies at now: until its expiry.
func (e *JWTRevocation) Live(now time.Time) bool { return now.Before(e.Expires.Time) }

func (d *CredentialRevocationDoc) setDefaults() {}
