package demorun

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/test/envoytest"
)

// make help prints every target with its description, variables expanded.
func TestMakeHelp(t *testing.T) {
	root, err := envoytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "--no-print-directory", "-C", root, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	for _, want := range []string{"demo ", "test ", "jaeger ", "Envoy 1.", "Jaeger v1."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make help lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "$(") {
		t.Errorf("make help prints unexpanded variables:\n%s", out)
	}
}
