// Package appprobe runs the applications' Kubernetes probes on the kubelet's behalf. In a meshed
// pod every inbound connection is redirected into the proxy, which under STRICT mTLS refuses the
// kubelet's plaintext probe; the injector therefore rewrites each application probe to the
// agent's admin port (/app-health/<container>/<kind>), and the agent, whose traffic is not
// redirected, probes the application on 127.0.0.1 with the original settings (Istio does the
// same; exempting the probe port instead, as Linkerd does, would expose the application's port
// without mTLS). It imports nothing of Kubernetes so the sidecar build stays small.
package appprobe
