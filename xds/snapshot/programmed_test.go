package snapshot

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/portcullis/portcullis/xds/source"
)

// programmedMesh: api (two instances) is called by web; a rate limit, a policy requiring a
// provider's tokens and a mesh-wide audit policy reach api's proxies; a policy for idle, a service
// nobody runs or calls, reaches none.
const programmedMesh = `
apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: t.test}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec: {serviceAccounts: [api], ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec: {serviceAccounts: [web], ports: [{name: http, port: 8081}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: idle, namespace: shop}
spec: {serviceAccounts: [idle], ports: [{name: http, port: 8082}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: shop}
spec: {service: api, inboundPort: 15001, appPort: 8080}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: api-2, namespace: shop}
spec: {service: api, inboundPort: 15002, appPort: 8080}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec: {service: web, inboundPort: 15003, appPort: 8081, upstreams: [{service: api, localPort: 19001}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: shop}
spec: {issuer: "https://idp.test", jwks: {inline: '{"keys":[]}'}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-admins, namespace: shop}
spec: {selector: {service: api}, action: ALLOW, rules: [{from: {jwt: {providers: [idp]}}}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: shop}
spec: {action: AUDIT, rules: [{to: {methods: [DELETE]}}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: idle-allow, namespace: shop}
spec: {selector: {service: idle}, action: ALLOW, rules: [{to: {methods: [GET]}}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-limit, namespace: shop}
spec: {selector: {service: api}, limits: [{name: all, bucket: {maxTokens: 10, fillInterval: 1s}}]}
`

// TestLedgerDocuments: per document, the connected proxies whose configuration it reaches and
// those that have ACKed it. An edit makes only the edited document pending, until the proxies
// ACK the versions carrying it; a NACK keeps it pending and counts as refused; a proxy that
// leaves leaves the count; a document no proxy uses has no count.
func TestLedgerDocuments(t *testing.T) {
	ctx := context.Background()
	mesh := &source.Publisher{}
	mesh.Publish(buildMesh(t, map[string]string{"mesh.yaml": programmedMesh}))
	ledger, err := NewLedger(nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := &staticRegistry{}
	ctl, err := NewController(mesh, reg, NewCache(cache.NewSnapshotCache(true, cache.IDHash{}, nil), ledger), ledger, Options{Translate: testOpts})
	if err != nil {
		t.Fatal(err)
	}
	var regs []Registration
	for _, node := range []string{"api-1", "api-2", "web-1"} {
		sa, _, _ := strings.Cut(node, "-")
		ledger.Connected(node+".shop", "spiffe://t.test/ns/shop/sa/"+sa, false)
		regs = append(regs, Registration{NodeID: node + ".shop", Identity: spiffeid.RequireFromString("spiffe://t.test/ns/shop/sa/" + sa), Connected: true})
	}
	reg.set(regs...)
	// ack ACKs, as ADS records them, the versions published for a proxy (all types unless named).
	ack := func(node string, types ...string) {
		for _, p := range ledger.Status() {
			if p.Node != node+".shop" {
				continue
			}
			for url, st := range p.Types {
				if len(types) == 0 || slices.Contains(types, url) {
					ledger.Acked(p.Node, url, st.Published)
				}
			}
		}
	}
	check := func(step string, want map[string]DocumentCount) {
		t.Helper()
		m, _ := mesh.Current()
		got, settled := ledger.Documents(m.Version)
		if !settled {
			t.Fatalf("%s: not settled after a reconcile", step)
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", step, got, want)
		}
	}
	all := func(c DocumentCount) map[string]DocumentCount {
		return map[string]DocumentCount{
			"Mesh/default": {Proxies: 3, Programmed: 3}, "Service/shop/api": {Proxies: 3, Programmed: 3}, "Service/shop/web": {Proxies: 1, Programmed: 1},
			"Workload/shop/api-1": {Proxies: 1, Programmed: 1}, "Workload/shop/api-2": {Proxies: 1, Programmed: 1}, "Workload/shop/web-1": {Proxies: 1, Programmed: 1},
			"AuthorizationPolicy/shop/api-admins": {Proxies: 2, Programmed: 2}, "JWTProvider/shop/idp": {Proxies: 3, Programmed: 3},
			"AuthorizationPolicy/shop/audit-all": {Proxies: 3, Programmed: 3}, "RateLimitPolicy/shop/api-limit": c,
		}
	}

	ctl.Reconcile(ctx)
	none := all(DocumentCount{Proxies: 2})
	for doc, c := range none {
		none[doc] = DocumentCount{Proxies: c.Proxies}
	}
	check("built, nothing ACKed", none)
	ack("api-1")
	ack("api-2")
	ack("web-1")
	ledger.Requested("web-1.shop", "type.googleapis.com/envoy.service.runtime.v3.Runtime") // a type no snapshot carries
	check("all ACKed", all(DocumentCount{Proxies: 2, Programmed: 2}))

	// The rate limit changes: api's routes get a new version. Only the rate limit waits for the
	// ACKs; the service, the mesh and the policies on the same routes keep what was ACKed.
	mesh.Publish(buildMesh(t, map[string]string{"mesh.yaml": strings.Replace(programmedMesh, "maxTokens: 10", "maxTokens: 20", 1)}))
	if m, _ := mesh.Current(); func() bool { _, settled := ledger.Documents(m.Version); return settled }() {
		t.Error("settled before the proxies were built from the new mesh")
	}
	ctl.Reconcile(ctx)
	check("rate limit edited", all(DocumentCount{Proxies: 2}))
	ack("api-1", resource.RouteType)
	check("api-1 ACKed the routes", all(DocumentCount{Proxies: 2, Programmed: 1}))
	var nonce string
	for _, p := range ledger.Status() {
		if p.Node == "api-2.shop" {
			nonce = "n-" + p.Types[resource.RouteType].Published
			ledger.Sent(p.Node, 7, resource.RouteType, p.Types[resource.RouteType].Published, nonce)
		}
	}
	ledger.Nacked("api-2.shop", 7, resource.RouteType, nonce, "refused for the test")
	check("api-2 refused the routes", all(DocumentCount{Proxies: 2, Programmed: 1, Refused: 1}))

	// Endpoints move (web-1 leaves: api has no caller, its proxies' configuration stays): web-1
	// leaves every count.
	ledger.Disconnected("web-1.shop", 1)
	want := all(DocumentCount{Proxies: 2, Programmed: 1, Refused: 1})
	delete(want, "Service/shop/web")
	delete(want, "Workload/shop/web-1")
	want["Mesh/default"] = DocumentCount{Proxies: 2, Programmed: 2}
	want["Service/shop/api"] = DocumentCount{Proxies: 2, Programmed: 2}
	want["AuthorizationPolicy/shop/audit-all"] = DocumentCount{Proxies: 2, Programmed: 2}
	want["JWTProvider/shop/idp"] = DocumentCount{Proxies: 2, Programmed: 2}
	check("web-1 gone", want)
}
