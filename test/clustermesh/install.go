package clustermesh

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/examples/demoidp"
	"github.com/portcullis/portcullis/xds/inject"
)

// Names of what deploy/ and its demo overlay install.
const (
	SystemNamespace = "portcullis-system"
	ControlPlane    = "portcullis-controlplane"
	Redis           = "portcullis-redis"
	DemoNamespace   = "demo"
	TrustDomain     = "demo.portcullis.local"
)

// Options of Install.
type Options struct {
	Bin        string // the portcullis binary: `portcullis install` applies the manifests
	Kubeconfig string
	Config     *rest.Config
	Logf       func(format string, args ...any)
}

// Demo is the installed demo.
type Demo struct {
	IDP *demoidp.IDP
	// AdminToken is alice's token with the admin role, valid for a day.
	AdminToken string
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	// Timings since Install began: the control plane ready, the demo's pods ready.
	ControlPlaneReady, DemoReady time.Duration
}

// Resources of the portcullis.dev API.
var (
	JWTProviders          = schema.GroupVersionResource{Group: "portcullis.dev", Version: "v1alpha1", Resource: "jwtproviders"}
	AuthorizationPolicies = schema.GroupVersionResource{Group: "portcullis.dev", Version: "v1alpha1", Resource: "authorizationpolicies"}
	RateLimitPolicies     = schema.GroupVersionResource{Group: "portcullis.dev", Version: "v1alpha1", Resource: "ratelimitpolicies"}
)

// Install runs `portcullis install --overlay demo`, adds the demo issuer (a JWTProvider with a key
// made now, and a policy admitting its admin tokens to the backend's /admin/*), and waits until
// both control plane replicas and the demo's injected pods are ready.
func Install(ctx context.Context, opts Options) (*Demo, error) {
	begin := time.Now()
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	k, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(opts.Config)
	if err != nil {
		return nil, err
	}
	d := &Demo{Client: k, Dynamic: dyn}
	if d.IDP, err = demoidp.New(); err != nil {
		return nil, err
	}
	if d.AdminToken, err = d.IDP.Token("alice", []string{"admin"}, 24*time.Hour); err != nil {
		return nil, err
	}
	install := exec.CommandContext(ctx, opts.Bin, "install", "--overlay", "demo", "--kubeconfig", opts.Kubeconfig)
	var out bytes.Buffer
	install.Stdout, install.Stderr = &out, &out
	if err := install.Run(); err != nil {
		return nil, fmt.Errorf("portcullis install --overlay demo: %v\n%s", err, out.String())
	}
	logf("portcullis install --overlay demo: %d objects applied", strings.Count(out.String(), " applied"))
	if err := d.addIssuer(ctx); err != nil {
		return nil, err
	}
	if err := WaitAvailable(ctx, k, SystemNamespace, ControlPlane, 2); err != nil {
		return nil, err
	}
	d.ControlPlaneReady = time.Since(begin)
	logf("control plane: 2 of 2 replicas ready after %s", d.ControlPlaneReady.Round(time.Millisecond))
	// Redis starts once the first replica has created its password Secret.
	if err := WaitAvailable(ctx, k, SystemNamespace, Redis, 1); err != nil {
		return nil, err
	}
	for name, n := range map[string]int32{"backend": 2, "frontend": 1} {
		if err := WaitAvailable(ctx, k, DemoNamespace, name, n); err != nil {
			return nil, err
		}
	}
	pods, err := k.CoreV1().Pods(DemoNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		if !slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.ProxyContainerName }) {
			return nil, fmt.Errorf("clustermesh: pod %s/%s was not injected", p.Namespace, p.Name)
		}
	}
	d.DemoReady = time.Since(begin)
	logf("demo: %d injected pods ready after %s", len(pods.Items), d.DemoReady.Round(time.Millisecond))
	return d, nil
}

// addIssuer creates the demo's JWT provider (its key set inline) and the policy that admits
// admin tokens to /admin/*, retrying while the CRDs are being established.
func (d *Demo) addIssuer(ctx context.Context) error {
	jwks, err := d.IDP.JWKS()
	if err != nil {
		return err
	}
	provider := object(JWTProviders, "JWTProvider", "demo-idp", map[string]any{
		"issuer": demoidp.Issuer, "audiences": []any{"backend"}, "algorithms": []any{"ES256"},
		"jwks": map[string]any{"inline": string(jwks)},
	})
	policy := object(AuthorizationPolicies, "AuthorizationPolicy", "backend-allow-admins", map[string]any{
		"selector": map[string]any{"service": "backend"},
		"action":   "ALLOW",
		"rules": []any{map[string]any{
			"name": "admins",
			"from": map[string]any{
				"principals": []any{"spiffe://" + TrustDomain + "/ns/demo/sa/frontend"},
				"jwt": map[string]any{
					"providers": []any{"demo-idp"},
					"claims":    []any{map[string]any{"claim": "realm_access.roles", "contains": "admin"}},
				},
			},
			"to": map[string]any{"paths": []any{"/admin/*"}},
		}},
	})
	for _, o := range []struct {
		gvr schema.GroupVersionResource
		u   *unstructured.Unstructured
	}{{JWTProviders, provider}, {AuthorizationPolicies, policy}} {
		if err := Apply(ctx, d.Dynamic, o.gvr, o.u); err != nil {
			return err
		}
	}
	return nil
}

func object(gvr schema.GroupVersionResource, kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": DemoNamespace},
		"spec":     spec,
	}}
}

// Apply applies u with server-side apply, as portcullis install does.
func Apply(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, u *unstructured.Unstructured) error {
	data, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	for {
		_, err := dyn.Resource(gvr).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), "application/apply-patch+yaml", data,
			metav1.PatchOptions{FieldManager: "portcullis-demo", Force: ptr.To(true)})
		if err == nil || !apierrors.IsNotFound(err) || ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("clustermesh: applying %s %s: %w", u.GetKind(), u.GetName(), err)
			}
			return nil
		}
		time.Sleep(500 * time.Millisecond) // the CRD is not served yet
	}
}

// WaitAvailable waits until a Deployment has n ready, updated replicas and no others.
func WaitAvailable(ctx context.Context, k kubernetes.Interface, ns, name string, n int32) error {
	var last string
	for {
		dep, err := k.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if available(dep, n) {
				return nil
			}
			last = fmt.Sprintf("%d replicas, %d updated, %d ready, %d available", dep.Status.Replicas, dep.Status.UpdatedReplicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clustermesh: deployment %s/%s not at %d ready replicas: %s (%w)", ns, name, n, last, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func available(dep *appsv1.Deployment, n int32) bool {
	s := dep.Status
	return s.ObservedGeneration >= dep.Generation && s.UpdatedReplicas == n && s.ReadyReplicas == n &&
		s.AvailableReplicas == n && s.Replicas == n
}
