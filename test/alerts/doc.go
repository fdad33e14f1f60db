// Package alerts tests the Prometheus alerting rules in deploy/prometheus: promtool checks and
// unit-tests them (each alert fires for its case and not for its neighbour), and every metric a
// rule reads must be one the code registers, so an alert never waits on a metric that does not
// exist.
package alerts
