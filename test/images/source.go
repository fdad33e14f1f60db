package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/portcullis/portcullis/test/envoytest"
)

// GoBuild builds package pkg of the repository at root into out as `make build` does: static
// (CGO_ENABLED=0) and with -trimpath, so the binary does not depend on where the clone is.
func GoBuild(ctx context.Context, root, out, pkg string, tags ...string) error {
	args := []string{"build", "-trimpath", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags")
		args = append(args, tags...)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("images: go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// DebianRoot is the tool cache's dpkg -x root of DebianPackages (`make image-debs`).
func DebianRoot(root string) (RootFS, error) {
	dir := filepath.Join(root, ".cache", "debroot")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return "", fmt.Errorf("images: no Debian packages in %s: run `make image-debs`", dir)
	}
	return RootFS(dir), nil
}

// FromSource builds the binaries of the repository at root into dir and returns the inputs of
// Project, with Envoy from the tool cache (envoytest.Find) and DebianRoot.
func FromSource(ctx context.Context, root, dir string) (Inputs, error) {
	envoy, err := envoytest.Find()
	if err != nil {
		return Inputs{}, err
	}
	debian, err := DebianRoot(root)
	if err != nil {
		return Inputs{}, err
	}
	in := Inputs{
		Portcullis: filepath.Join(dir, "portcullis"),
		Agent:      filepath.Join(dir, "portcullis-agent"),
		Pause:      filepath.Join(dir, "pause"),
		Envoy:      envoy,
		Debian:     debian,
	}
	for _, b := range []struct {
		out, pkg string
		tags     []string
	}{
		{in.Portcullis, "./cmd/portcullis", nil},
		{in.Agent, "./cmd/portcullis", []string{"agentonly"}},
		{in.Pause, "./test/images/pause", nil},
	} {
		if err := GoBuild(ctx, root, b.out, b.pkg, b.tags...); err != nil {
			return Inputs{}, err
		}
	}
	return in, nil
}
