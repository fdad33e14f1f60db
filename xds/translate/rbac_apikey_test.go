package translate

import (
	"testing"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// TestAPIKeysStayOnExtAuthz: Envoy's RBAC knows nothing of API keys, so a route where an
// APIKeyProvider acts (an invalid key must be refused on every request) or whose policies say
// from.apiKey (a rule that, without the key, RBAC would read as matching on the rest) is never
// decided natively, whatever else its policies say.
func TestAPIKeysStayOnExtAuthz(t *testing.T) {
	const head = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: portcullis.local, defaultDecision: DENY, authz: {engine: auto}}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec: {ports: [{name: http, port: 18090}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: callers, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
`
	principals := `    - from: {principals: ["spiffe://portcullis.local/ns/demo/sa/frontend"]}
`
	withKey := `    - from: {principals: ["spiffe://portcullis.local/ns/demo/sa/frontend"], apiKey: {}}
`
	provider := `---
apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: clients, namespace: portcullis-system}
spec: {}
`
	for _, tc := range []struct {
		name, docs, shape, reason string
	}{
		{"principals only: native", head + principals, "", ""},
		{"a root namespace APIKeyProvider acts on the service", head + principals + provider, NotNativeAPIKeyProvider, "api key provider portcullis-system/clients"},
		{"from.apiKey without any provider", head + withKey, NotNativeAPIKey, "demo/callers: api key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, ps := source.Decode("mesh.yaml", []byte(tc.docs))
			if ps != nil {
				t.Fatal(ps)
			}
			m, ps := model.Build(docs)
			if ps != nil {
				t.Fatal(ps)
			}
			svc := model.NewMeshContext(m).Service(model.Ref{Namespace: "demo", Name: "backend"})
			route, placement := nativeAuthz(svc, 18090, model.DecisionDeny, nil, model.DefaultRootNamespace, jwt.EnvoyJWKS)
			if tc.shape == "" {
				if !placement.Native || route == nil {
					t.Fatalf("not native: %+v", placement)
				}
				return
			}
			if placement.Native || route != nil || placement.Shape != tc.shape || placement.Reason != tc.reason {
				t.Fatalf("placement %+v, want shape %q reason %q", placement, tc.shape, tc.reason)
			}
		})
	}
}
