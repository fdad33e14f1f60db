// Package apikey creates and verifies API keys, the credential of server-to-server clients.
//
// A key is the text pck_<id>_<secret>: the id (a DNS label, public) selects the key's entry of an
// APIKeyProvider without scanning, the secret is 32 random bytes in unpadded base64url (43
// characters). Providers store only "sha256:<salt>:<digest>", the SHA-256 of a per-key random
// salt followed by the secret: the secret has 256 bits of entropy, so nobody can guess it from
// the digest however fast the hash, and a slow password hash (bcrypt, argon2) would cost every
// request milliseconds of CPU for nothing. Digests are compared in constant time.
//
// A Verifier holds the keys of the live mesh's providers by the namespace they act on: a
// provider of namespace N verifies keys for requests to N's services, one of the root namespace
// for every service (the JWTProvider rule, docs/policies.md). Verify refuses a malformed key, an
// unknown id, a wrong secret, a revoked, expired or not yet valid key, each with its own Reason
// for logs and traces; clients see the same 401 for all but revocation. Nothing this package
// returns or logs carries the key or its secret: only the id.
package apikey
