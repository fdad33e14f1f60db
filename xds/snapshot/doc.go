// Package snapshot publishes per-proxy xDS snapshots and keeps a ledger of what each proxy has
// accepted.
//
// The Controller watches the mesh and the registry of connected proxies, translates each proxy
// whose inputs changed against a mesh context resolved once per reconcile, versions every resource
// type (TypeURLs: clusters, endpoints, listeners, routes, ECDS) by content hash (unchanged
// configuration is never re-pushed), checks the snapshot's consistency (every EDS, RDS and ECDS
// name referred to is there), and sets it in go-control-plane's cache. A translation error keeps
// the proxy's last good snapshot. Identical resources of different proxies share one object, so
// memory grows with distinct configuration rather than with proxies.
//
// The Ledger records, per proxy and resource type, the versions sent, ACKed and NACKed (with
// Envoy's error), and the documents behind each proxy's resources, so that it can count per
// document the proxies it reaches and those that have ACKed its current version (Documents). Cache wraps the snapshot cache so a NACKed version is never resent in a loop
// (go-control-plane#962): the proxy gets the next version that differs, not the one it refused.
package snapshot
