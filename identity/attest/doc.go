// Package attest holds bootstrap credentials: the join tokens a workload presents on first
// contact with the control plane (Kubernetes service-account tokens are to follow).
//
// A join token is bound to exactly one SPIFFE ID, expires, may be used once, and is signed with
// an Ed25519 key in the control plane's data directory, so verifying it needs no database. It
// also carries the SHA-256 pins of the trust bundle's roots, with which the agent verifies the
// control plane before it holds any bundle (as kubeadm's discovery-token-ca-cert-hash does).
// Used token ids are remembered in the data directory until the tokens expire.
package attest
