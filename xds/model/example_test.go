package model_test

import (
	"fmt"

	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

// Build checks a set of documents together — each on its own, then the references between
// them — and reports every problem at once, each with its file, document, field and line; a
// mesh comes back only when there is none.
func ExampleBuild() {
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
metadata: {name: readers, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - to: {paths: ["api/*"]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: writers, namespace: demo}
spec:
  selector: {service: payments}
  action: ALLOW
  rules:
    - to: {methods: [POST]}
`))
	if len(problems) > 0 {
		fmt.Println(problems)
		return
	}
	m, problems := model.Build(docs)
	for _, p := range problems {
		fmt.Println(p)
	}
	fmt.Println("mesh built:", m != nil)
	// Output:
	// mesh.yaml: document 3 (AuthorizationPolicy/demo/readers): spec.rules[0].to.paths[0]: must start with "/" (line 19)
	// mesh.yaml: document 4 (AuthorizationPolicy/demo/writers): spec.selector.service: Service "payments" not found in namespace "demo" (line 25)
	// mesh built: false
}
