package deploy_test

import (
	"context"
	"os"
	"strings"
	"testing"

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
