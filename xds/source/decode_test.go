package source

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/xds/model"
)

const header = "apiVersion: portcullis.dev/v1alpha1\n"

const validMesh = header + `kind: Mesh
metadata: {name: default}
spec:
  trustDomain: example.org
`

const validServices = header + `kind: Service
metadata: {name: backend, namespace: shop}
spec:
  ports: [{name: http, port: 8080}]
---
` + header + `kind: Service
metadata: {name: frontend, namespace: shop}
spec:
  ports: [{name: http, port: 8081}]
`

// loadFiles writes files into a temporary mesh directory and loads it once.
func loadFiles(t *testing.T, files map[string]string) (*Dir, error) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d, err := NewDir(dir, DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d, d.Load()
}

func TestValidationProblems(t *testing.T) {
	cases := []struct {
		name   string
		doc    string // added to a valid mesh as policies.yaml
		want   []string
		absent []string
	}{{
		name: "unknown field with suggestion",
		doc: header + `kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: ALLOW
  rules:
    - to:
        pathz: ["/x"]
`,
		want: []string{`policies.yaml: document 1 (AuthorizationPolicy/shop/p): spec.rules[0].to.pathz: unknown field (did you mean "paths"?) (line 8)`},
	}, {
		// An unknown field does not hide the document's other problems, and the field it was
		// meant to be is not reported missing on top of it.
		name: "unknown field and a validation problem in one document",
		doc: header + `kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selectr: {service: backend}
  action: ALLOW
  rules:
    - to:
        paths: ["admin"]
        methodz: [GET]
`,
		want: []string{
			`policies.yaml: document 1 (AuthorizationPolicy/shop/p): spec.selectr: unknown field (did you mean "selector"?) (line 5)`,
			`policies.yaml: document 1 (AuthorizationPolicy/shop/p): spec.rules[0].to.methodz: unknown field (did you mean "methods"?) (line 10)`,
			`policies.yaml: document 1 (AuthorizationPolicy/shop/p): spec.rules[0].to.paths[0]: must start with "/" (line 9)`,
		},
		absent: []string{"spec.selector:"},
	}, {
		name: "path must start with slash, reported with document index and line",
		doc: validServices + "---\n" + header + `kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - to:
        paths: ["/api/*", "admin"]
`,
		want: []string{`policies.yaml: document 3 (AuthorizationPolicy/shop/allow-frontend): spec.rules[0].to.paths[1]: must start with "/" (line 21)`},
	}, {
		name: "bad SPIFFE IDs",
		doc: header + `kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: DENY
  rules:
    - from:
        principals:
          - "spiffe://example.org/ns/shop/sa/frontend"
          - "http://example.org/ns/a"
          - "spiffe://other.org/ns/shop/sa/x"
          - "spiffe://example.org/a/*/b"
`,
		want: []string{
			`spec.rules[0].from.principals[1]: "http://example.org/ns/a" is not a SPIFFE ID: scheme is missing or invalid (line 10)`,
			`spec.rules[0].from.principals[3]: "spiffe://example.org/a/*/b": "*" may appear once, at the start or end (line 12)`,
		},
	}, {
		name: "foreign trust domain",
		doc: header + `kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: DENY
  rules:
    - from:
        principals: ["spiffe://other.org/ns/shop/sa/x"]
`,
		want: []string{`spec.rules[0].from.principals[0]: trust domain "other.org" is not the mesh trust domain "example.org" (line 8)`},
	}, {
		name: "duplicate names",
		doc: validServices + "---\n" + header + `kind: Service
metadata: {name: backend, namespace: shop}
spec:
  ports: [{name: http, port: 9000}]
`,
		want: []string{`policies.yaml: document 3 (Service/shop/backend): metadata.name: duplicate Service "shop/backend" (first defined in `},
	}, {
		name: "dangling references",
		doc: validServices + "---\n" + header + `kind: Workload
metadata: {name: w1, namespace: shop}
spec:
  service: backnd
  inboundPort: 15001
  appPort: 8080
  upstreams:
    - service: payments.billing
      localPort: 9001
---
` + header + `kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector: {service: cart}
  action: ALLOW
  rules:
    - from:
        jwt: {providers: [corp]}
`,
		want: []string{
			`document 3 (Workload/shop/w1): spec.service: Service "backnd" not found in namespace "shop" (line 17)`,
			`document 3 (Workload/shop/w1): spec.upstreams[0].service: Service "payments" not found in namespace "billing" (line 21)`,
			`document 4 (AuthorizationPolicy/shop/p): spec.selector.service: Service "cart" not found in namespace "shop" (line 28)`,
			`document 4 (AuthorizationPolicy/shop/p): spec.rules[0].from.jwt.providers[0]: JWTProvider "corp" not found in namespace "shop" or the root namespace "portcullis-system" (line 32)`,
		},
	}, {
		name: "a service port the service does not have",
		doc: validServices + "---\n" + header + `kind: Workload
metadata: {name: w2, namespace: shop}
spec:
  service: backend
  inboundPort: 15002
  appPort: 18080
  servicePort: 9090
`,
		want: []string{`document 3 (Workload/shop/w2): spec.servicePort: 9090 is not a port of Service "backend" (line 20)`},
	}, {
		name: "wrong types and enum values",
		doc: header + `kind: RateLimitPolicy
metadata: {name: r, namespace: shop}
spec:
  selector: {service: backend}
  limits:
    - name: all
      bucket: {maxTokens: -1, fillInterval: 10ms}
      by: {header: "x-user", sourcePrincipal: yes}
`,
		want: []string{
			`spec.limits[0].bucket.maxTokens: expected a whole number from 0 to 4294967295, got "-1" (line 8)`,
			`spec.limits[0].by.sourcePrincipal: expected true or false, got "yes" (line 9)`,
		},
	}, {
		name: "every problem at once",
		doc: validServices + "---\n" + header + `kind: AuthorizationPolicy
metadata: {name: Bad_Name, namespace: shop}
spec:
  action: PERMIT
  rules:
    - to: {methods: [get], hosts: ["a:80"]}
      when:
        - time: {timeZone: Mars/Olympus, start: "25:00", end: "17:00", days: [Funday]}
        - sourceIPs: ["10.0.0.0/33"]
        - attribute: request.headerz.x
          equals: a
        - header: x-tenant
          matches: "("
`,
		want: []string{
			`metadata.name: "Bad_Name" is not a DNS label`,
			`spec.action: must be ALLOW, DENY or AUDIT, not "PERMIT"`,
			`spec.rules[0].to.methods[0]: must be an upper-case HTTP method like "GET", not "get"`,
			`spec.rules[0].to.hosts[0]: must be a host name`,
			`spec.rules[0].when[0].time.timeZone: unknown time zone "Mars/Olympus"`,
			`spec.rules[0].when[0].time.start: must be a time of day "HH:MM" (00:00-23:59), not "25:00"`,
			`spec.rules[0].when[0].time.days[0]: must be one of Mon, Tue, Wed, Thu, Fri, Sat, Sun, not "Funday"`,
			`spec.rules[0].when[1].sourceIPs[0]: invalid CIDR "10.0.0.0/33"`,
			`spec.rules[0].when[2].attribute: unknown attribute "request.headerz.x"`,
			`spec.rules[0].when[3].matches: invalid regular expression`,
		},
	}, {
		name: "unknown kind and apiVersion",
		doc:  header + "kind: Gateway\nmetadata: {name: g}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
		want: []string{
			`policies.yaml: document 1: kind: unknown kind "Gateway"`,
			`policies.yaml: document 2 (Service/default/s): apiVersion: must be "portcullis.dev/v1alpha1", not "v1"`,
		},
	}, {
		name: "broken YAML",
		doc:  "kind: [\n",
		want: []string{`policies.yaml: document 1: invalid YAML: line 1: did not find expected node content`},
	}, {
		name: "aliases refused",
		doc: validServices + "---\n" + header + `kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: ALLOW
  rules:
    - to: &t {methods: [GET]}
    - to: *t
`,
		want: []string{`spec.rules[0].to: YAML anchors and aliases are not supported`},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := loadFiles(t, map[string]string{"mesh.yaml": validMesh, "policies.yaml": tc.doc})
			if err == nil {
				t.Fatal("Load succeeded, want problems")
			}
			if m, _ := d.Current(); m != nil {
				t.Fatalf("an invalid set published mesh %s", m.Version)
			}
			got := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing problem\n  %s\nin\n%s", w, got)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(got, a) {
					t.Errorf("problem %q should not be reported:\n%s", a, got)
				}
			}
			if ps := d.Status().Problems; len(ps) == 0 {
				t.Error("Status has no problems")
			}
		})
	}
}

func TestMissingMeshDocument(t *testing.T) {
	_, err := loadFiles(t, map[string]string{"s.yaml": validServices})
	if err == nil || !strings.Contains(err.Error(), "no Mesh document") {
		t.Fatalf("err = %v, want no Mesh document", err)
	}
}

func TestExampleMeshLoads(t *testing.T) {
	d, err := NewDir("../../examples/demo/mesh", DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Load(); err != nil {
		t.Fatalf("example mesh: %v", err)
	}
	m, _ := d.Current()
	if got := m.TrustDomain.Name(); got != "portcullis.local" {
		t.Errorf("trust domain = %q", got)
	}
	if len(m.Services) != 2 || len(m.Workloads) != 2 || len(m.AuthorizationPolicies) != 4 || len(m.RateLimitPolicies) != 1 || len(m.JWTProviders) != 1 {
		t.Errorf("unexpected document counts: %d services, %d workloads, %d policies, %d rate limits, %d JWT providers",
			len(m.Services), len(m.Workloads), len(m.AuthorizationPolicies), len(m.RateLimitPolicies), len(m.JWTProviders))
	}
	backend := m.Service("demo", "backend")
	if backend == nil {
		t.Fatal("Service demo/backend not found")
	}
	if ids := m.ServiceIDs(backend); len(ids) != 1 || ids[0].String() != "spiffe://portcullis.local/ns/demo/sa/backend" {
		t.Errorf("backend IDs = %v", ids)
	}
	jwks := m.JWTProviders[0].Spec.JWKS.File
	if want, _ := filepath.Abs("../../examples/demo/mesh/jwks.json"); !filepath.IsAbs(jwks) && filepath.Clean(jwks) != filepath.Clean("../../examples/demo/mesh/jwks.json") || filepath.Base(jwks) != filepath.Base(want) {
		t.Errorf("JWKS file %q not resolved relative to its document", jwks)
	}
	// Defaults are applied.
	if m.Config.Spec.Authz.Timeout.Duration != model.DefaultAuthzTimeout || m.Workloads[0].Spec.Address != "127.0.0.1" {
		t.Errorf("defaults not applied: %+v", m.Config.Spec.Authz)
	}
}

func TestVersionIgnoresFileLayout(t *testing.T) {
	a, err := loadFiles(t, map[string]string{"a.yaml": validMesh + "---\n" + validServices})
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadFiles(t, map[string]string{"z.yaml": validServices, "m.yml": validMesh})
	if err != nil {
		t.Fatal(err)
	}
	ma, _ := a.Current()
	mb, _ := b.Current()
	if ma.Version != mb.Version {
		t.Errorf("same documents in other files: versions %s and %s differ", ma.Version, mb.Version)
	}
}

// Two instances of one service on one machine: each application has its own port, and both
// serve the service's port.
func TestInstancesWithTheirOwnApplicationPorts(t *testing.T) {
	instance := func(name string, inbound, app int) string {
		return fmt.Sprintf("---\n%skind: Workload\nmetadata: {name: %s, namespace: shop}\nspec: {service: backend, inboundPort: %d, appPort: %d, servicePort: 8080}\n", header, name, inbound, app)
	}
	d, err := loadFiles(t, map[string]string{"mesh.yaml": validMesh, "services.yaml": validServices + instance("b1", 15001, 18081) + instance("b2", 15002, 18082)})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := d.Current()
	for _, w := range m.Workloads {
		if w.ServedPort() != 8080 || w.Spec.AppPort == 8080 {
			t.Errorf("%s serves %d from app port %d; want service port 8080 from its own app port", w.Metadata.Name, w.ServedPort(), w.Spec.AppPort)
		}
	}
}
