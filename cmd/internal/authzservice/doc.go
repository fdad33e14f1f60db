// Package authzservice assembles and runs `portcullis authz`, the ext_authz service on its own
// (to scale authorization apart from xDS, and keep it up while the control plane restarts):
// Config → New → Run. Its identity comes from a SPIFFE Workload API socket, its policies from a
// directory of mesh documents.
package authzservice
