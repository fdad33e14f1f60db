// Package traceview reads traces from Jaeger's query API and serves the control plane's trace
// browser (/traces on the admin port), built to answer "why was this request denied": each
// request is a row with its method, path, status, decision, decision code, policy, rule and the
// services it crossed, filtered and paged; the control plane's own traces (document loads,
// reconciles, certificates) are listed apart; a trace page draws the spans on a time axis and
// shows the authorization decision at the top. It also writes the Jaeger configuration the demo
// and the tests run Jaeger with.
package traceview
