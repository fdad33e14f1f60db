package alerts

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/test/envoytest"
)

// findPromtool returns promtool: $PROMTOOL, <repo>/.cache/bin/promtool (make promtool), or
// promtool on PATH.
func findPromtool(root string) (string, error) {
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p, nil
	}
	if p := filepath.Join(root, ".cache/bin/promtool"); isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p, nil
	}
	return "", errors.New("promtool not found: run make promtool (or set PROMTOOL)")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := envoytest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestRules: promtool finds the rules valid and their unit tests pass.
func TestRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs promtool (not a -short test: make test's short pass runs before it is built)")
	}
	root := repoRoot(t)
	promtool, err := findPromtool(root)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: the alerting rules must be tested)", err)
		}
		t.Skipf("SKIPPING, NO PROMTOOL: %v", err)
	}
	dir := filepath.Join(root, "deploy/prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// metricName is a Portcullis metric as Prometheus sees it.
var metricName = regexp.MustCompile(`\bportcullis_[a-z_]+\b`)

// TestRulesReadRegisteredMetrics: every portcullis_* metric a rule reads is registered by the code
// (counters under their name without _total, which the exporter adds) and documented in
// docs/observability.md.
func TestRulesReadRegisteredMetrics(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "deploy/prometheus/alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	registered := registeredNames(t, root)
	docs, err := os.ReadFile(filepath.Join(root, "docs/observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			rules++
			names := metricName.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s reads no portcullis metric", r.Alert)
			}
			for _, n := range names {
				if !registered[n] && !registered[strings.TrimSuffix(n, "_total")] {
					t.Errorf("%s reads %s, which no code registers", r.Alert, n)
				}
				if !strings.Contains(string(docs), "`"+n+"`") {
					t.Errorf("%s reads %s, which docs/observability.md does not list", r.Alert, n)
				}
			}
		}
	}
	if rules < 10 {
		t.Errorf("only %d rules", rules)
	}
}

// registeredNames returns the string literals naming portcullis_* instruments in the code (not
// tests, not test harnesses).
func registeredNames(t *testing.T, root string) map[string]bool {
	t.Helper()
	literal := regexp.MustCompile(`"(portcullis_[a-z_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if slices.Contains([]string{".cache", ".git", "test", "bin"}, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range literal.FindAllStringSubmatch(string(src), -1) {
			out[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
