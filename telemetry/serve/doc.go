// Package serve runs a server until its context ends, then stops it within a grace period:
// requests in flight finish, long streams (ADS, SDS, Workload API watches) are cut when the
// grace period is over. Every server of every process (admin, xDS, ext_authz, the webhook, the
// agent's sockets) runs through it, so shutdown behaves the same everywhere.
package serve
