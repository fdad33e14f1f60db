package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/images"
	"github.com/portcullis/portcullis/test/tracetest"
)

// inputs builds the binaries once per test binary; without Envoy or the Debian packages the
// tests fail under CI=true and skip, loudly, elsewhere.
func inputs(t *testing.T) images.Inputs {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the project's binaries and images")
	}
	buildOnce.Do(func() {
		root, err := envoytest.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "portcullis-images-")
		if err != nil {
			buildErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		built, buildErr = images.FromSource(ctx, root, dir)
	})
	if buildErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: the image tests must run)", buildErr)
		}
		t.Skipf("SKIPPING, NO IMAGE INPUTS: %v", buildErr)
	}
	return built
}

var (
	buildOnce sync.Once
	built     images.Inputs
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built.Portcullis != "" {
		os.RemoveAll(filepath.Dir(built.Portcullis))
	}
	os.Exit(code)
}

// TestReproducible builds the images twice, the second time from copies of the inputs with
// other paths, times and permissions: the tarballs are the same bytes.
func TestReproducible(t *testing.T) {
	in := inputs(t)
	specs, err := images.Project(in)
	if err != nil {
		t.Fatal(err)
	}
	first, err := images.Write(specs, images.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	moved := in
	dir := t.TempDir()
	for _, f := range []*string{&moved.Portcullis, &moved.Agent, &moved.Pause, &moved.Envoy} {
		*f = copyFile(t, *f, filepath.Join(dir, filepath.Base(*f)))
	}
	specs, err = images.Project(moved)
	if err != nil {
		t.Fatal(err)
	}
	second, err := images.Write(specs, images.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		a, b := first[i], second[i]
		if a.SHA256 != b.SHA256 || a.Digest != b.Digest {
			t.Errorf("%s: built twice: tarball %s then %s, digest %s then %s", a.Name, a.SHA256, b.SHA256, a.Digest, b.Digest)
		}
		t.Logf("%-17s %s  tarball %6.1f MiB (uncompressed layers)", a.Name, a.Digest, float64(a.Bytes)/(1<<20))
	}
}

// TestReproducibleGzip: compressed layers (make images) are reproducible too; the small images
// keep it quick under the race detector.
func TestReproducibleGzip(t *testing.T) {
	in := inputs(t)
	specs, err := images.Project(in)
	if err != nil {
		t.Fatal(err)
	}
	var small []images.Image
	for _, s := range specs {
		if s.Name == "pause" {
			small = append(small, s)
		}
	}
	small = append(small, images.Image{Name: "base-and-pause", Layers: []images.Layer{specs[0].Layers[0], small[0].Layers[0]}})
	var sums [2][]string
	for i := range sums {
		results, err := images.Write(small, images.Options{Dir: t.TempDir(), Gzip: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range results {
			sums[i] = append(sums[i], r.SHA256)
		}
	}
	if strings.Join(sums[0], ",") != strings.Join(sums[1], ",") {
		t.Errorf("gzip tarballs differ between two builds: %v, %v", sums[0], sums[1])
	}
}

// TestLayout checks each image against what deploy/ and the injector expect: entrypoint, user,
// PATH, and the files (the Dockerfile's layout); every entry owned by root at the epoch.
func TestLayout(t *testing.T) {
	in := inputs(t)
	in.Jaeger, in.JaegerUI = tracetest.JaegerBinary(), tracetest.JaegerUI()
	if in.Jaeger == "" || in.JaegerUI == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Jaeger or its UI is not built (make jaeger; CI=true: the Jaeger image must be checked)")
		}
		t.Log("SKIPPING THE JAEGER IMAGE: Jaeger or its UI is not built (make jaeger)")
		in.Jaeger = ""
	}
	specs, err := images.Project(in)
	if err != nil {
		t.Fatal(err)
	}
	results, err := images.Write(specs, images.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		entrypoint, user string
		files            []string
	}{
		"portcullis": {"/usr/local/bin/portcullis", images.ControlPlaneUser, []string{
			"usr/local/bin/portcullis", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "tmp"}},
		"portcullis-proxy": {"/usr/local/bin/portcullis-agent", images.ProxyUser, []string{
			"usr/local/bin/portcullis-agent", "usr/local/bin/envoy", "lib64/ld-linux-x86-64.so.2",
			"lib/x86_64-linux-gnu/libc.so.6", "etc/passwd",
			// the init container's
			"usr/sbin/iptables-restore", "usr/sbin/ip6tables-restore",
			"usr/sbin/xtables-nft-multi", "usr/sbin/xtables-legacy-multi", "usr/lib/x86_64-linux-gnu/xtables/libxt_owner.so",
			"usr/lib/x86_64-linux-gnu/xtables/libxt_REDIRECT.so", "bin/sh", "bin/busybox", "etc/protocols"}},
		"pause": {"/pause", images.PauseUser, []string{"pause"}},
		// Debian's redis-server at upstream's path, for deploy/base/redis.yaml.
		"redis": {"/usr/local/bin/redis-server", images.RedisUser, []string{
			"usr/local/bin/redis-server", "lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "etc/passwd"}},
		// The real UI, which deploy/base/jaeger.yaml serves with no change from upstream's image.
		"jaeger": {"/cmd/jaeger-linux --set=extensions.jaeger_query.ui.assets_path=/usr/share/jaeger-ui", images.JaegerUser, []string{
			"cmd/jaeger-linux", "usr/share/jaeger-ui/index.html", "usr/share/jaeger-ui/static", "etc/passwd"}},
	}
	if in.Jaeger == "" {
		delete(want, "jaeger")
	}
	for _, r := range results {
		w, ok := want[r.Name]
		if !ok {
			t.Errorf("unexpected image %s", r.Name)
			continue
		}
		delete(want, r.Name)
		img, err := tarball.ImageFromPath(r.Path, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(cfg.Config.Entrypoint, " "); got != w.entrypoint || cfg.Config.User != w.user {
			t.Errorf("%s: entrypoint %q user %q, want %q %q", r.Name, got, cfg.Config.User, w.entrypoint, w.user)
		}
		if r.Name != "pause" && r.Name != "jaeger" && !slices.Contains(cfg.Config.Env, images.Path) {
			t.Errorf("%s: env %v: no PATH with /usr/local/bin (the injector runs its commands by name)", r.Name, cfg.Config.Env)
		}
		if cfg.OS != "linux" || cfg.Architecture != "amd64" || !cfg.Created.Time.Equal(images.Epoch) {
			t.Errorf("%s: %s/%s created %s", r.Name, cfg.OS, cfg.Architecture, cfg.Created)
		}
		files := filesOf(t, img)
		for _, f := range w.files {
			if _, ok := files[f]; !ok {
				t.Errorf("%s: no /%s", r.Name, f)
			}
		}
		for name, h := range files {
			if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(images.Epoch) {
				t.Errorf("%s: %s owned by %d:%d, time %s; want root, the epoch", r.Name, name, h.Uid, h.Gid, h.ModTime)
			}
		}
		t.Logf("%-17s %d files, %.1f MiB", r.Name, len(files), float64(r.Layers)/(1<<20))
	}
	for name := range want {
		t.Errorf("no %s image", name)
	}
}

// TestImagesRun runs each image's programs from its own files only (chroot into the unpacked
// image, as the user the manifests give it): the shared libraries, the loader and iptables'
// extensions are all there. The init image installs the pod's redirection in a fresh network
// namespace, as the injected init container does.
func TestImagesRun(t *testing.T) {
	in := inputs(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("chroot needs root (CI=true: this test must run)")
		}
		t.Skip("SKIPPING: chroot needs root")
	}
	specs, err := images.Project(in)
	if err != nil {
		t.Fatal(err)
	}
	results, err := images.Write(specs, images.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	roots := map[string]string{}
	for _, r := range results {
		roots[r.Name] = unpack(t, r.Path)
	}
	run := func(user, root string, argv ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"--net", "chroot", "--userspec=" + user, root}, argv...)
		out, err := exec.CommandContext(ctx, "unshare", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s in %s: %v\n%s", strings.Join(argv, " "), filepath.Base(root), err, out)
		}
		return string(out)
	}
	if out := run(images.ProxyUser, roots["portcullis-proxy"], images.EnvoyPath, "--version"); !strings.Contains(out, "/1.40.") {
		t.Errorf("envoy --version in the proxy image: %s", out)
	}
	if out := run(images.ProxyUser, roots["portcullis-proxy"], images.AgentPath, "version"); !strings.Contains(out, "portcullis") {
		t.Errorf("portcullis-agent version: %s", out)
	}
	if out := run(images.ControlPlaneUser, roots["portcullis"], images.PortcullisPath, "version"); !strings.Contains(out, "portcullis") {
		t.Errorf("portcullis version: %s", out)
	}
	// As the init container: portcullis-agent init-iptables, found on PATH, then the rules it made.
	out := run(images.InitUser, roots["portcullis-proxy"], "/bin/sh", "-c", "portcullis-agent init-iptables && iptables-save -t nat && iptables-legacy-save -t nat")
	for _, want := range []string{"(nf_tables)", "-A OUTPUT -p tcp -j PORTCULLIS_OUTPUT", "--uid-owner 1337", "REDIRECT --to-ports 15001", "REDIRECT --to-ports 15006"} {
		if !strings.Contains(out, want) {
			t.Errorf("init image: no %q in:\n%s", want, out)
		}
	}

	// The pause program exits 0 on SIGTERM.
	pause := exec.Command("chroot", "--userspec="+images.PauseUser, roots["pause"], images.PausePath)
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	_ = pause.Process.Signal(syscall.SIGTERM)
	if err := pause.Wait(); err != nil {
		t.Errorf("pause after SIGTERM: %v", err)
	}
}

// filesOf returns the headers of an image's flattened file system by path.
func filesOf(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

// unpack extracts an image tarball's file system into a directory, with tar, as a runtime does.
func unpack(t *testing.T, path string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // the image's users must reach their files
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.Command("tar", "-x", "-C", dir, "--same-owner", "-p")
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v %s", path, err, out)
	}
	return dir
}

// copyFile copies src to dst with other permissions and an old time.
func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(dst, old, old); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:4], []byte("\x7fELF")) {
		t.Fatalf("%s is not an executable", src)
	}
	return dst
}
