// Package bootstrap writes the Envoy bootstrap an agent starts its proxy with: the node's
// identity, the admin interface on loopback, a static cluster for SDS over the agent's unix
// socket, a static cluster for the control plane's ADS over mTLS (with the certificate from that
// SDS), and ADS as the source of listeners and clusters.
//
// Listeners and clusters are never given a fetch timeout: Envoy stays "not ready" until the
// control plane has sent them, so nothing reports ready without configuration.
package bootstrap
