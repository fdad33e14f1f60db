package policytest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/authz/policy/internal/testmesh"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source"
)

func loadDir(dir string) (*model.Mesh, error) {
	d, err := source.NewDir(dir, source.DirOptions{Checks: []source.Checker{policy.Check}})
	if err != nil {
		return nil, err
	}
	if err := d.Load(); err != nil {
		return nil, err
	}
	m, _ := d.Current()
	return m, nil
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh", "mesh.yaml"), testmesh.YAML("DENY")+
		testmesh.Policy("allow", "backend", "ALLOW", false, testmesh.RuleGET+"\n"+testmesh.RuleAdminJWT))
	writeFile(t, filepath.Join(dir, "tests", "backend_test.yaml"), `mesh: ../mesh
tests:
  - name: frontend reads
    request:
      source: {principal: spiffe://portcullis.local/ns/demo/sa/frontend, address: 10.0.0.1}
      destination: {service: backend, namespace: demo, port: 8080}
      method: GET
      path: /api/items?page=2
    expect: {decision: ALLOW, policy: demo/allow, rule: gets}
  - name: admin with a token
    request:
      destination: {service: backend, namespace: demo}
      method: POST
      path: /api/x
      jwt: {providers: [idp], claims: {iss: https://idp.test, sub: alice, exp: 2000000000}}
    expect: {decision: ALLOW, rule: admins}
  - name: post without a token needs one
    request:
      destination: {service: backend, namespace: demo}
      method: POST
      path: /api/../api/x
    expect: {decision: DENY, code: jwt_required}
  - name: wrong on purpose
    request:
      destination: {service: backend, namespace: demo}
      method: DELETE
      path: /other
    expect: {decision: ALLOW, policy: demo/allow}
`)
	results, err := Run(context.Background(), filepath.Join(dir, "tests"), Options{LoadMesh: loadDir})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 4 {
		t.Fatalf("results = %+v", results)
	}
	for i, want := range []bool{true, true, true, false} {
		if results[i].Pass != want {
			t.Errorf("%s: pass = %v (%s)", results[i].Name, results[i].Pass, results[i].Failure)
		}
	}
	var out strings.Builder
	failed, err := WriteReport(&out, results, true)
	if err != nil || failed != 1 {
		t.Fatalf("failed = %d, %v", failed, err)
	}
	for _, want := range []string{"PASS " + filepath.Join(dir, "tests", "backend_test.yaml") + ": frontend reads", "FAIL", "decision DENY, want ALLOW; policy default, want demo/allow", "rule gets: no match", "PASS: 3/4", "FAIL: 1/4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunWithAPIKeys(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh", "mesh.yaml"), testmesh.YAML("DENY")+`apiVersion: portcullis.dev/v1alpha1
kind: APIKeyProvider
metadata: {name: batch-clients, namespace: demo}
spec: {}
---
`+testmesh.Policy("exporters", "backend", "ALLOW", false, `  - name: exporters
    from: {apiKey: {providers: [batch-clients], attributes: [{claim: scopes, contains: export}]}}
    to: {paths: ["/export/*"]}`))
	writeFile(t, filepath.Join(dir, "tests", "keys_test.yaml"), `mesh: ../mesh
tests:
  - name: a key with the export scope
    request:
      destination: {service: backend, namespace: demo}
      path: /export/orders
      apiKey: {provider: batch-clients, identity: batch-exporter, attributes: {scopes: [read, export]}}
    expect: {decision: ALLOW, policy: demo/exporters, rule: exporters}
  - name: a key without it
    request:
      destination: {service: backend, namespace: demo}
      path: /export/orders
      apiKey: {provider: batch-clients, identity: reporter, attributes: {scopes: [read]}}
    expect: {decision: DENY, code: denied_default}
  - name: a key of another provider
    request:
      destination: {service: backend, namespace: demo}
      path: /export/orders
      apiKey: {provider: other/batch-clients, identity: batch-exporter, attributes: {scopes: [export]}}
    expect: {decision: DENY}
`)
	results, err := Run(context.Background(), filepath.Join(dir, "tests"), Options{LoadMesh: loadDir})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 {
		t.Fatalf("results = %+v", results)
	}
	for _, r := range results {
		if !r.Pass {
			t.Errorf("%s: %s", r.Name, r.Failure)
		}
	}
	if _, err := (&RequestSpec{APIKey: &APIKeySpec{Identity: "x"}}).Attributes(testmesh.Monday10); err == nil {
		t.Error("an apiKey without a provider was accepted")
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Run(context.Background(), dir, Options{LoadMesh: loadDir}); err == nil || !strings.Contains(err.Error(), "no test files") {
		t.Errorf("empty dir: %v", err)
	}
	writeFile(t, filepath.Join(dir, "x_test.yaml"), "tests:\n  - name: a\n    typo: 1\n")
	if _, err := Run(context.Background(), dir, Options{LoadMesh: loadDir}); err == nil || !strings.Contains(err.Error(), "typo") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestParseRequest(t *testing.T) {
	r, err := ParseRequest([]byte("method: POST\npath: /a/./b?x=1\nheaders: {X-A: b, x-b: [c, d]}\ntime: 2026-01-05T10:00:00Z\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Attributes(testmesh.Monday10)
	if err != nil {
		t.Fatal(err)
	}
	if a.Request.Method != "POST" || a.Request.Path != "/a/b" || a.Request.Query != "x=1" || !slices.Equal(a.Request.Headers["x-a"], []string{"b"}) || !slices.Equal(a.Request.Headers["x-b"], []string{"c", "d"}) || !a.Request.Time.Equal(testmesh.Monday10) || a.Destination.Namespace != "default" {
		t.Errorf("attributes = %+v", a)
	}
	for _, bad := range []string{"methd: GET\n", "method: post\n", "headers: {x-a: {b: c}}\n", "source: {principal: not-spiffe}\n", "path: relative\n", "time: yesterday\n", "source: {address: x}\n"} {
		r, err := ParseRequest([]byte(bad))
		if err == nil {
			_, err = r.Attributes(testmesh.Monday10)
		}
		if err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
