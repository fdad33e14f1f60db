//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/portcullis/portcullis/test/authztest"
	"github.com/portcullis/portcullis/test/testca"
)

// TestAuthzCommand runs `portcullis authz` in-process against a SPIFFE Workload API on a unix
// socket and calls it over mTLS like a proxy would.
func TestAuthzCommand(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, "../../examples/demo/mesh", dir)
	ca := testca.New(t, "portcullis.local")
	serverID := "spiffe://portcullis.local/ns/portcullis/sa/authz"
	wl := authztest.StartWorkloadAPI(t, ca, ca.SVID(t, serverID))
	decisions := filepath.Join(t.TempDir(), "decisions.log")

	pr, pw := io.Pipe()
	root := newRootCommand("test")
	root.SetArgs([]string{"authz", "--config", dir, "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--workload-api-socket", wl.Socket, "--decision-log", decisions, "--log-format", "json"})
	root.SetErr(pw)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); pw.Close() }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			return errors.New("the authz command did not stop")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	addr, rest := waitForLog(t, pr, "authz server listening", "addr")
	go func() { _, _ = io.Copy(io.Discard, rest) }() // keep the log flowing
	// The service answers 503 until its mesh is compiled: poll until allowed.
	td := spiffeid.RequireTrustDomainFromString("portcullis.local")
	proxy := ca.SVID(t, "spiffe://portcullis.local/ns/demo/sa/backend")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(proxy.X509SVID(), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: "spiffe://portcullis.local/ns/demo/sa/frontend"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/api/items", Host: "backend", Headers: map[string]string{},
		}},
		ContextExtensions: map[string]string{"service": "backend", "namespace": "demo"},
	}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := client.Check(cctx, req)
		ccancel()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never allowed: %v", resp)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(decisions)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"decision":"ALLOW"`) || !strings.Contains(string(data), `"rule":"frontend-reads"`) {
		t.Errorf("decision log:\n%s", data)
	}
	if st, err := os.Stat(decisions); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("decision log mode %v (%v)", st.Mode(), err)
	}
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCommand("test")
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestPolicyCommands(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, "../../examples/demo/mesh", dir)

	out, err := runCLI(t, "policy", "test", "-v", "../../examples/demo/tests")
	if err != nil || !strings.Contains(out, "PASS: 8/8") {
		t.Errorf("policy test on the demo: %v\n%s", err, out)
	}
	// The worked examples of docs/policies.md.
	out, err = runCLI(t, "policy", "test", "../../examples/policies/tests")
	if err != nil || !strings.Contains(out, "PASS: 15/15") {
		t.Errorf("policy test on the documented examples: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "policy", "lint", "../../examples/policies/mesh"); err != nil {
		t.Errorf("lint of the documented examples: %v\n%s", err, out)
	}
	// The multi-tenant example of docs/policies.md.
	out, err = runCLI(t, "policy", "test", "../../examples/tenants/tests")
	if err != nil || !strings.Contains(out, "PASS: 10/10") {
		t.Errorf("policy test on the multi-tenant example: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "policy", "lint", "../../examples/tenants/mesh"); err != nil || strings.Contains(out, "warning") {
		t.Errorf("lint of the multi-tenant example: %v\n%s", err, out)
	}
	out, err = runCLI(t, "policy", "explain", "--config", dir, "--request", "../../examples/demo/requests/admin-without-token.yaml")
	if err != nil || !strings.Contains(out, "decision: DENY (jwt_required)") || !strings.Contains(out, "from.jwt: the request has no verified JWT") {
		t.Errorf("explain: %v\n%s", err, out)
	}
	out, err = runCLI(t, "policy", "explain", "--config", dir, "--request", "../../authz/server/testdata/check_request.json", "-o", "json")
	if err != nil || !strings.Contains(out, `"destination": "demo/backend"`) {
		t.Errorf("explain of an Envoy CheckRequest: %v\n%s", err, out)
	}
	out, err = runCLI(t, "policy", "lint", dir)
	if err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("lint of the demo: %v\n%s", err, out)
	}

	// A broken policy file: a validation error, a Rego error and a rule that can never match,
	// all reported at once with their lines.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: demo}
spec:
  selector: {service: backend}
  action: ALLOW
  rules:
    - to: {methods: [GET], notMethods: [GET]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad-rego, namespace: demo}
spec:
  action: DENY
  rego:
    module: |
      package bad

      match if {
        input.request.method ==
      }
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad-path, namespace: demo}
spec:
  action: DENY
  rules: [{to: {paths: [api]}}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "policy", "lint", dir)
	if err == nil {
		t.Fatalf("lint passed:\n%s", out)
	}
	for _, want := range []string{
		"bad.yaml: document 1 (AuthorizationPolicy/demo/bad): spec.rules[0].to.methods: the rule can never match: every method listed is excluded by notMethods (line 8)",
		"bad.yaml: document 2 (AuthorizationPolicy/demo/bad-rego): spec.rego.module: rego line 5: rego_parse_error",
		"(line 21)",
		"bad.yaml: document 3 (AuthorizationPolicy/demo/bad-path): spec.rules[0].to.paths[0]: must start with \"/\"",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lint output lacks %q:\n%s", want, out)
		}
	}

	// A failing test exits non-zero.
	tests := t.TempDir()
	if err := os.WriteFile(filepath.Join(tests, "x_test.yaml"), []byte("tests:\n  - name: wrong\n    request: {destination: {service: backend, namespace: demo}, path: /api/x}\n    expect: {decision: ALLOW}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "policy", "test", "--config", dir, tests)
	if err == nil || !strings.Contains(out, "FAIL: 1/1") || !strings.Contains(err.Error(), "1 of 1 failed") {
		t.Errorf("failing test: %v\n%s", err, out)
	}
}

// TestPolicyLintWarnsAboutReach: a mesh written before documents were scoped to their namespace
// (no spec.rootNamespace) is linted with a warning for each document whose reach changed, at
// file, document, field and line; warnings alone do not fail lint, and are counted beside the
// problems when there are some.
func TestPolicyLintWarnsAboutReach(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, "../../examples/tenants/mesh", dir)
	meshFile := filepath.Join(dir, "mesh.yaml")
	data, err := os.ReadFile(meshFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meshFile, []byte(strings.Replace(string(data), "  rootNamespace: portcullis-system\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "policy", "lint", dir)
	if err != nil {
		t.Fatalf("warnings failed lint: %v\n%s", err, out)
	}
	for _, want := range []string{
		"acme.yaml: document 1 (JWTProvider/acme/acme-login): metadata.namespace: warning: this provider now verifies tokens only for destinations in namespace \"acme\"",
		"acme.yaml: document 2 (AuthorizationPolicy/acme/same-namespace): spec.selector: warning: without a selector this policy now applies only to namespace \"acme\"",
		"globex.yaml: document 1 (AuthorizationPolicy/globex/orders-signed-in): spec.rules[0].from.jwt: warning: naming no providers",
		"ok: 11 documents in 4 files, 5 authorization policies, 3 warning(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lint output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, " (line ") != 3 {
		t.Errorf("warnings without lines:\n%s", out)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("apiVersion: portcullis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: acme}\nspec: {selector: {service: orders}, action: ALLOW, rules: [{to: {methods: [GET], notMethods: [GET]}}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err = runCLI(t, "policy", "lint", dir); err == nil || !strings.Contains(err.Error(), "1 problem(s), 3 warning(s) in 5 file(s)") {
		t.Errorf("a problem beside the warnings: %v\n%s", err, out)
	}
}
