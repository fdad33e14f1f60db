// Package controlplane assembles and runs the control plane (`portcullis controlplane`, and the
// demo's in-process control plane): Config → New → Run, as SPIRE's pkg/server does for
// spire-server. New checks the configuration, opens what must exist before serving (the data
// directory and its lock, the document source, the decision log) and binds every port, so a bad
// flag or a busy port fails the start. Run serves the admin port at once and, from the first
// valid mesh (it names the trust domain), the CA, the certificate service and ADS on the xDS
// port, ext_authz on the authz port and, on Kubernetes, the injection webhook and the leader's
// status and caBundle writers — until its context ends.
package controlplane
