package deploy

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// Manifests is this directory's kustomize tree (base, overlays), so the binary installs
// exactly what `kubectl apply -k` applies.
//
//go:embed all:base all:overlays
var Manifests embed.FS

// Render returns the manifests of a kustomization directory of fsys (Manifests: "base",
// "overlays/demo") as YAML documents, in kustomization order. Only `resources` is
// supported, so the output is what kustomize itself renders; anything else is refused rather
// than silently ignored.
func Render(fsys fs.FS, dir string) ([]byte, error) {
	var out bytes.Buffer
	if err := render(fsys, dir, &out, map[string]bool{}); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func render(fsys fs.FS, dir string, out *bytes.Buffer, seen map[string]bool) error {
	if seen[dir] {
		return fmt.Errorf("deploy: %s is included twice", dir)
	}
	seen[dir] = true
	raw, err := fs.ReadFile(fsys, path.Join(dir, "kustomization.yaml"))
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		return fmt.Errorf("deploy: %s/kustomization.yaml (only resources are supported): %w", dir, err)
	}
	for _, r := range k.Resources {
		p := path.Clean(path.Join(dir, r))
		if st, err := fs.Stat(fsys, p); err == nil && st.IsDir() {
			if err := render(fsys, p, out, seen); err != nil {
				return err
			}
			continue
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("deploy: %w", err)
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		fmt.Fprintf(out, "# Source: %s\n", p)
		out.Write(bytes.TrimRight(bytes.TrimPrefix(data, []byte("---\n")), "\n"))
		out.WriteString("\n")
	}
	return nil
}

// Objects splits rendered manifests into objects.
func Objects(rendered []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(rendered), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("deploy: %w", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// Apply applies objects with server-side apply (field manager "portcullis"), in order; with
// dryRun the API server validates and admits them without persisting anything. A kind whose
// CRD was applied just before is retried until the API server serves it.
func Apply(ctx context.Context, cfg *rest.Config, objs []*unstructured.Unstructured, dryRun bool, log io.Writer) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	opts := metav1.ApplyOptions{FieldManager: "portcullis", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var errs []error
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		var m *meta.RESTMapping
		for deadline := time.Now().Add(30 * time.Second); ; {
			m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			mapper.Reset()
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err))
			continue
		}
		r := dyn.Resource(m.Resource)
		var ri dynamic.ResourceInterface = r
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = r.Namespace(u.GetNamespace())
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, opts); err != nil {
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err))
			continue
		}
		fmt.Fprintf(log, "%s/%s %s applied%s\n", strings.ToLower(gvk.Kind), u.GetName(), ns(u), map[bool]string{true: " (server dry run)"}[dryRun])
	}
	return errors.Join(errs...)
}

func ns(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return ""
	}
	return "in " + u.GetNamespace()
}

// InstallOptions say what `portcullis install` installs and how.
type InstallOptions struct {
	Overlay      string // a directory of overlays/ instead of the base ("" is the base)
	Kubeconfig   string // "" is $KUBECONFIG or ~/.kube/config
	DryRun       bool   // print the manifests instead of applying them
	ServerDryRun bool   // apply with dryRun=All: admitted and validated, nothing stored
}

// Install renders the embedded manifests and prints them (DryRun) or applies them server-side
// with the user's kubeconfig, reporting each object to out.
func Install(ctx context.Context, opts InstallOptions, out io.Writer) error {
	dir := "base"
	if opts.Overlay != "" {
		dir = "overlays/" + opts.Overlay
	}
	rendered, err := Render(Manifests, dir)
	if err != nil {
		return err
	}
	if opts.DryRun {
		_, err := out.Write(rendered)
		return err
	}
	objs, err := Objects(rendered)
	if err != nil {
		return err
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = opts.Kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	return Apply(ctx, cfg, objs, opts.ServerDryRun, out)
}
