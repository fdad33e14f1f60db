// Package agentrss measures the resident memory of a real `portcullis agent` process holding
// one SVID, with Envoy fetching it over SDS and a go-spiffe client watching the Workload API,
// across several rotations. TestAgentRSS enforces the budget; BenchmarkAgentRSS reports it
// (rss-MiB, peak-MiB) for `make bench`.
package agentrss
