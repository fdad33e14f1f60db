// Package tracetest collects the spans Envoy, the control plane and the authorization service
// export, for tests that assert a trace's shape: a real Jaeger (v2, built by `make jaeger`) when
// it is in the tool cache, queried through its HTTP API like a user would, else an in-process
// OTLP gRPC receiver.
package tracetest
