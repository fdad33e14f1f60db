// Package agentrss measures the resident memory of a real `portcullis agent` process holding
// one SVID, with Envoy fetching it over SDS and a go-spiffe client watching the Workload API,
// across several rotations. TestAgentRSS guards against leaks and regressions
// (twice the budget); BenchmarkAgentRSS reports RSS and peak (rss-MiB, peak-MiB) for `make bench`.
package agentrss
