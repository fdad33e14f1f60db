// Package envoytest runs real Envoy processes for tests: it finds the binary, starts Envoy with
// a bootstrap on OS-chosen ports, waits until its admin endpoint reports ready, shows Envoy's log
// when a test fails, and stops the process when the test ends.
//
// Envoy comes from ENVOY_BIN, the repository's .cache/bin/envoy (installed by `make envoy`), or
// PATH. When none is found the test fails under CI=true and is skipped, loudly, elsewhere.
package envoytest
