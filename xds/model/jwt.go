package model

import (
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Defaults of JWTProvider documents.
const (
	DefaultJWKSRefresh = 5 * time.Minute
	DefaultClockSkew   = 30 * time.Second
	MaxClockSkew       = 5 * time.Minute
)

// JWTAlgorithms are the signature algorithms a provider may allow. "none" and every HMAC
// algorithm are deliberately absent: a JWKS holds public keys, and accepting HS256 with a public
// key as the secret is the classic algorithm-confusion forgery.
var JWTAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}

// JWTProviderDoc declares an issuer whose tokens the authorization service verifies.
type JWTProviderDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     JWTProviderSpec `json:"spec"`
}

// JWTProviderSpec describes how tokens of one issuer are found and verified.
type JWTProviderSpec struct {
	// Issuer must equal the token's "iss" claim.
	// +kubebuilder:validation:MinLength=1
	Issuer string `json:"issuer"`
	// Audiences: the token's "aud" must contain one of them. Empty accepts any audience.
	Audiences []string `json:"audiences,omitempty"`
	// Algorithms allowed; defaults to RS256 and ES256.
	// +kubebuilder:validation:items:Enum=RS256;RS384;RS512;PS256;PS384;PS512;ES256;ES384;EdDSA
	Algorithms []string `json:"algorithms,omitempty"`
	// ClockSkew tolerated on exp/nbf/iat. 30s unless set, at most 5m.
	ClockSkew *Duration `json:"clockSkew,omitempty"`
	// FromHeaders lists where to look for the token. Defaults to "Authorization: Bearer <token>".
	FromHeaders []JWTHeader `json:"fromHeaders,omitempty"`
	// FromCookies lists cookie names that may carry the token.
	FromCookies []string `json:"fromCookies,omitempty"`
	// JWKS is where the issuer's public keys come from.
	JWKS JWKSSource `json:"jwks"`
}

// JWTHeader names a request header carrying a token, with an optional value prefix.
type JWTHeader struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix,omitempty"`
}

// JWKSSource is exactly one of a file, inline JSON, a URL, or OIDC discovery from the issuer.
// +kubebuilder:validation:XValidation:rule="(has(self.file) ? 1 : 0) + (has(self.inline) ? 1 : 0) + (has(self.uri) ? 1 : 0) + (has(self.oidcDiscovery) && self.oidcDiscovery ? 1 : 0) == 1",message="exactly one of file, inline, uri or oidcDiscovery is required"
type JWKSSource struct {
	// File is a path to a JWKS JSON file, re-read on refresh.
	File string `json:"file,omitempty"`
	// Inline is a JWKS JSON document.
	Inline string `json:"inline,omitempty"`
	// URI is an HTTPS URL serving the JWKS (plain HTTP only on loopback).
	URI string `json:"uri,omitempty"`
	// OIDCDiscovery finds the JWKS URL from <issuer>/.well-known/openid-configuration.
	OIDCDiscovery bool `json:"oidcDiscovery,omitempty"`
	// RefreshInterval between scheduled refreshes of file and URL sources. 5m unless set.
	RefreshInterval *Duration `json:"refreshInterval,omitempty"`
	// CAFile is a PEM bundle to verify the JWKS server with, instead of the system roots.
	CAFile string `json:"caFile,omitempty"`
}

// GetKind implements Object.
func (d *JWTProviderDoc) GetKind() string { return KindJWTProvider }

// GetMeta implements Object.
func (d *JWTProviderDoc) GetMeta() *ObjectMeta { return &d.Metadata }

// Validate checks the JWTProvider document on its own.
func (d *JWTProviderDoc) Validate() FieldErrors {
	var errs FieldErrors
	d.Metadata.validate(&errs, true)
	s, p := &d.Spec, Path("spec")
	if s.Issuer == "" {
		errs.Addf(p.Field("issuer"), "required")
	}
	for i, a := range s.Audiences {
		if a == "" {
			errs.Addf(p.Field("audiences").Index(i), "must not be empty")
		}
	}
	for i, alg := range s.Algorithms {
		if !slices.Contains(JWTAlgorithms, alg) {
			errs.Addf(p.Field("algorithms").Index(i), "algorithm %q is not allowed (allowed: %s)", alg, strings.Join(JWTAlgorithms, ", "))
		}
	}
	if c := s.ClockSkew; c != nil && (c.Duration < 0 || c.Duration > MaxClockSkew) {
		errs.Addf(p.Field("clockSkew"), "must be between 0 and %s, not %s", MaxClockSkew, c.Duration)
	}
	for i, h := range s.FromHeaders {
		if !isHeaderName(h.Name) {
			errs.Addf(p.Field("fromHeaders").Index(i).Field("name"), "%q is not a valid header name", h.Name)
		}
	}
	for i, c := range s.FromCookies {
		if !isHeaderName(c) {
			errs.Addf(p.Field("fromCookies").Index(i), "%q is not a valid cookie name", c)
		}
	}
	jp := p.Field("jwks")
	set := 0
	for _, b := range []bool{s.JWKS.File != "", s.JWKS.Inline != "", s.JWKS.URI != "", s.JWKS.OIDCDiscovery} {
		if b {
			set++
		}
	}
	if set != 1 {
		errs.Addf(jp, "exactly one of file, inline, uri or oidcDiscovery is required (%d set)", set)
	}
	if s.JWKS.URI != "" {
		validateFetchURL(&errs, jp.Field("uri"), s.JWKS.URI)
	}
	if s.JWKS.OIDCDiscovery {
		validateFetchURL(&errs, p.Field("issuer"), s.Issuer)
	}
	if r := s.JWKS.RefreshInterval; r != nil && r.Duration < time.Second {
		errs.Addf(jp.Field("refreshInterval"), "must be at least 1s, not %s", r.Duration)
	}
	return errs
}

func (d *JWTProviderDoc) setDefaults() {
	s := &d.Spec
	if len(s.Algorithms) == 0 {
		s.Algorithms = []string{"RS256", "ES256"}
	}
	if s.ClockSkew == nil {
		s.ClockSkew = &Duration{DefaultClockSkew}
	}
	if len(s.FromHeaders) == 0 && len(s.FromCookies) == 0 {
		s.FromHeaders = []JWTHeader{{Name: "Authorization", Prefix: "Bearer "}}
	}
	if s.JWKS.RefreshInterval == nil {
		s.JWKS.RefreshInterval = &Duration{DefaultJWKSRefresh}
	}
}

// validateFetchURL requires HTTPS, except for loopback hosts where tests and local issuers run.
func validateFetchURL(errs *FieldErrors, p Path, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		errs.Addf(p, "must be an absolute URL, not %q", raw)
		return
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			errs.Addf(p, "must use https (plain http is allowed only on loopback): %q", raw)
		}
	default:
		errs.Addf(p, "must be an https URL, not %q", raw)
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// isHeaderName reports whether s is an RFC 9110 token.
func isHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 127 || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}
