// Package faults runs the mesh under steady load through real Envoys and injects one fault at a
// time — SVID rotation, the control plane killed and restarted, a policy change, the
// authorization service down (failing closed, then open), the JWKS endpoint down, invalid
// documents, a backend instance killed — counting every response against what the fault may
// cost. `make test` runs the short suite; `make bench` runs it with 60 s of load per fault:
//
//	go test ./test/faults -run TestFaults -count 1 -v -args -fault-duration 60s
//
// Each fault prints one line: requests sent, succeeded, failed, and the expectation.
package faults
