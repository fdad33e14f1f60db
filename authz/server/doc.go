// Package server is the ext_authz service: Envoy's envoy.service.auth.v3.Authorization/Check.
//
// For each CheckRequest it reads typed attributes (Attributes: source SPIFFE ID from the peer
// certificate Envoy passes, cross-checked with the certificate itself when included; source
// address; the destination service from the listener's context extensions; port, canonical
// method, normalised path, headers with every value of a repeated header apart (Envoy's
// header_map), host, SNI, request time), verifies the request's JWTs (authz/jwt),
// decides with the engine compiled from the live mesh (authz/policy) and answers:
//
//   - allowed: OK, with x-portcullis-decision-id added to the request sent upstream and to the
//     response sent downstream;
//   - denied: 403 (a DENY policy, or no ALLOW), 401 (a missing or invalid JWT, with
//     WWW-Authenticate), 400 (a request that cannot be read, with the reason), 503 (no valid
//     mesh yet); the body is JSON naming the decision id and nothing internal.
//
// Every decision gets an id, is written to the decision log (JSON lines, never tokens, headers
// or query strings), counted in metrics and traced: one span per Check, a child of the trace
// context Envoy sends (gRPC metadata, else the request's traceparent), with child spans for JWT
// verification and policy evaluation.
//
// The server takes its transport credentials from the caller: cmd builds the gRPC server (mTLS
// from the control plane's CA or a SPIFFE Workload API source) and calls Register. It answers
// only proxies (Options.Callers: a workload SVID of the trust domain, not revoked, not one of the
// mesh's own services); anyone else gets a gRPC error and no decision, and every decision record
// names the proxy that asked.
package server
