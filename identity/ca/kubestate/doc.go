// Package kubestate keeps the CA's shared state in the Kubernetes API server, so every control
// plane replica signs under the same roots, honours the same revocations and accepts each join
// token once, and a replica restarted with an empty data directory comes back with the same CA.
//
// One Secret (default portcullis-ca, in the control plane's namespace) holds what package ca
// keeps in its data directory apart from the intermediates: state.json (trust domain, longest
// SVID TTL, authorities and their activation times), each authority's root certificate and key
// (<authority id>.root.pem), revoked.json, and the join-token signing key (token-signing.key).
// Intermediates stay per replica: each issues its own under the shared root, as SPIRE servers
// do. Every change is a read-modify-write of the Secret with the resourceVersion it read, done
// with package ca's own operations (Init, Rotate, Revoke) in a scratch directory (a replica's in
// its data directory: its root filesystem is read-only), and started over on a conflict; the API server's create decides between replicas creating the CA at once.
//
// A replica (Replica) mirrors the Secret into its data directory, under the CA's lock, and
// watches it: the CA's reload loop then picks up a rotation or a revocation made by any replica
// or by `portcullis ca ... --kubernetes` (Admin) within seconds, as it picks up the CLI's edits
// in local mode. A Secret changed into something invalid is not mirrored (the last good state
// stays); a deleted Secret is recreated from the mirror, so the root does not change by accident.
//
// Used join tokens are ConfigMaps, one per token id (UsedTokens): creating it is the use, and
// AlreadyExists means the token was used before, at this replica or another, before or after a
// restart. They are pruned once the token has expired.
package kubestate
