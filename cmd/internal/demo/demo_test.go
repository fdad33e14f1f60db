package demo

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/portcullis/portcullis/authz/jwt"
	"github.com/portcullis/portcullis/authz/policy"
	"github.com/portcullis/portcullis/xds/source"
)

// The documents --write-mesh writes load as they are, with the checks the control plane runs,
// and the JWTProvider's key set holds the demo issuer's key.
func TestWriteMesh(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mesh")
	if err := WriteMesh(dir); err != nil {
		t.Fatal(err)
	}
	d, err := source.NewDir(dir, source.DirOptions{Checks: []source.Checker{policy.NewCompiler(policy.Options{}).Check, jwt.Check}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Load(); err != nil {
		t.Fatalf("the written mesh does not load: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []struct{ Kty, Alg, Kid string }
	}
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) != 1 || set.Keys[0].Kty != "EC" || set.Keys[0].Kid == "" {
		t.Errorf("jwks.json = %s (%v), want the issuer's one EC key", b, err)
	}
}

// The printed commands name the binary as it can be run from where the demo was started.
func TestCLICommand(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got := cliCommand(filepath.Join(wd, "bin", "portcullis-does-not-exist"), "127.0.0.1:15014"); got != "./bin/portcullis-does-not-exist" {
		t.Errorf("a binary below the working directory: %q", got)
	}
	if got := cliCommand("/opt/pc/portcullis-does-not-exist", "127.0.0.1:25014"); got != "/opt/pc/portcullis-does-not-exist --admin-addr 127.0.0.1:25014" {
		t.Errorf("a binary elsewhere, another admin address: %q", got)
	}
}
