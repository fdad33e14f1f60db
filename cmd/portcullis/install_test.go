//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/kubetest"
)

var kubeAPI kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &kubeAPI)) }

// TestEmbeddedManifestsMatchDeploy: what portcullis install prints is deploy/ as it is.
func TestEmbeddedManifestsMatchDeploy(t *testing.T) {
	root, err := envoytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string][]byte{}
	if err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		onDisk[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	embedded := 0
	if err := fs.WalkDir(manifests, "deploy", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		embedded++
		got, _ := fs.ReadFile(manifests, p)
		if want, ok := onDisk[p]; !ok || !bytes.Equal(got, want) {
			t.Errorf("%s: embedded copy differs from the repository: run `make generate`", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if embedded != len(onDisk) {
		t.Errorf("%d files embedded, %d in deploy/: run `make generate`", embedded, len(onDisk))
	}
}

// TestManifestsServerDryRun: every manifest of the base and the demo overlay passes a
// server-side dry-run apply against the real API server (schemas, CRs against the CRDs,
// RBAC, webhook configuration, Pod Security of the restricted namespace).
func TestManifestsServerDryRun(t *testing.T) {
	env := kubetest.Require(t, &kubeAPI)
	ctx := context.Background()
	// Dry-run objects are not stored: the namespaces the others live in must exist.
	for _, ns := range []string{"portcullis-system", "demo"} {
		_, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"deploy/base", "deploy/overlays/demo"} {
		t.Run(dir, func(t *testing.T) {
			out, err := Render(manifests, dir)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Objects(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) < 15 {
				t.Fatalf("only %d objects", len(objs))
			}
			var log strings.Builder
			if err := Apply(ctx, env.Config, objs, true, &log); err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			if n := strings.Count(log.String(), "(server dry run)"); n != len(objs) {
				t.Fatalf("%d of %d objects applied", n, len(objs))
			}
		})
	}
}
