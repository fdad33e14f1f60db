// Command xdsload measures xDS convergence: how long after a mesh document changes every one of
// N proxies has ACKed its new configuration, and what the control plane costs in memory at that
// scale.
//
// It runs the control plane's xDS pieces (file source, controller, ADS server, registry, ledger)
// in this process behind real gRPC and mTLS, and starts itself again as a child process that
// opens N ADS streams (each with its own SVID) that request clusters, endpoints, listeners and
// the routes and filter configurations the listeners name, and ACK every response, like Envoy.
// So the parent's RSS is the control plane's alone. Each round edits a document on disk (the
// Mesh's authorization timeout, which changes every proxy's ext_authz filter configuration, an
// ECDS resource) and times the write to the last ACK.
//
//	go run ./test/xdsload -clients 1000 -services 500 -rounds 7
package main
