package v1alpha1_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

// TestCRDsUpToDate regenerates the CRDs from the Go types and compares them with
// deploy/base/crds: a change to a document type without `make generate` fails here.
func TestCRDsUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen")
	}
	root, err := envoytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("go", "tool", "controller-gen", "crd:crdVersions=v1,allowDangerousTypes=true",
		"paths=./xds/source/kube/apis/...", "output:crd:artifacts:config="+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	generated, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
	committed, _ := filepath.Glob(filepath.Join(root, "deploy/base/crds/*.yaml"))
	if len(generated) != len(model.Kinds) || len(committed) != len(generated) {
		t.Fatalf("generated %d CRDs, %d committed, %d kinds: run `make generate`", len(generated), len(committed), len(model.Kinds))
	}
	for _, g := range generated {
		want, _ := os.ReadFile(g)
		got, err := os.ReadFile(filepath.Join(root, "deploy/base/crds", filepath.Base(g)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("deploy/base/crds/%s is stale: run `make generate`", filepath.Base(g))
		}
	}
}

func gvr(kind string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: v1alpha1.Group, Version: v1alpha1.Version, Resource: v1alpha1.Resource(kind)}
}

// decodeAll reads the YAML documents of a file as unstructured objects.
func decodeAll(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

func ensureNamespace(t *testing.T, env *kubetest.Env, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	_, err := env.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestDemoDocumentsApply: every document of the demo mesh is a valid custom resource as it is.
func TestDemoDocumentsApply(t *testing.T) {
	env := kubetest.Require(t, &api)
	ensureNamespace(t, env, "demo")
	files, _ := filepath.Glob(filepath.Join(env.Root, "examples/demo/mesh/*.yaml"))
	n := 0
	for _, file := range files {
		for _, u := range decodeAll(t, file) {
			r := env.Dynamic.Resource(gvr(u.GetKind()))
			var err error
			if u.GetKind() == model.KindMesh {
				_, err = r.Create(context.Background(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			} else {
				_, err = r.Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			}
			if err != nil {
				t.Errorf("%s: %s/%s: %v", filepath.Base(file), u.GetKind(), u.GetName(), err)
			}
			n++
		}
	}
	if n < len(model.Kinds) {
		t.Errorf("only %d demo documents", n)
	}
}

// TestInvalidRejected: the API server refuses what the file loader refuses, with the schema's
// message.
func TestInvalidRejected(t *testing.T) {
	env := kubetest.Require(t, &api)
	ensureNamespace(t, env, "crdtest")
	cases := []struct {
		name, doc, want string
	}{
		{"mtls enum", `
kind: Mesh
metadata: {name: bad-mode}
spec: {trustDomain: example.org, mtls: {mode: LOOSE}}`, `spec.mtls.mode: Unsupported value: "LOOSE"`},
		{"trust domain required", `
kind: Mesh
metadata: {name: no-td}
spec: {defaultDecision: DENY}`, `spec.trustDomain: Required value`},
		{"tracing collector", `
kind: Mesh
metadata: {name: tracing}
spec: {trustDomain: example.org, tracing: {enabled: true}}`, `collector is required when tracing is enabled`},
		{"service port range", `
kind: Service
metadata: {name: p, namespace: crdtest}
spec: {ports: [{name: http, port: 70000}]}`, `spec.ports[0].port: Invalid value: 70000`},
		{"service no ports", `
kind: Service
metadata: {name: p, namespace: crdtest}
spec: {ports: []}`, `spec.ports: Invalid value`},
		{"service account pattern", `
kind: Service
metadata: {name: p, namespace: crdtest}
spec: {serviceAccounts: [Bad_SA], ports: [{name: http, port: 80}]}`, `spec.serviceAccounts[0]: Invalid value: "Bad_SA"`},
		{"protocol enum", `
kind: Service
metadata: {name: p, namespace: crdtest}
spec: {ports: [{name: http, port: 80, protocol: UDP}]}`, `Unsupported value: "UDP"`},
		{"policy action", `
kind: AuthorizationPolicy
metadata: {name: a, namespace: crdtest}
spec: {action: MAYBE, rules: [{}]}`, `spec.action: Unsupported value: "MAYBE"`},
		{"policy without rules", `
kind: AuthorizationPolicy
metadata: {name: a, namespace: crdtest}
spec: {action: ALLOW}`, `a policy needs rules or a rego module`},
		{"condition with two kinds", `
kind: AuthorizationPolicy
metadata: {name: a, namespace: crdtest}
spec: {action: ALLOW, rules: [{when: [{header: x-a, equals: "1", sourceIPs: [10.0.0.0/8]}]}]}`, `a condition needs exactly one of attribute, header`},
		{"claim without operator", `
kind: AuthorizationPolicy
metadata: {name: a, namespace: crdtest}
spec: {action: ALLOW, rules: [{from: {jwt: {claims: [{claim: sub}]}}}]}`, `needs exactly one of equals, in, contains or matches`},
		{"path pattern", `
kind: AuthorizationPolicy
metadata: {name: a, namespace: crdtest}
spec: {action: ALLOW, rules: [{to: {paths: [api]}}]}`, `spec.rules[0].to.paths[0]: Invalid value: "api"`},
		{"time window", `
kind: AuthorizationPolicy
metadata: {name: a, namespace: crdtest}
spec: {action: ALLOW, rules: [{when: [{time: {start: "08:00", end: "08:00"}}]}]}`, `end must differ from start`},
		{"jwks exactly one", `
kind: JWTProvider
metadata: {name: j, namespace: crdtest}
spec: {issuer: https://idp, jwks: {file: a.json, uri: "https://idp/jwks"}}`, `exactly one of file, inline, uri or oidcDiscovery is required`},
		{"jwt algorithm", `
kind: JWTProvider
metadata: {name: j, namespace: crdtest}
spec: {issuer: https://idp, algorithms: [HS256], jwks: {uri: "https://idp/jwks"}}`, `Unsupported value: "HS256"`},
		{"bucket", `
kind: RateLimitPolicy
metadata: {name: r, namespace: crdtest}
spec: {selector: {service: s}, limits: [{name: l, bucket: {maxTokens: 2, tokensPerFill: 5, fillInterval: 1s}}]}`, `tokensPerFill must not exceed maxTokens`},
		{"duration", `
kind: RateLimitPolicy
metadata: {name: r, namespace: crdtest}
spec: {selector: {service: s}, limits: [{name: l, bucket: {maxTokens: 2, fillInterval: soon}}]}`, `spec.limits[0].bucket.fillInterval: Invalid value: "soon"`},
		{"rate limit key", `
kind: RateLimitPolicy
metadata: {name: r, namespace: crdtest}
spec: {selector: {service: s}, limits: [{name: l, bucket: {maxTokens: 2, fillInterval: 1s}, by: {}}]}`, `needs exactly one of header, sourcePrincipal, jwtClaim, apiKey or clientIP`},
		{"rate limit keys", `
kind: RateLimitPolicy
metadata: {name: r, namespace: crdtest}
spec: {selector: {service: s}, limits: [{name: l, bucket: {maxTokens: 2, fillInterval: 1s}, by: {jwtClaim: sub, clientIP: true}}]}`, `needs exactly one of header, sourcePrincipal, jwtClaim, apiKey or clientIP`},
		{"rate limit scope", `
kind: RateLimitPolicy
metadata: {name: r, namespace: crdtest}
spec: {selector: {service: s}, limits: [{name: l, scope: global, bucket: {maxTokens: 2, fillInterval: 1s}}]}`, `Unsupported value: "global"`},
		{"cors wildcard with credentials", `
kind: Service
metadata: {name: s, namespace: crdtest}
spec: {ports: [{name: http, port: 80}], cors: {allowOrigins: ["https://*.example.com"], allowCredentials: true}}`, `a wildcard origin is not allowed with allowCredentials`},
		{"revocation time", `
kind: CredentialRevocation
metadata: {name: r, namespace: crdtest}
spec: {jwts: [{issuer: https://idp, jti: a, expires: tomorrow}]}`, `spec.jwts[0].expires: Invalid value: "tomorrow"`},
		{"revocation reason length", `
kind: CredentialRevocation
metadata: {name: r, namespace: crdtest}
spec: {jwts: [{issuer: https://idp, jti: a, expires: "2026-12-05T14:00:00Z", reason: "` + strings.Repeat("x", 257) + `"}]}`, `spec.jwts[0].reason: Too long`},
		{"workload mode", `
kind: Workload
metadata: {name: w, namespace: crdtest}
spec: {service: s, mode: Magic, inboundPort: 1, appPort: 2}`, `Unsupported value: "Magic"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte("apiVersion: portcullis.dev/v1alpha1\n"+strings.TrimSpace(c.doc)), &u.Object); err != nil {
				t.Fatal(err)
			}
			r := env.Dynamic.Resource(gvr(u.GetKind()))
			var err error
			if ns := u.GetNamespace(); ns != "" {
				_, err = r.Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{})
			} else {
				_, err = r.Create(context.Background(), u, metav1.CreateOptions{})
			}
			if err == nil {
				t.Fatalf("accepted; want %q", c.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant an Invalid error containing %q", err, c.want)
			}
		})
	}
}
