// Package datapath is the data-path benchmark (`make bench`): what the mesh adds to a request.
//
// BenchmarkDataPath stands up a local mesh of real processes (control plane, a separate
// authorization service with its agent, a frontend and a backend agent each with its Envoy) and
// drives HTTP load from the benchmark process, in one run on one machine, against:
//
//   - direct: the load generator → the backend application;
//   - noauthz: → frontend Envoy (outbound) → mTLS → backend Envoy (inbound, rate limit far
//     above the load) → application, with the Mesh's authz mode OFF (ext_authz off on the
//     route: no call to the authorization service);
//   - authz: the same path with ext_authz deciding every request (SPIFFE ID of the caller, a
//     JWT verified against a file JWKS and an ABAC condition on one of its claims).
//
// For each it measures the closed-loop maximum rate, then fixed-rate latency (coordinated
// omission corrected: from when each request was due) at 1,000 rps and at half of that
// configuration's maximum. Added latency is the mesh percentile minus the direct percentile at
// the same rate. CPU (percent of one core per 1,000 rps) and RSS of every mesh process are read
// from /proc during the 1,000 rps runs. Figures are reported with b.ReportMetric; run with
// -benchtime 1x -count N and take medians with test/benchmedian.
//
// BenchmarkPerUserLimit, on the same mesh with authorization on, alternates runs at 1,000 rps
// without and with a Local limit keyed on the verified sub, and reports what the limit adds to
// the p50 and p99 (issue 17).
//
// BenchmarkChangeReachesOpenConnection, on the same mesh, times how long a rate limit and turning
// authorization on take to reach requests on a connection that is already open, and counts the
// connections each change costs.
package datapath
