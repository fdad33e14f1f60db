package jwt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxKeyAttempts bounds how many keys a token without a key id is tried against.
const maxKeyAttempts = 8

// parsed is a compact JWS split and decoded, not yet verified.
type parsed struct {
	header struct {
		Alg  string   `json:"alg"`
		Kid  string   `json:"kid"`
		Crit []string `json:"crit"`
	}
	raw    map[string]any
	claims registered
}

// parseCompact decodes a compact JWS (header.payload.signature) without verifying it: enough to
// choose the provider by issuer and the key by id. Every malformation is an error here, before any
// key is touched.
func parseCompact(raw string) (*parsed, *Error) {
	if strings.Count(raw, ".") != 2 {
		if strings.Count(raw, ".") == 4 {
			return nil, reject(CodeMalformed, "", "encrypted tokens (JWE) are not supported")
		}
		return nil, reject(CodeMalformed, "", "not a compact JWS (header.payload.signature)")
	}
	h, rest, _ := strings.Cut(raw, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	if h == "" || payload == "" {
		return nil, reject(CodeMalformed, "", "empty header or payload")
	}
	p := &parsed{}
	hb, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return nil, reject(CodeMalformed, "", "header is not base64url")
	}
	if err := json.Unmarshal(hb, &p.header); err != nil {
		return nil, reject(CodeMalformed, "", "header is not a JSON object")
	}
	if _, err := base64.RawURLEncoding.DecodeString(sig); err != nil {
		return nil, reject(CodeMalformed, "", "signature is not base64url")
	}
	switch {
	case p.header.Alg == "":
		return nil, reject(CodeMalformed, "", "header has no alg")
	case len(p.header.Crit) > 0:
		// RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
		return nil, reject(CodeMalformed, "", "critical header extensions %q are not supported", p.header.Crit)
	}
	pb, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, reject(CodeMalformed, "", "payload is not base64url")
	}
	if p.raw, err = decodeClaims(pb); err != nil {
		return nil, reject(CodeMalformed, "", "%v", err)
	}
	if p.claims, err = parseRegistered(p.raw); err != nil {
		return nil, reject(CodeClaims, "", "%v", err)
	}
	return p, nil
}

// verify checks a parsed token against this provider: algorithm, key, signature, then claims.
// The signature is checked before any claim, so an unsigned token learns nothing about them.
func (p *provider) verify(ctx context.Context, raw string, t *parsed, now time.Time) *Error {
	alg := t.header.Alg
	if !slices.Contains(p.algs, alg) {
		return reject(CodeAlgorithm, p.name, "algorithm %q is not allowed (allowed: %s)", truncate(alg, 20), strings.Join(p.algs, ", "))
	}
	ks := p.keys.Load()
	if ks == nil {
		p.awaitFetch(ctx)
		if ks = p.keys.Load(); ks == nil {
			return reject(CodeNoKeys, p.name, "no keys: %s", p.lastError())
		}
	}
	keys := ks.candidates(t.header.Kid, alg)
	if len(keys) == 0 && t.header.Kid != "" && p.awaitFetch(ctx) {
		// A key id we do not know: the issuer may have rotated its keys since the last fetch.
		ks = p.keys.Load()
		keys = ks.candidates(t.header.Kid, alg)
	}
	if len(keys) == 0 {
		return reject(CodeUnknownKey, p.name, "no %s key with id %q", alg, truncate(t.header.Kid, 100))
	}
	jws, err := jose.ParseSignedCompact(raw, p.joseAlgs)
	if err != nil {
		return reject(CodeMalformed, p.name, "%v", err)
	}
	verified := false
	for i, k := range keys {
		if i == maxKeyAttempts {
			break
		}
		if _, err := jws.Verify(k.Key); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return reject(CodeSignature, p.name, "signature does not verify with key %q", truncate(t.header.Kid, 100))
	}
	c := &t.claims
	switch {
	case !c.hasExp:
		return reject(CodeMissingExpiry, p.name, "token has no exp claim")
	case now.After(c.expiry.Add(p.skew)):
		return reject(CodeExpired, p.name, "token expired at %s", c.expiry.Format(time.RFC3339))
	case c.hasNbf && now.Add(p.skew).Before(c.notBefore):
		return reject(CodeNotYetValid, p.name, "token not valid before %s", c.notBefore.Format(time.RFC3339))
	}
	// "iat" is not checked: RFC 7519 gives it no rule (nbf is the claim that says "not before"),
	// only the issuer can set it, and refusing an iat ahead of this clock turns issuer clock skew
	// into outages. Envoy's jwt_authn does not check it either, so where Envoy verifies tokens
	// (engine auto) it decides as this does.
	if len(p.spec.Audiences) > 0 && !slices.ContainsFunc(c.audience, func(a string) bool { return slices.Contains(p.spec.Audiences, a) }) {
		return reject(CodeAudience, p.name, "audience %q is not one of %q", c.audience, p.spec.Audiences)
	}
	return nil
}

func (p *provider) lastError() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status.LastError == "" {
		return "the first fetch has not finished"
	}
	return p.status.LastError
}

// Unverified is what a token claims, read WITHOUT verifying its signature: for tools choosing
// which token to revoke (`portcullis revoke jwt --token-file`), never for deciding a request.
type Unverified struct {
	Issuer, Subject, ID string
	// Expiry and IssuedAt are zero when the token has no exp or iat.
	Expiry, IssuedAt time.Time
}

// ParseUnverified decodes a compact JWS's claims without verifying it, with the same limits and
// checks of shape as Verify.
func ParseUnverified(raw string) (Unverified, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > MaxTokenBytes {
		return Unverified{}, reject(CodeTooLarge, "", "token is %d bytes, more than the %d allowed", len(raw), MaxTokenBytes)
	}
	p, err := parseCompact(raw)
	if err != nil {
		return Unverified{}, err
	}
	c := &p.claims
	return Unverified{Issuer: c.issuer, Subject: c.subject, ID: c.id, Expiry: c.expiry, IssuedAt: c.issuedAt}, nil
}
