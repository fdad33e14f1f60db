// Package server serves the Aggregated Discovery Service (state of the world and delta) to Envoy
// proxies and keeps the registry of connected proxies.
//
// A proxy authenticates with its SVID over mTLS. On its first request the server resolves the
// node: the Workload document named by its node id, or the workload its agent registered in
// node metadata, checked against the mesh like a document. The proxy's certificate must prove
// the workload's SPIFFE ID; a node claiming another identity is refused and logged. Every later
// request on the stream is held to that node (go-control-plane takes the node of each request),
// and one naming another node ends the stream. A stream's certificate is checked again every
// RecheckInterval: one that has expired or been revoked ends the stream and, with
// Server.Credentials, its connection (guard.go). Limits bound what one client makes the server
// hold: request and node size, names per type, served types, streams per node, nodes per
// identity. Connected
// proxies make up the endpoints of their services; one that disconnects stays for a grace
// period. Registrations are saved in the data directory, so after a control-plane restart the
// endpoints stay published while proxies reconnect, and no established path loses requests.
package server
