// Package datapath is the data-path benchmark (`make bench`): what the mesh adds to a request.
//
// BenchmarkDataPath stands up a local mesh of real processes (control plane, a separate
// authorization service with its agent, a frontend and a backend agent each with its Envoy) and,
// beside it, two bare Envoys (testdata/bare-*.yaml: mTLS with SPIFFE IDs checked and nothing
// else), and drives HTTP load from the benchmark process, in one run on one machine, through
// each configuration (issue 16):
//
//   - direct: the load generator → the backend application;
//   - bare: → bare frontend Envoy → mTLS → bare backend Envoy → application: the limit here;
//   - mesh: → frontend Envoy (outbound) → mTLS → backend Envoy (inbound, rate limit far above the
//     load) → application, with the Mesh's authz mode OFF (no call to the authorization service);
//   - native: the same path with authorization on and the Mesh's engine auto: the caller's
//     SPIFFE ID, a JWT verified against the provider's inline keys and an ABAC condition on one
//     of its claims, the last of a 50-rule policy, all decided in the backend Envoy (jwt_authn
//     and RBAC);
//   - native-abac: the 50 rules without the token, in Envoy's RBAC;
//   - extauthz: the JWT + ABAC policy of native forced through ext_authz (engine extAuthz);
//   - rego: the same decision written in Rego (ext_authz).
//
// Every round measures each configuration, in an order rotated from round to round: its
// closed-loop maximum rate, then 1,000 rps with coordinated omission corrected (latency from
// when each request was due), with the CPU (percent of one core per 1,000 rps) and RSS of every
// process of the configuration read from /proc. Added latency is a configuration's percentile
// minus the direct path's. The medians over the rounds are reported with b.ReportMetric, with
// each mesh configuration's ratios to the bare pair (added p99, maximum rate, backend Envoy CPU);
// run with -benchtime 1x -count N and take medians with test/benchmedian. The log has the table.
//
// BenchmarkInboundFeatures says what each of the mesh's inbound features costs: beside the bare
// pair, the bare frontend in front of a backend Envoy with the mesh's inbound listener written
// statically (testdata/features-backend.yaml, the shapes of the mesh's backend with authorization
// OFF), all features on and then all but one for each, measured alternating like the above (the
// maximum rate and the backend Envoy's CPU per 1,000 rps); its log has each variant's difference
// from all-on.
//
// BenchmarkPerUserLimit, on the same mesh with authorization on, alternates runs at 1,000 rps
// without and with a Local limit keyed on the verified sub, and reports what the limit adds to
// the p50 and p99 (issue 17).
//
// BenchmarkChangeReachesOpenConnection, on the same mesh, times how long a rate limit and turning
// authorization on take to reach requests on a connection that is already open, and counts the
// connections each change costs.
package datapath
