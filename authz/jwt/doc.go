// Package jwt verifies end-user JSON Web Tokens for the authorization service.
//
// A Verifier holds one provider per JWTProvider document of the live mesh. A provider verifies
// tokens for requests to the destinations of its namespace, or of every namespace when it is in
// the root namespace (Mesh.spec.rootNamespace): Verify reads only the locations of those
// providers, so a tenant's provider can neither vouch for a token at another tenant's services
// nor make their requests fail.
//
// Each provider keeps the issuer's public keys (JWKS) from a file, inline JSON, an HTTPS URL or
// OIDC discovery, and refreshes them on a schedule in its own goroutine. A failed fetch keeps the last good keys; an
// issuer that is not up yet is retried with backoff, and an empty key set is never taken as good
// (istio#37456); a token signed with an unknown key id triggers a rate-limited refetch, so key
// rotation works without waiting for the schedule (istio#41588).
//
// Verification is strict: the algorithm must be one the provider allows (never "none", never an
// HMAC algorithm, so a public key can never be used as an HMAC secret); iss must equal the
// provider's issuer, aud must name one of its audiences, exp is required, and exp/nbf/iat are
// checked with the provider's clock skew. Tokens larger than MaxTokenBytes are rejected unread.
// A verified token is cached by the SHA-256 of its text and location until it expires (bounded
// LRU), so each token is verified once however many requests carry it (opa#4918).
//
// The library is github.com/go-jose/go-jose/v4, already in the build through go-spiffe: its
// ParseSigned takes the allowed algorithms as a required argument, so an algorithm allow-list
// cannot be forgotten, and it leaves key fetching, caching and refresh to this package, which
// needs its own rules for them (above) and per-provider health.
package jwt
