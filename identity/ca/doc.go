// Package ca is Portcullis's certificate authority: it keeps roots and intermediates in the data
// directory (or uses a user-provided CA), builds X.509-SVID templates apart from signing them,
// signs SVIDs with a TTL capped by the issuer's remaining life, and serves the trust bundle.
//
// Root rotation has three phases derived from activation times in state.json alone: a prepared
// root is in the bundle but does not sign yet (agents learn it at their next renewal); it then
// becomes active; the root it replaced is retired and stays in the bundle until every SVID it
// signed has expired, then dropped. The control plane and the CLI (portcullis ca rotate, ca
// revoke) share the directory through an advisory lock and atomic file replacement; the running
// control plane reloads what the CLI wrote.
//
// A CA (ca.go) composes three parts, as SPIRE's server CA keeps signing, slot management and
// timing apart: the signer (signer.go: templates, the signing-authority snapshot, SVID issuance;
// no files, no timers), the store (store.go: the running CA's files, with state.go, authority.go
// and revoke.go for their formats) and the rotator (rotator.go: when to reload, renew and warn).
// The CLI's operations (Rotate, Revoke, ReadStatus, ReadBundle in admin.go and revoke.go) work
// on the files directly, under the same lock.
//
// The package also checks certificate requests (ParseCSR), keeps the revocation list, and issues
// the control plane's own SVID (SelfSource) for its TLS servers.
package ca
