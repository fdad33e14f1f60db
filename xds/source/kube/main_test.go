package kube_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/portcullis/portcullis/identity/agent"
	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/testca"
	"github.com/portcullis/portcullis/xds/bootstrap"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/server"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source/kube"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
	"github.com/portcullis/portcullis/xds/translate"
)

var api kubetest.Holder

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m, &api)) }

const trustDomain = "example.org"

var controlPlaneID = spiffeid.RequireFromString("spiffe://example.org/ns/portcullis-system/sa/controlplane")

// meshDoc is the one Mesh of the API server, shared by every test and benchmark of the package
// (tests delete what else they create).
const meshDoc = `
apiVersion: portcullis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: example.org}
`

// plane is the control plane's xDS side on the Kubernetes source, in this process: the source,
// the snapshot controller with the source's endpoints, the registry, the ledger and ADS on a
// loopback mTLS port.
type plane struct {
	env    *kubetest.Env
	src    *kube.Source
	ledger *snapshot.Ledger
	ca     *testca.CA
	addr   string
}

// startPlane runs a plane until the test ends, once the Mesh exists.
func startPlane(t testing.TB, env *kubetest.Env) *plane {
	t.Helper()
	return servePlane(t, env, startSource(t, env, 5*time.Millisecond), 5*time.Millisecond)
}

// startSource runs a source until the test ends and waits for its first mesh (debounce 0: the
// default).
func startSource(t testing.TB, env *kubetest.Env, debounce time.Duration) *kube.Source {
	t.Helper()
	apply(t, env, meshDoc, false)
	src, err := kube.New(kube.Options{Client: env.Client, Dynamic: env.Dynamic, Logger: slog.New(slog.DiscardHandler), Debounce: debounce})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	waitFor(t, 60*time.Second, "the source's first mesh", func() bool { return src.Status().Version != "" })
	return src
}

// servePlane runs the rest of a plane on src until the test ends.
func servePlane(t testing.TB, env *kubetest.Env, src *kube.Source, debounce time.Duration) *plane {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	registry, err := server.NewRegistry(server.RegistryOptions{Logger: log, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := snapshot.NewLedger(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := snapshot.NewCache(cache.NewSnapshotCache(true, cache.IDHash{}, nil), ledger)
	ctl, err := snapshot.NewController(src, registry, c, ledger, snapshot.Options{
		Translate: translate.Options{AuthzAddress: "127.0.0.1:15011", AuthzID: controlPlaneID},
		Endpoints: src,
		Logger:    log,
		Debounce:  debounce,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ca := testca.New(t, trustDomain)
	ads := server.New(ctx, server.Options{Mesh: src, Registry: registry, Ledger: ledger, Cache: c, Logger: log})
	g := grpc.NewServer(append(server.GRPCOptions(), grpc.Creds(credentials.NewTLS(ca.ServerTLS(ca.SVID(t, controlPlaneID.String())))))...)
	ads.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Serve(ln) })
	wg.Go(func() { _ = ctl.Run(ctx) })
	wg.Go(func() { _ = registry.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		g.Stop()
		wg.Wait()
	})
	return &plane{env: env, src: src, ledger: ledger, ca: ca, addr: ln.Addr().String()}
}

// startEnvoy runs a real Envoy for a workload, with the bootstrap its agent would write and an
// SVID for id served over SDS on a unix socket.
func (p *plane) startEnvoy(t *testing.T, nodeID string, id spiffeid.ID) *envoytest.Envoy {
	t.Helper()
	envoytest.Require(t)
	sock := filepath.Join(t.TempDir(), agent.SDSSocket)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svid := p.ca.SVID(t, id.String()).X509SVID()
	done := make(chan error, 1)
	go func() { done <- agent.ServeSDS(ctx, ln, svid, []*x509.Certificate{p.ca.Cert}, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	b, err := bootstrap.Build(bootstrap.Options{
		NodeID: nodeID, Cluster: nodeID, Identity: id, ControlPlaneAddress: p.addr, ControlPlaneID: controlPlaneID,
		SDSSocket: sock, AdminAddress: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := bootstrap.JSON(b)
	if err != nil {
		t.Fatal(err)
	}
	return envoytest.Start(t, string(js), envoytest.Options{})
}

// apply creates the custom resources of a YAML stream (replacing what exists), deleting them
// when the test ends if cleanup is set.
func apply(t testing.TB, env *kubetest.Env, docs string, cleanup bool) {
	t.Helper()
	ctx := context.Background()
	for doc := range strings.SplitSeq(docs, "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		r := crs(env, u.GetKind(), u.GetNamespace())
		_, err := r.Create(ctx, u, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var cur *unstructured.Unstructured
			if cur, err = r.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
				u.SetResourceVersion(cur.GetResourceVersion())
				_, err = r.Update(ctx, u, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if cleanup {
			t.Cleanup(func() {
				if err := r.Delete(context.Background(), u.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					t.Error(err)
				}
			})
		}
	}
}

type resourceClient interface {
	Create(context.Context, *unstructured.Unstructured, metav1.CreateOptions, ...string) (*unstructured.Unstructured, error)
	Update(context.Context, *unstructured.Unstructured, metav1.UpdateOptions, ...string) (*unstructured.Unstructured, error)
	Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
	Delete(context.Context, string, metav1.DeleteOptions, ...string) error
}

// crs is the dynamic client of a portcullis.dev kind in a namespace ("" for the cluster).
func crs(env *kubetest.Env, kind, namespace string) resourceClient {
	r := env.Dynamic.Resource(schema.GroupVersionResource{Group: v1alpha1.Group, Version: v1alpha1.Version, Resource: v1alpha1.Resource(kind)})
	if namespace == "" || kind == model.KindMesh {
		return r
	}
	return r.Namespace(namespace)
}

var namespaces = map[string]int{}

// newNamespace creates a namespace of its own for a test: base, or base-N when an earlier run in
// this process (-count) used it. The tests' API server runs no controllers (no namespace
// deletion, no EndpointSlice controller): objects stay, and a test's are its own.
func newNamespace(t testing.TB, env *kubetest.Env, base string) string {
	t.Helper()
	namespaces[base]++
	name := base
	if n := namespaces[base]; n > 1 {
		name = fmt.Sprintf("%s-%d", base, n)
	}
	env.Namespace(t, name, nil)
	return name
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitForf(t, timeout, cond, func() string { return "waiting for " + what })
}

// waitForf polls cond until it holds, or fails the test with what() after timeout.
func waitForf(t testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
