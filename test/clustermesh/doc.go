// Package clustermesh installs the mesh on a real single-node Kubernetes cluster (test/cluster)
// the way a user installs it — `portcullis install --overlay demo`: the control plane at two
// replicas, Jaeger, a namespace labelled for injection and the demo applications as Deployments
// with Services — and tests it end to end from real pods: mTLS with the caller's SPIFFE ID,
// policy, JWT, rate limits, STRICT refusing a pod outside the mesh, application probes, traces
// in the in-cluster Jaeger, policy edits and their status, a rolling restart of the control
// plane, a pod deletion and scaling, with no failed request. `make cluster` uses Install for
// the same demo.
package clustermesh
