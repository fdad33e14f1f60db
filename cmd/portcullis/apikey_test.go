//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAPIKeyCommands: create and rotate print the key and nothing else on stdout (so
// `KEY=$(portcullis apikey create ...)` works); the log on stderr names the key by id only.
func TestAPIKeyCommands(t *testing.T) {
	file := filepath.Join(t.TempDir(), "apikeys.yaml")
	run := func(args ...string) (stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		root := newRootCommand("test")
		root.SetArgs(append([]string{"apikey"}, args...))
		root.SetOut(&out)
		root.SetErr(&errOut)
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	keyLine := regexp.MustCompile(`^pck_([a-z0-9-]+)_[A-Za-z0-9_-]{43}\n$`)
	common := []string{"--file", file, "--provider", "batch", "--namespace", "shop"}
	out, logged := run(append([]string{"create", "--identity", "batch-exporter", "--attr", "scopes=export", "--ttl", "2160h", "--id", "exp-1"}, common...)...)
	if !keyLine.MatchString(out) {
		t.Fatalf("create printed %q", out)
	}
	if strings.Contains(logged, strings.TrimSpace(out)) || !strings.Contains(logged, "exp-1") {
		t.Errorf("log: %s", logged)
	}
	out2, logged := run(append([]string{"rotate", "--id", "exp-1", "--new-id", "exp-2", "--overlap", "1h"}, common...)...)
	if m := keyLine.FindStringSubmatch(out2); m == nil || m[1] != "exp-2" {
		t.Fatalf("rotate printed %q", out2)
	}
	if strings.Contains(logged, strings.TrimSpace(out2)) {
		t.Errorf("log: %s", logged)
	}
	out3, _ := run(append([]string{"revoke", "--id", "exp-1"}, common...)...)
	if out3 != "" {
		t.Errorf("revoke printed %q", out3)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: APIKeyProvider", "id: exp-1", "id: exp-2", "revoked: true", "identity: batch-exporter"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("file lacks %q:\n%s", want, data)
		}
	}
}
