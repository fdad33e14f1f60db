// Package revocation decides whether a verified credential was revoked: it indexes the
// CredentialRevocation documents of one mesh version once, so each request costs a few map
// lookups, whatever the length of the lists.
//
// Scoping follows the tenancy rules of docs/policies.md: a document of the root namespace
// revokes tokens whichever provider verified them; a document of any other namespace revokes
// only tokens a JWTProvider of its own namespace verified. A tenant can therefore pull its own
// users' tokens, and never another tenant's, nor the tokens of the root namespace's issuers
// (which it can still refuse at its own services with a DENY policy).
package revocation
