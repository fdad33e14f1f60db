package layout

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/portcullis/portcullis/"

// allowed are the rows of docs/architecture.md's package table: a package (or, ending in "/",
// every package under a folder) and the project packages it may import. A package matches the
// most specific row.
var allowed = map[string][]string{
	"xds/model":                     nil,
	"xds/source":                    {"xds/model", "telemetry/watch"},
	"xds/source/kube":               {"xds/model", "xds/source", "xds/snapshot", "xds/source/kube/apis/v1alpha1", "telemetry/watch"},
	"xds/source/kube/apis/v1alpha1": {"xds/model"},
	"xds/translate":                 {"xds/model"},
	"xds/snapshot":                  {"xds/model", "xds/source", "xds/translate", "telemetry/watch"},
	"xds/server":                    {"xds/model", "xds/source", "xds/snapshot", "xds/translate", "xds/bootstrap", "identity/securefile", "telemetry/watch"},
	"xds/bootstrap":                 {"xds/model", "xds/translate"},
	"xds/inject":                    {"xds/inject/appprobe", "xds/inject/redirect", "xds/source/kube/apis/v1alpha1", "identity/ca"},
	"xds/inject/redirect":           nil,
	"xds/inject/appprobe":           nil,
	"identity/ca":                   {"identity/securefile", "telemetry/watch"},
	"identity/ca/kubestate":         {"identity/ca", "identity/attest", "identity/securefile"},
	"identity/attest":               {"identity/securefile"},
	"identity/attest/kubereview":    {"identity/attest"},
	"identity/certpb":               nil,
	"identity/certsvc":              {"identity/attest", "identity/ca", "identity/certpb"},
	"identity/agent":                {"identity/attest", "identity/ca", "identity/certpb", "identity/securefile", "telemetry/serve", "telemetry/watch"},
	"identity/internal/":            {"identity/"},
	"identity/securefile":           nil,
	"authz/jwt":                     {"xds/model"},
	"authz/apikey":                  {"xds/model"},
	"authz/policy":                  {"authz/jwt", "authz/apikey", "authz/policy/internal/", "xds/model"},
	"authz/policy/internal/":        {"authz/policy/internal/", "xds/model", "xds/source"},
	"authz/policy/lint":             {"authz/policy", "authz/policy/internal/pattern", "authz/jwt", "xds/model"},
	"authz/policy/explain":          {"authz/policy", "xds/model"},
	"authz/policy/policytest":       {"authz/policy", "authz/policy/explain", "authz/jwt", "authz/apikey", "xds/model"},
	"authz/revocation":              {"authz/jwt", "xds/model"},
	"authz/server":                  {"authz/jwt", "authz/apikey", "authz/policy", "authz/revocation", "telemetry", "xds/model"},
	"authz/ratelimit":               {"xds/model"},
	"telemetry":                     {"telemetry/serve"},
	"telemetry/traceview":           nil,
	"telemetry/watch":               nil,
	"telemetry/serve":               nil,
	"cmd/internal/":                 {"cmd/internal/", "xds/", "identity/", "authz/", "telemetry", "telemetry/", "examples", "examples/", "deploy"},
	"cmd/portcullis":                {"cmd/internal/", "xds/", "identity/", "authz/", "telemetry", "telemetry/", "examples", "examples/", "deploy"},
	"deploy":                        nil,
	"examples":                      nil,
	"examples/":                     {"telemetry/serve"},
	"test/":                         {""}, // anything
}

func row(pkg string) (string, bool) {
	best := ""
	found := false
	for k := range allowed {
		if pkg == k || (strings.HasSuffix(k, "/") && strings.HasPrefix(pkg, k)) {
			if !found || len(k) > len(best) {
				best, found = k, true
			}
		}
	}
	return best, found
}

func permitted(imp string, rules []string) bool {
	for _, r := range rules {
		if r == "" || imp == r || (strings.HasSuffix(r, "/") && strings.HasPrefix(imp, r)) {
			return true
		}
	}
	return false
}

// TestImportsFollowTheTable lists every package's non-test imports with go list and checks them
// against the table.
func TestImportsFollowTheTable(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	n := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, module)
		r, ok := row(pkg)
		if !ok {
			t.Errorf("%s has no row in docs/architecture.md's package table (and in this test's)", pkg)
			continue
		}
		n++
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			imp = strings.TrimPrefix(imp, module)
			if !permitted(imp, allowed[r]) {
				t.Errorf("%s imports %s, which its row (%s) does not allow: change the design on purpose (docs/architecture.md and this table) or the import", pkg, imp, r)
			}
		}
	}
	if n < 30 {
		t.Fatalf("only %d packages checked: go list did not list the project", n)
	}
}
