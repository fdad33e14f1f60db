// Package telemetry sets up what the process uses to be observed: the one *slog.Logger, the
// OpenTelemetry meter provider whose metrics the admin port serves in Prometheus format, and the
// admin HTTP server itself (health, readiness, metrics, debug pages).
//
// Nothing here is global: callers build these once in cmd and pass them to the components that
// need them.
package telemetry
