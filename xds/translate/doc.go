// Package translate turns one resolved proxy of the mesh (model.Proxy) into the Envoy resources it
// needs: an inbound listener (mTLS, CORS, local rate limit, jwt_authn, RBAC, ext_authz, the
// verified and global rate limits, router) with a route configuration per service port it
// serves — under Mesh authz.engine auto, with an RBAC twin deciding in Envoy the plain requests
// of a route whose policies RBAC expresses exactly (rbac.go), and a token route whose JWT
// jwt_authn verifies (jwt.go) — one outbound listener, route configuration and cluster per
// upstream, clusters for the authorization service and the trace collector, endpoint
// assignments, and the ext_authz and jwt_authn filters' configurations (the headers ext_authz
// sends: authz_headers.go).
//
// What policies change is kept out of listeners, which Envoy replaces only as their connections
// drain: rate limits, RBAC rules and the per-route ext_authz settings are in the routes (RDS),
// the ext_authz and jwt_authn filters' own settings in ECDS resources, and both apply to the
// next request on connections already open. The translator reads the proxy and looks nothing up in the mesh.
//
// Translation is pure and deterministic: the same input always gives the same resources, so
// content hashes can version them. Each resource kind is built in its own file; the HTTP filters
// of a listener come from one explicit, ordered list. Every resource is validated (ValidateAll)
// and every error is collected, so a bad input produces one error listing all problems and no
// resources — the caller keeps the proxy's last good configuration.
package translate
