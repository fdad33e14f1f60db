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
// The package also checks certificate requests (ParseCSR), keeps the revocation list, and issues
// the control plane's own SVID (SelfSource) for its TLS servers.
package ca
