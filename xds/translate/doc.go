// Package translate turns one proxy of the mesh (model.Proxy) into the Envoy resources it needs:
// an inbound listener (mTLS, local rate limit, ext_authz, router to the local app), one outbound
// listener and cluster per upstream, clusters for the authorization service and the trace
// collector, and endpoint assignments.
//
// Translation is pure and deterministic: the same input always gives the same resources, so
// content hashes can version them. Each resource kind is built in its own file; the HTTP filters
// of a listener come from one explicit, ordered list. Every resource is validated (ValidateAll)
// and every error is collected, so a bad input produces one error listing all problems and no
// resources — the caller keeps the proxy's last good configuration.
package translate
