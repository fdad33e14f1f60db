// Package netns tests transparent mode for real: two Linux network namespaces stand for two pods,
// each with the redirection `portcullis init-iptables` installs (the injected init container's
// command) and an agent supervising a real Envoy as the proxy's UID (1337), as the injected
// sidecar runs. The control plane runs in a third namespace that routes between the pods. A plain
// HTTP client in the frontend namespace dials the backend Service's virtual IP with no proxy
// settings and reaches the backend application through both Envoys (mTLS, authorization).
//
// The test needs root, iproute2 (`ip netns`), iptables and setpriv (util-linux); `make test`
// installs them (netns-tools). Without them it fails under CI=true and skips elsewhere. Nothing
// touches the host's network: every address and port lives inside the test's namespaces, which
// are deleted (with their iptables rules) when the test ends.
package netns
