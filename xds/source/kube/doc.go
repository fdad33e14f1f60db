// Package kube is the Kubernetes source of the mesh: client-go informers on Services,
// EndpointSlices, Pods, Namespaces and the portcullis.dev custom resources become a model.Mesh
// through the same model.Build and checks as the file source, and the ready EndpointSlice
// addresses become the endpoints proxies reach services at. Service accounts are read from pods
// (spec.serviceAccountName); ServiceAccount objects are not watched.
//
// A Kubernetes Service is a mesh service when a portcullis Service of the same name refines it,
// when its namespace is labelled portcullis.dev/inject=enabled, or when one of its pods carries
// the sidecar. Its ports are those named or appProtocol'd http, http2/h2c or grpc (other TCP ports
// pass through the proxies untouched), its SPIFFE IDs those of the service accounts of its pods
// that carry the sidecar (the only pods that are its endpoints), and its addresses its cluster
// IPs. Endpoints are kept out of the Mesh: an EndpointSlice change moves the endpoints only, so
// no document is rebuilt and only proxies' EDS resources change. Endpoints that are not ready
// (or terminating) are never given to other proxies.
//
// Every replica serves its own proxies, so every replica runs a Reporter: its ledger's count of
// its proxies per custom resource, with the generation its live mesh holds, in a ConfigMap owned
// by its pod. StatusWriter writes the Accepted and Programmed conditions back on each custom
// resource, Programmed summed over the reports of the replicas that are there; it runs on the
// elected leader only (Leases), while every replica serves from its own Source. The
// source ignores updates of custom resources that do not change their generation or labels, so
// its own status writes never cause a rebuild or a push, and updates of Kubernetes objects that
// change nothing it reads (pod status heartbeats, resyncs, annotations).
package kube
