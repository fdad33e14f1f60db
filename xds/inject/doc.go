// Package inject is the mutating admission webhook that adds the mesh to pods, and the iptables
// rules its init container installs.
//
// A pod is injected when it is annotated portcullis.dev/inject: "true", or when its namespace is
// labelled portcullis.dev/inject=enabled and the pod does not say "false". The webhook adds:
//   - portcullis-init, an init container that installs the redirection (Rules): inbound TCP to
//     the proxy's 15006, outbound TCP to 15001, except traffic of the proxy's own UID (Envoy and
//     the agent), loopback, and configured ports and CIDRs; the proxy's connections to its own
//     pod (a pod calling its own service) go to 15006 like any caller's;
//   - portcullis-proxy, the agent supervising Envoy as a native sidecar (an init container with
//     restartPolicy: Always) whose startup probe holds the application back until Envoy has its
//     certificate and configuration;
//   - the volumes: the agent's sockets (the SPIFFE Workload API is mounted into the application
//     containers too) and the projected service-account token (audience portcullis) the agent
//     joins with.
//
// Injection is idempotent: a pod that already carries portcullis.dev/injected is left alone.
// Pods it cannot mesh are refused with the reason (host network; a container using a port the
// proxy needs; a container running as the proxy's UID, which would bypass the redirection).
package inject
