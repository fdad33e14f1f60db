package translate

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

const baseMesh = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: example.org
  mtls: {mode: STRICT}
  authz: {failureMode: CLOSED, timeout: 250ms}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  ports: [{name: http, port: 8081}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: shop}
spec:
  service: api
  inboundPort: 15001
  appPort: 8080
  upstreams: [{service: cart, localPort: 19001}]
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-limits, namespace: shop}
spec:
  selector: {service: api}
  limits:
    - name: all
      bucket: {maxTokens: 100, fillInterval: 1s}
`

// translateDocs translates proxy api-1.shop of a mesh written as YAML.
func translateDocs(t *testing.T, docs string) *Resources {
	t.Helper()
	ds, ps := source.Decode("mesh.yaml", []byte(docs))
	if ps != nil {
		t.Fatal(ps)
	}
	mesh, ps := source.Build(ds)
	if ps != nil {
		t.Fatal(ps)
	}
	p, err := model.NewProxy(model.NewMeshContext(mesh), mesh.Workload("api-1.shop"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Translate(Input{Proxy: p}, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func sameMessages[T proto.Message](a, b []T) bool {
	return slices.EqualFunc(a, b, func(x, y T) bool { return proto.Equal(x, y) })
}

// TestPolicyChangesLeaveListeners: what policies and the Mesh's authorization settings change
// is in routes (RDS) and the ext_authz filter's configuration (ECDS), which Envoy applies to the
// next request on connections already open. Listeners — which Envoy replaces by draining their
// connections — change only with ports and TLS.
func TestPolicyChangesLeaveListeners(t *testing.T) {
	base := translateDocs(t, baseMesh)
	for _, tc := range []struct {
		name            string
		from, to        string // replace from by to in the base mesh; an empty from appends to
		listeners       bool   // the change must replace listeners
		routes, filters bool   // the change must reach routes, the ECDS resource
	}{
		{name: "rate limit changed", from: "maxTokens: 100", to: "maxTokens: 5", routes: true},
		{name: "rate limit removed", from: baseMesh[strings.Index(baseMesh, "---\napiVersion: portcullis.dev/v1alpha1\nkind: RateLimitPolicy"):], to: "", routes: true},
		{name: "authorization fails open", from: "failureMode: CLOSED", to: "failureMode: OPEN", filters: true},
		{name: "authorization timeout", from: "timeout: 250ms", to: "timeout: 1s", filters: true},
		{name: "authorization OFF", from: "authz: {", to: `authz: {mode: "OFF", `, routes: true},
		// Under the default engine (auto) Envoy decides this policy: it is in the route's RBAC.
		{name: "an authorization policy", from: "", to: "---\napiVersion: portcullis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\nspec:\n  selector: {service: api}\n  action: ALLOW\n  rules: [{from: {principals: [\"spiffe://example.org/ns/shop/sa/web\"]}}]\n", routes: true},
		{name: "engine extAuthz", from: "authz: {", to: "authz: {engine: extAuthz, ", routes: true},
		// The check can fail: a TLS mode change does replace the inbound listener.
		{name: "mTLS PERMISSIVE", from: "mode: STRICT", to: "mode: PERMISSIVE", listeners: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs := baseMesh + tc.to
			if tc.from != "" {
				if !strings.Contains(baseMesh, tc.from) {
					t.Fatalf("%q is not in the base mesh", tc.from)
				}
				docs = strings.Replace(baseMesh, tc.from, tc.to, 1)
			}
			got := translateDocs(t, docs)
			for _, c := range []struct {
				what    string
				changed bool
				want    bool
			}{
				{"listeners", !sameMessages(base.Listeners, got.Listeners), tc.listeners},
				{"routes", !sameMessages(base.Routes, got.Routes), tc.routes},
				{"the ext_authz configuration (ECDS)", !sameMessages(base.Extensions, got.Extensions), tc.filters},
				{"clusters", !sameMessages(base.Clusters, got.Clusters), false},
			} {
				if c.changed != c.want {
					t.Errorf("%s changed: %v, want %v", c.what, c.changed, c.want)
				}
			}
		})
	}
}
