package deploy_test

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/portcullis/portcullis/deploy"
	"github.com/portcullis/portcullis/test/kubetest"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

// TestManifestsServerDryRun: every manifest of the base and the demo overlay passes a
// server-side dry-run apply against the real API server (schemas, CRs against the CRDs,
// RBAC, webhook configuration, Pod Security of the restricted namespace).
func TestManifestsServerDryRun(t *testing.T) {
	env := kubetest.Require(t, &api)
	ctx := context.Background()
	// Dry-run objects are not stored: the namespaces the others live in must exist.
	for _, ns := range []string{"portcullis-system", "demo"} {
		env.Namespace(t, ns, nil)
	}
	for _, dir := range []string{"base", "overlays/demo"} {
		t.Run(dir, func(t *testing.T) {
			out, err := deploy.Render(deploy.Manifests, dir)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := deploy.Objects(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) < 15 {
				t.Fatalf("only %d objects", len(objs))
			}
			var log strings.Builder
			if err := deploy.Apply(ctx, env.Config, objs, true, &log); err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if n := strings.Count(log.String(), "(server dry run)"); n != len(objs) {
				t.Fatalf("%d of %d objects applied", n, len(objs))
			}
		})
	}
}

// TestControlPlaneRBAC: with the base's RBAC applied, the API server lets the control plane's
// service account do what it needs and no more (asked through SubjectAccessReviews).
func TestControlPlaneRBAC(t *testing.T) {
	env := kubetest.Require(t, &api)
	ctx := context.Background()
	env.Namespace(t, "portcullis-system", nil)
	out, err := deploy.Render(deploy.Manifests, "base")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := deploy.Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	var rbac []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" || strings.HasPrefix(o.GetAPIVersion(), "rbac.authorization.k8s.io/") {
			rbac = append(rbac, o)
		}
	}
	if err := deploy.Apply(ctx, env.Config, rbac, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		verb, resource, namespace, name string
		allowed                         bool
	}{
		// Each replica's report of its proxies, and the leader reading them all.
		{"create", "configmaps", "portcullis-system", "", true},
		{"get", "configmaps", "portcullis-system", "portcullis-programmed-controlplane-0", true},
		{"update", "configmaps", "portcullis-system", "portcullis-programmed-controlplane-0", true},
		{"delete", "configmaps", "portcullis-system", "portcullis-programmed-controlplane-0", true},
		{"list", "configmaps", "portcullis-system", "", true},
		{"get", "configmaps", "default", "anything", false},
		{"watch", "configmaps", "portcullis-system", "", false},
		// The Lease and the CA Secret, by name only.
		{"update", "leases", "portcullis-system", "portcullis-controlplane", true},
		{"update", "leases", "portcullis-system", "another", false},
		{"get", "secrets", "portcullis-system", "another", false},
		// The CA Secret every replica watches and updates (identity/ca/kubestate), and no other:
		// a list of every Secret would hand out every key in the namespace.
		{"watch", "secrets", "portcullis-system", "portcullis-ca", true},
		{"update", "secrets", "portcullis-system", "portcullis-ca", true},
		{"update", "secrets", "portcullis-system", "another", false},
		{"delete", "secrets", "portcullis-system", "portcullis-ca", false},
		{"list", "secrets", "portcullis-system", "", false},
		// The Redis password: read, never changed.
		{"get", "secrets", "portcullis-system", "portcullis-redis", true},
		{"update", "secrets", "portcullis-system", "portcullis-redis", false},
		// Used join tokens, one ConfigMap each.
		{"get", "configmaps", "portcullis-system", "portcullis-used-token-0123456789abcdef0123456789abcdef", true},
	} {
		group := ""
		if tc.resource == "leases" {
			group = "coordination.k8s.io"
		}
		var review *authorizationv1.SubjectAccessReview
		// The API server's RBAC authorizer learns new roles from its informers: the first
		// reviews may precede that, so each allowed case gets a few seconds to turn true (the
		// refused ones come after, once the roles are known).
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var err error
			review, err = env.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:portcullis-system:controlplane",
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:portcullis-system", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: tc.verb, Group: group, Resource: tc.resource, Namespace: tc.namespace, Name: tc.name,
				},
			}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if review.Status.Allowed || !tc.allowed || time.Now().After(deadline) {
				break
			}
		}
		if review.Status.Allowed != tc.allowed {
			t.Errorf("%s %s %s/%s: allowed %v, want %v (%s)", tc.verb, tc.resource, tc.namespace, tc.name, review.Status.Allowed, tc.allowed, review.Status.Reason)
		}
	}
}
