package kubetest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/portcullis/portcullis/test/envoytest"
)

// KubeVersion is the API server the tests run against (the Makefile's KUBE_VERSION).
const KubeVersion = "v1.37.2"

// Env is a running API server.
type Env struct {
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Root is the repository root (for deploy/ and other files).
	Root string
	env  *envtest.Environment
}

// Holder keeps a package's Env, or why there is none.
type Holder struct {
	once sync.Once
	env  *Env
	err  error
	// broken: the binaries are there but the API server did not start: always a failure.
	broken bool
}

// Assets returns the directory holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS, or the
// repository's .cache/kube-assets-<version>.
func Assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := envoytest.RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, ".cache", "kube-assets-"+KubeVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("kubetest: no %s in %s: run `make kube` (builds kube-apiserver %s, fetches etcd)", bin, dir, KubeVersion)
		}
	}
	return dir, nil
}

// Main runs the tests and stops the API server if one of them started it (Require starts it
// on first use, so a run of only the package's other tests or fuzz targets starts none). Use it
// from TestMain: os.Exit(kubetest.Main(m, &holder)).
func Main(m *testing.M, h *Holder) int {
	flag.Parse()
	code := m.Run()
	if h.env != nil {
		if err := h.env.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kubetest: stopping the API server:", err)
		}
	}
	return code
}

// Require returns the package's API server, or ends the test: failing it under CI=true and
// skipping it elsewhere when there is none.
func Require(t testing.TB, h *Holder) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Kubernetes API server (-short)")
	}
	h.once.Do(func() { h.env, h.broken, h.err = start() })
	if h.env != nil {
		return h.env
	}
	if h.broken {
		t.Fatal(h.err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: tests that need the API server must run)", h.err)
	}
	t.Skipf("SKIPPING, NO KUBERNETES API SERVER: %v", h.err)
	return nil
}

func start() (*Env, bool, error) {
	assets, err := Assets()
	if err != nil {
		return nil, false, err
	}
	root, err := envoytest.RepoRoot()
	if err != nil {
		return nil, false, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(root, "deploy", "base", "crds")},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  20 * time.Second,
	}
	// On loopback the API server cannot publish its own endpoints (the kubernetes Service):
	// without this it logs errors forever.
	env.ControlPlane.GetAPIServer().Configure().Set("endpoint-reconciler-type", "none")
	cfg, err := env.Start()
	if err != nil {
		return nil, true, fmt.Errorf("kubetest: starting the API server: %w", err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, true, errors.Join(err, env.Stop())
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, true, errors.Join(err, env.Stop())
	}
	return &Env{Config: cfg, Client: client, Dynamic: dyn, Root: root, env: env}, false, nil
}

// Namespace creates a namespace with labels, or keeps the one a previous test created.
func (e *Env) Namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	_, err := e.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// KubeConfig returns a kubeconfig for the API server (an administrator's), for processes the
// test starts.
func (e *Env) KubeConfig() []byte { return e.env.KubeConfig }
