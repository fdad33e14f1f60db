package images

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/tracetest"
)

// ForTest builds the project's images from this source for a test and returns those named (all
// of them when none is). Without their inputs (Envoy, the Debian files) the test fails under
// CI=true and is skipped, loudly, elsewhere. jaeger, when not empty, adds the Jaeger image,
// with the UI make jaeger builds beside it.
func ForTest(t testing.TB, jaeger string, names ...string) []Image {
	t.Helper()
	root, err := envoytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	in, err := FromSource(ctx, root, t.TempDir())
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: the image and cluster tests must run)", err)
		}
		t.Skipf("SKIPPING, NO IMAGES: %v", err)
	}
	if in.Jaeger = jaeger; jaeger != "" {
		if in.JaegerUI = tracetest.JaegerUI(); in.JaegerUI == "" {
			if os.Getenv("CI") == "true" {
				t.Fatal("the Jaeger UI is not built (make jaeger; CI=true: the image and cluster tests must run)")
			}
			t.Skip("SKIPPING, NO JAEGER UI: make jaeger")
		}
	}
	specs, err := Project(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		return specs
	}
	specs = slices.DeleteFunc(specs, func(i Image) bool { return !slices.Contains(names, i.Name) })
	if len(specs) != len(names) {
		t.Fatalf("images %v: Project made only %d of them", names, len(specs))
	}
	return specs
}
