// Package meshgen writes synthetic meshes for benchmarks and load tests: services in one
// namespace, workloads spread over them, each calling the next few services.
package meshgen

import (
	"fmt"
	"strings"
)

// Spec sizes a synthetic mesh.
type Spec struct {
	TrustDomain string
	Services    int
	Workloads   int
	// Upstreams per workload: workload i (of service i % Services) calls the next Upstreams
	// services.
	Upstreams int
	// AuthzTimeoutMs sets the Mesh's authorization timeout; changing it changes every proxy's
	// ext_authz filter configuration (ECDS).
	AuthzTimeoutMs int
}

// Files returns the mesh as documents split over three files, as users keep them: the Mesh,
// the services, the workloads.
func (s Spec) Files() map[string]string {
	var mesh, services, workloads strings.Builder
	fmt.Fprintf(&mesh, "apiVersion: portcullis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {trustDomain: %s, authz: {timeout: %dms}}\n", s.TrustDomain, s.AuthzTimeoutMs)
	for i := range s.Services {
		fmt.Fprintf(&services, "---\napiVersion: portcullis.dev/v1alpha1\nkind: Service\nmetadata: {name: svc-%d, namespace: load}\nspec: {ports: [{name: http, port: 8080}]}\n", i)
	}
	for i := range s.Workloads {
		fmt.Fprintf(&workloads, "---\napiVersion: portcullis.dev/v1alpha1\nkind: Workload\nmetadata: {name: w-%d, namespace: load}\nspec:\n  service: svc-%d\n  address: 10.%d.%d.%d\n  inboundPort: 15006\n  appPort: 8080\n  upstreams:\n",
			i, i%s.Services, i>>16&255, i>>8&255, i&255)
		for u := 1; u <= s.Upstreams; u++ {
			fmt.Fprintf(&workloads, "    - {service: svc-%d, localPort: %d}\n", (i+u)%s.Services, 19000+u)
		}
	}
	return map[string]string{"mesh.yaml": mesh.String(), "services.yaml": services.String(), "workloads.yaml": workloads.String()}
}

// ServiceAccount returns the service account of workload i.
func (s Spec) ServiceAccount(i int) string { return fmt.Sprintf("svc-%d", i%s.Services) }

// NodeID returns the node id of workload i.
func NodeID(i int) string { return fmt.Sprintf("w-%d.load", i) }

// ServiceName returns the name of service i.
func ServiceName(i int) string { return fmt.Sprintf("svc-%d", i) }
