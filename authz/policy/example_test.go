package policy_test

import (
	"context"
	"fmt"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// A mesh whose only policy lets frontend read from backend: Compile turns it into an engine,
// and Decide answers each request with the policy and rule that decided, or the mesh default.
func ExampleCompile() {
	docs, problems := source.Decode("mesh.yaml", []byte(`apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: portcullis.local}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: backend, namespace: demo}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-readers, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - name: frontend-reads
      from: {principals: ["spiffe://portcullis.local/ns/demo/sa/frontend"]}
      to: {methods: [GET], paths: ["/api/*"]}
`))
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	m, problems := model.Build(docs)
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	engine, problems := policy.Compile(m)
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}

	a := &policy.Attributes{
		Destination: policy.Destination{Service: "backend", Namespace: "demo", Port: 8080},
		Request:     policy.Request{Method: "GET", Path: "/api/items"},
	}
	if err := a.Source.SetPrincipal("spiffe://portcullis.local/ns/demo/sa/frontend"); err != nil {
		fmt.Println(err)
		return
	}
	d := engine.Decide(context.Background(), a)
	fmt.Println(d.Outcome(), d.Code, d.Policy, d.Rule)

	a.Request.Method = "DELETE"
	d = engine.Decide(context.Background(), a)
	fmt.Println(d.Outcome(), d.Code, d.Reason)
	// Output:
	// ALLOW allowed demo/backend-readers frontend-reads
	// DENY denied_default no ALLOW policy matched; the mesh default is DENY
}
