// Package agent is the per-workload identity agent: it makes an ECDSA P-256 key in memory,
// obtains an X.509-SVID from the control plane (a join token on first contact, mTLS with the
// current SVID afterwards), rotates it at half of its life with jittered exponential backoff
// while the control plane is unreachable, and serves it over unix sockets:
//
//   - sds.sock: Envoy's v3 SecretDiscoveryService (streaming), with the SVID as a TLS
//     certificate secret named by the SPIFFE ID (and "default"), and the trust bundle as a
//     validation context named by the trust domain ID that configures Envoy's SPIFFE
//     certificate validator;
//   - workload.sock: the SPIFFE Workload API, X.509 part.
//
// The key and SVID never leave memory except into the socket directory's private state
// subdirectory (0700, files 0600), so a restarted agent renews over mTLS instead of needing a
// new single-use token.
package agent
