// Package loadgen sends load at a fixed rate, measuring each request from the moment it was due
// rather than when it was sent (the coordinated-omission correction of wrk2): a stall in the
// system under test shows as latency of every request it delayed, not as fewer requests. It
// also finds the maximum rate with callers that each send the next request as soon as the last
// one is answered. It is used by the data-path benchmark, the fault suite and the ext_authz load
// tool.
package loadgen
