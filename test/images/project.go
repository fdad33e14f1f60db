package images

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Repository is where the project's images are named (deploy/ refers to them there).
const Repository = "ghcr.io/portcullis/"

// Users the images run as, as the manifests in deploy/ and the injector set them.
const (
	ControlPlaneUser = "65532:65532" // deploy/base/controlplane.yaml runAsUser
	ProxyUser        = "1337:1337"   // redirect.ProxyUID
	InitUser         = "0:0"         // the init container (the proxy image) alone runs as root (NET_ADMIN, NET_RAW)
	PauseUser        = "65535:65535" // as Kubernetes' own pause image
)

// Paths inside the images: the Dockerfile's layout, which the injector's commands rely on
// (`portcullis init-iptables` and `portcullis-agent` found on PATH, Envoy at --envoy-path's
// default /usr/local/bin/envoy).
const (
	PortcullisPath = "/usr/local/bin/portcullis"
	AgentPath      = "/usr/local/bin/portcullis-agent"
	EnvoyPath      = "/usr/local/bin/envoy"
	PausePath      = "/pause"
)

// Path is the PATH of every image but pause (a container engine's default).
const Path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Inputs are the files the project's images are made of.
type Inputs struct {
	// Portcullis is the full binary (make build's bin/portcullis), Agent the sidecar build
	// (-tags agentonly), Pause the sandbox program (test/images/pause); all static.
	Portcullis, Agent, Pause string
	// Envoy is the Envoy 1.40 binary (the tool cache's); its shared libraries come from Debian.
	Envoy string
	// Debian is the dpkg -x root of the packages listed in DebianPackages.
	Debian RootFS
	// Jaeger, when set, is the Jaeger binary `make jaeger` builds from source: it becomes the
	// image deploy/base/jaeger.yaml names (JaegerRef), for clusters without a registry.
	// JaegerUI is the directory of the Jaeger UI's build (make jaeger), which it serves.
	Jaeger, JaegerUI string
}

// JaegerRef is the Jaeger image deploy/base/jaeger.yaml runs: release 2.13.0, the Go module
// version v1.76.0 that `make jaeger` builds (Jaeger tags each release twice: 1.x for the module,
// 2.x for the binary).
const JaegerRef = "docker.io/jaegertracing/jaeger:2.13.0"

// JaegerUser is the user deploy/base/jaeger.yaml runs Jaeger as.
const JaegerUser = "10001:10001"

// jaegerPath is where the upstream image has the binary.
const jaegerPath = "/cmd/jaeger-linux"

// JaegerUIPath is where the Jaeger image has the UI's files.
const JaegerUIPath = "/usr/share/jaeger-ui"

// jaegerImage is Jaeger v2 from its binary (with the C library it is linked against, from
// Debian) and the UI's build: with no arguments it stores traces in memory, receives OTLP on
// 4317/4318 and serves its query API and UI on 16686, on every interface, as upstream's image.
// Upstream's binary embeds the UI; one built from the Go module has a placeholder page instead,
// so the entrypoint points Jaeger at the files (--set merges into whatever configuration runs,
// the default all-in-one one or a --config the manifest gives) and deploy/ needs no change.
func jaegerImage(root RootFS, bin, ui string) (Image, error) {
	jaeger, err := binaryLayer(root, "jaeger", bin, jaegerPath)
	if err != nil {
		return Image{}, err
	}
	assets, err := treeLayer("jaeger-ui", ui, JaegerUIPath)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Name: "jaeger", Ref: JaegerRef,
		Layers:     []Layer{baseLayer(), jaeger, assets},
		Entrypoint: []string{jaegerPath, "--set=extensions.jaeger_query.ui.assets_path=" + JaegerUIPath},
		User:       JaegerUser,
	}, nil
}

// treeLayer is the regular files under dir, at the same relative paths under path.
func treeLayer(name, dir, path string) (Layer, error) {
	l := Layer{Name: name}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			l.Entries = append(l.Entries, Entry{Path: filepath.Join(path, rel), Dir: true})
		case d.Type().IsRegular():
			l.Entries = append(l.Entries, Entry{Path: filepath.Join(path, rel), Src: p, Mode: 0o644})
		}
		return nil
	})
	if err != nil {
		return Layer{}, fmt.Errorf("images: %s: %w", name, err)
	}
	if !slices.ContainsFunc(l.Entries, func(e Entry) bool { return e.Path == filepath.Join(path, "index.html") }) {
		return Layer{}, fmt.Errorf("images: %s: no index.html in %s (make jaeger builds the UI)", name, dir)
	}
	return l, nil
}

// RedisRef is the Redis image deploy/base/redis.yaml runs: upstream's 7.0.15, the release
// Debian 12 packages, which the image built here holds.
const RedisRef = "docker.io/library/redis:7.0.15"

// RedisUser is the user deploy/base/redis.yaml runs Redis as (upstream image's redis user).
const RedisUser = "999:999"

// redisPath is where upstream's image has redis-server (on its PATH, which deploy/ relies on).
const redisPath = "/usr/local/bin/redis-server"

// redisImage is Debian's redis-server (the package installs it as a link to redis-check-rdb,
// which acts by the name it runs under) with its libraries, at upstream's path.
func redisImage(root RootFS) (Image, error) {
	redis, err := binaryLayer(root, "redis", filepath.Join(string(root), "/usr/bin/redis-check-rdb"), redisPath)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Name: "redis", Ref: RedisRef,
		Layers:     []Layer{baseLayer(), redis},
		Entrypoint: []string{redisPath},
		User:       RedisUser,
		Env:        []string{Path},
	}, nil
}

// DebianPackages are what Inputs.Debian must hold (test/kube/fetch-debs.sh fetches them): the C
// library and loader for Envoy and iptables, iptables with its libraries and extensions,
// busybox for a shell in the init image, netbase's /etc/protocols, the CA bundle, and Redis
// (redis-tools has the binary) with its libraries.
var DebianPackages = []string{
	"libc6", "iptables", "libip4tc2", "libip6tc2", "libxtables12", "libnftnl11", "libmnl0",
	"libnetfilter-conntrack3", "libnfnetlink0", "netbase", "busybox-static", "ca-certificates",
	"redis-tools", "libatomic1", "liblzf1", "libjemalloc2", "libsystemd0", "libssl3", "libstdc++6",
	"libgcc-s1", "libcap2", "libgcrypt20", "liblzma5", "libzstd1", "liblz4-1", "libgpg-error0",
}

// Image is one image to build: its layers, bottom first, and its configuration.
type Image struct {
	// Name is the short name ("portcullis-proxy"), also the tarball's file name; the image is
	// tagged Repository+Name, unless Ref names it whole.
	Name       string
	Ref        string
	Layers     []Layer
	Entrypoint []string
	User       string
	Env        []string
}

// PauseImage is the pod sandbox image alone, which the cluster harness needs before anything.
func PauseImage(pause string) Image {
	return Image{
		Name:       "pause",
		Layers:     []Layer{{Name: "pause", Entries: []Entry{{Path: PausePath, Src: pause, Mode: 0o755}}}},
		Entrypoint: []string{PausePath},
		User:       PauseUser,
	}
}

// Project returns the project's images:
//   - portcullis: the control plane, and the demo applications (`portcullis demo-app`, as
//     deploy/overlays/demo runs them), as 65532;
//   - portcullis-proxy: the sidecar, portcullis-agent supervising Envoy, as 1337; and the init
//     container (`portcullis-agent init-iptables`, run as root by the injector) with Debian's
//     iptables (both back ends; nft by default, as Debian's alternatives choose). One image for
//     both, as Istio's proxyv2: a pod pulls one image, and the sidecar build's 10 MiB of Go stand
//     in for the full binary's 60;
//   - pause: the sandbox;
//   - redis: Debian's Redis as upstream's redis:7.0.15 (deploy/base/redis.yaml);
//   - jaeger, when Inputs.Jaeger is set.
//
// Layers are shared where the content is: base files everywhere.
func Project(in Inputs) ([]Image, error) {
	base := baseLayer()
	certs, err := caLayer(in.Debian)
	if err != nil {
		return nil, err
	}
	envoy, err := binaryLayer(in.Debian, "envoy", in.Envoy, EnvoyPath)
	if err != nil {
		return nil, err
	}
	iptables, err := iptablesLayer(in.Debian)
	if err != nil {
		return nil, err
	}
	portcullis := Layer{Name: "portcullis", Entries: []Entry{{Path: PortcullisPath, Src: in.Portcullis, Mode: 0o755}}}
	agent := Layer{Name: "portcullis-agent", Entries: []Entry{{Path: AgentPath, Src: in.Agent, Mode: 0o755}}}
	env := []string{Path}
	imgs := []Image{
		{Name: "portcullis", Layers: []Layer{base, certs, portcullis}, Entrypoint: []string{PortcullisPath}, User: ControlPlaneUser, Env: env},
		{Name: "portcullis-proxy", Layers: []Layer{base, envoy, iptables, agent}, Entrypoint: []string{AgentPath}, User: ProxyUser, Env: env},
		PauseImage(in.Pause),
	}
	redis, err := redisImage(in.Debian)
	if err != nil {
		return nil, err
	}
	imgs = append(imgs, redis)
	if in.Jaeger != "" {
		jaeger, err := jaegerImage(in.Debian, in.Jaeger, in.JaegerUI)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, jaeger)
	}
	return imgs, nil
}

// baseLayer has what every non-pause image has: the users the images run as, and /tmp.
func baseLayer() Layer {
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		"portcullis-proxy:x:1337:1337:portcullis proxy:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	group := "root:x:0:\nportcullis-proxy:x:1337:\nnonroot:x:65532:\nnogroup:x:65534:\n"
	return Layer{Name: "base", Entries: []Entry{
		{Path: "/etc/passwd", Data: []byte(passwd)},
		{Path: "/etc/group", Data: []byte(group)},
		{Path: "/tmp", Dir: true, Mode: 0o777 | os.ModeSticky},
	}}
}

// caLayer is Debian's CA bundle, as update-ca-certificates assembles it (the certificates in
// name order), for the control plane's HTTPS clients (a JWKS URI, a collector with TLS).
func caLayer(root RootFS) (Layer, error) {
	certs, err := root.Glob("/usr/share/ca-certificates/mozilla", "*.crt")
	if err != nil {
		return Layer{}, err
	}
	if len(certs) == 0 {
		return Layer{}, fmt.Errorf("images: no certificates in %s/usr/share/ca-certificates/mozilla (package ca-certificates)", root)
	}
	sort.Strings(certs)
	var bundle bytes.Buffer
	for _, c := range certs {
		b, err := os.ReadFile(filepath.Join(string(root), c))
		if err != nil {
			return Layer{}, fmt.Errorf("images: %w", err)
		}
		bundle.Write(bytes.TrimRight(b, "\n"))
		bundle.WriteByte('\n')
	}
	return Layer{Name: "ca-certificates", Entries: []Entry{
		{Path: "/etc/ssl/certs/ca-certificates.crt", Data: bundle.Bytes()},
	}}, nil
}

// binaryLayer is a dynamically linked program at path and the libraries it needs, from Debian.
func binaryLayer(root RootFS, name, src, path string) (Layer, error) {
	resolved, err := filepath.EvalSymlinks(src)
	if err != nil {
		return Layer{}, fmt.Errorf("images: %s: %w", name, err)
	}
	libs, err := root.SharedLibraries(resolved)
	if err != nil {
		return Layer{}, err
	}
	entries, err := root.Files(libs...)
	if err != nil {
		return Layer{}, err
	}
	return Layer{Name: name, Entries: append(entries, Entry{Path: path, Src: resolved, Mode: 0o755})}, nil
}

// iptablesTools are the names `iptables-restore` and friends have on a Debian system whose
// alternatives point at the nft back end (the default); the -legacy and -nft names are the
// package's own links.
var iptablesTools = []string{"iptables", "iptables-restore", "iptables-save", "ip6tables", "ip6tables-restore", "ip6tables-save"}

// iptablesLayer is Debian's iptables with both back ends, its libraries and extensions, the
// loader, /etc/protocols, and busybox as /bin/sh.
func iptablesLayer(root RootFS) (Layer, error) {
	var paths []string
	for _, multi := range []string{"xtables-nft-multi", "xtables-legacy-multi"} {
		paths = append(paths, "/usr/sbin/"+multi)
	}
	for _, t := range iptablesTools {
		for _, backend := range []string{"nft", "legacy"} {
			paths = append(paths, "/usr/sbin/"+backendName(t, backend))
		}
	}
	extensions, err := root.Glob("/usr/lib/x86_64-linux-gnu/xtables", "*.so")
	if err != nil {
		return Layer{}, err
	}
	if len(extensions) == 0 {
		return Layer{}, fmt.Errorf("images: no xtables extensions in %s (package iptables)", root)
	}
	paths = append(paths, extensions...)
	paths = append(paths, "/etc/protocols", "/bin/busybox")
	entries, err := root.Files(paths...)
	if err != nil {
		return Layer{}, err
	}
	var elfs []string
	for _, e := range entries {
		if e.Src != "" && e.Path != "/etc/protocols" {
			elfs = append(elfs, e.Src)
		}
	}
	libs, err := root.SharedLibraries(elfs...)
	if err != nil {
		return Layer{}, err
	}
	libEntries, err := root.Files(libs...)
	if err != nil {
		return Layer{}, err
	}
	entries = append(entries, libEntries...)
	for _, t := range iptablesTools {
		entries = append(entries, Entry{Path: "/usr/sbin/" + t, Link: backendName(t, "nft")})
	}
	entries = append(entries, Entry{Path: "/bin/sh", Link: "busybox"},
		Entry{Path: "/run", Dir: true}) // iptables-legacy's lock file
	return Layer{Name: "iptables", Entries: dedupe(entries)}, nil
}

// backendName is Debian's name of tool t for a back end: iptables-restore → iptables-nft-restore.
func backendName(t, backend string) string {
	for _, family := range []string{"ip6tables", "iptables"} {
		if rest, ok := strings.CutPrefix(t, family); ok {
			return family + "-" + backend + rest
		}
	}
	return t
}

// dedupe drops entries whose path an earlier entry has (libraries two binaries share).
func dedupe(entries []Entry) []Entry {
	seen := map[string]bool{}
	out := entries[:0]
	for _, e := range entries {
		if !seen[e.Path] {
			seen[e.Path] = true
			out = append(out, e)
		}
	}
	return out
}
