// Package sidecar assembles and runs `portcullis agent`, the process beside each workload:
// Config → New → Run. It runs the identity agent (key, SVID, rotation, SDS and the Workload API),
// and with an Envoy path it writes Envoy's bootstrap once the first SVID names the workload's
// namespace, supervises Envoy and exports the counters only Envoy keeps. It links nothing of the
// control plane, so the sidecar build (-tags agentonly) stays small.
package sidecar
