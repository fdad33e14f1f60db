// Package meshtest runs a local mesh as its users run it — the portcullis binary as control
// plane, agents with real Envoys, a separate authorization service — for the end-to-end tests,
// the fault suite and the data-path benchmark. Every process stops when the test ends.
package meshtest
