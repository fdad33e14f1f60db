// Package watch is the one watchable value of the project: a current value and a channel that
// is closed when the value is replaced, with Wait for the first value that satisfies a
// condition. Everything that changes over time and has waiters (the mesh, the connected proxies,
// the Kubernetes endpoints, a workload's SVID, the CA's signing state) is one of these, so no
// component hand-writes the close-and-replace dance (go-spiffe's X509Source.Updated and
// WaitUntilUpdated are the model).
package watch
