package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// meshBase is a Mesh, two services and a JWT provider in namespace demo; tests add policies.
const meshBase = `apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec:
  trustDomain: portcullis.local
  defaultDecision: %DEFAULT%
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec:
  ports: [{name: http, port: 8080}, {name: admin, port: 9090}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: frontend, namespace: demo}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: idp, namespace: demo}
spec:
  issuer: https://idp.test
  jwks: {inline: '{"keys":[]}'}
---
apiVersion: portcullis.dev/v1alpha1
kind: JWTProvider
metadata: {name: other, namespace: demo}
spec:
  issuer: https://other.test
  jwks: {inline: '{"keys":[]}'}
`

// buildMesh builds a mesh from meshBase plus more YAML documents; defaultDecision is DENY
// unless given.
func buildMesh(t testing.TB, docs string, defaultDecision ...string) *model.Mesh {
	t.Helper()
	def := "DENY"
	if len(defaultDecision) > 0 {
		def = defaultDecision[0]
	}
	text := strings.Replace(meshBase, "%DEFAULT%", def, 1) + "---\n" + docs
	ds, ps := source.Decode("mesh.yaml", []byte(text))
	if len(ps) > 0 {
		t.Fatalf("decode: %v", ps)
	}
	m, ps := model.Build(ds)
	if len(ps) > 0 {
		t.Fatalf("build: %v", ps)
	}
	return m
}

func compile(t testing.TB, m *model.Mesh) *Engine {
	t.Helper()
	e, ps := Compile(m)
	if len(ps) > 0 {
		t.Fatalf("compile: %v", ps)
	}
	return e
}

// monday10 is Monday 2026-01-05 10:00 UTC.
var monday10 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

// request returns attributes of a typical request from frontend to backend.
func request(t testing.TB) *Attributes {
	t.Helper()
	a := &Attributes{
		Destination: Destination{Service: "backend", Namespace: "demo", Port: 8080},
		Request: Request{
			Method: "GET", Path: "/api/items", Host: "backend.demo", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{"x-tenant": "acme", "user-agent": "test"}, Time: monday10,
		},
	}
	a.Source.Address = netip.MustParseAddr("10.1.2.3")
	if err := a.Source.SetPrincipal("spiffe://portcullis.local/ns/demo/sa/frontend"); err != nil {
		t.Fatal(err)
	}
	return a
}

func token(t testing.TB, provider string, claims map[string]any) *jwt.Token {
	t.Helper()
	tok, err := jwt.NewToken([]string{provider}, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
