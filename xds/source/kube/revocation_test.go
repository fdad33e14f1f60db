package kube_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/source/kube"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// TestRevocationFromTheAPIServer: a CredentialRevocation created in the API server is in the
// source's mesh (which the authorization services follow) within 2 s, with the source's default
// debounce, and its status says Accepted and nothing of proxies.
func TestRevocationFromTheAPIServer(t *testing.T) {
	env := kubetest.Require(t, &api)
	ns := newNamespace(t, env, "revoke")
	cp := controlPlaneNamespace(t, env, "revoke-cp", "controlplane-0")
	src := startSource(t, env, 0)
	startStatusWriter(t, env, src, cp)
	created := time.Now()
	apply(t, env, fmt.Sprintf(`apiVersion: portcullis.dev/v1alpha1
kind: CredentialRevocation
metadata: {name: revocations, namespace: %s}
spec:
  jwts:
  - {issuer: https://idp.test, jti: leaked, expires: %q, reason: pasted in a ticket}
`, ns, time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), true)
	waitFor(t, 2*time.Second, "the revocation in the source's mesh", func() bool {
		m, _ := src.Current()
		if m == nil {
			return false
		}
		for _, r := range m.CredentialRevocations {
			if model.RefOf(r).Namespace == ns && len(r.Spec.JWTs) == 1 && r.Spec.JWTs[0].JTI == "leaked" {
				return true
			}
		}
		return false
	})
	t.Logf("in the source's mesh %s after the create call", time.Since(created).Round(time.Millisecond))

	ref := objectRef{model.KindCredentialRevocation, ns, "revocations"}
	waitCondition(t, env, ref, v1alpha1.ConditionAccepted, metav1.ConditionTrue, kube.ReasonAccepted, "valid")
	u, err := crs(env, ref.kind, ns).Get(context.Background(), ref.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cur struct {
		Status v1alpha1.Status `json:"status"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cur); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionProgrammed); c != nil {
		t.Errorf("a revocation has a Programmed condition: %+v", c)
	}
}
