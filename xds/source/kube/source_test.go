package kube_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// TestEnvoyFollowsEndpointSlices: a Kubernetes Service whose pods carry the sidecar becomes a
// mesh service; a real Envoy whose Workload calls it gets a cluster with exactly the ready,
// injected endpoints of its EndpointSlice and the SPIFFE IDs of those pods' service accounts,
// and follows every change of the slice. Not-ready and not-injected endpoints are never
// programmed.
func TestEnvoyFollowsEndpointSlices(t *testing.T) {
	env := kubetest.Require(t, &api)
	envoytest.Require(t)
	ns := newNamespace(t, env, "eds")
	id := func(sa string) string { return "spiffe://example.org/ns/" + ns + "/sa/" + sa }
	for _, sa := range []string{"web", "cart", "cart-canary", "legacy"} {
		create(t, env.Client.CoreV1().ServiceAccounts(ns).Create, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}})
	}
	for pod, sa := range map[string]string{"cart-a": "cart", "cart-b": "cart", "cart-c": "cart", "cart-d": "cart-canary"} {
		createPod(t, env, ns, pod, sa, true)
	}
	createPod(t, env, ns, "legacy", "legacy", false) // no sidecar: cannot speak mesh mTLS
	create(t, env.Client.CoreV1().Services(ns).Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cart"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 8081, TargetPort: intstr.FromInt32(8080)},
			{Name: "metrics", Port: 9090}, // not a mesh port
		}},
	})
	slice := create(t, env.Client.DiscoveryV1().EndpointSlices(ns).Create, endpointSlice(ns, "cart-1", "cart", 8080,
		ep("10.1.0.1", "cart-a", true), ep("10.1.0.2", "cart-b", true), ep("10.1.0.3", "cart-c", false), ep("10.1.0.9", "legacy", true)))

	p := startPlane(t, env)
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec: {serviceAccounts: [web], ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: %[1]s}
spec: {service: web, inboundPort: %[2]d, appPort: 8080, upstreams: [{service: cart, localPort: %[3]d}]}
`, ns, proctest.FreePort(t), proctest.FreePort(t)), true)
	e := p.startEnvoy(t, "web-1."+ns, spiffeid.RequireFromString(id("web")))

	cluster := "outbound|8081|cart." + ns
	expect := func(what string, hosts []string, sans []string) {
		t.Helper()
		var gotHosts, gotSANs []string
		deadline := time.Now().Add(15 * time.Second)
		for {
			gotHosts, gotSANs = clusterHosts(t, e, cluster), clusterSANs(t, e, cluster)
			if slices.Equal(gotHosts, hosts) && slices.Equal(gotSANs, sans) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Envoy's %s has hosts %v and SANs %v, want %v and %v", what, cluster, gotHosts, gotSANs, hosts, sans)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect("initial slice", []string{"10.1.0.1:8080", "10.1.0.2:8080"}, []string{id("cart")})

	// One address goes, one comes (from a pod running as another service account).
	slice.Endpoints = []discoveryv1.Endpoint{ep("10.1.0.2", "cart-b", true), ep("10.1.0.3", "cart-c", false), ep("10.1.0.4", "cart-d", true)}
	slice = update(t, env.Client.DiscoveryV1().EndpointSlices(ns).Update, slice)
	expect("after an address was removed and one added", []string{"10.1.0.2:8080", "10.1.0.4:8080"},
		[]string{id("cart"), id("cart-canary")})

	// The not-ready pod becomes ready.
	slice.Endpoints[1].Conditions.Ready = ptr.To(true)
	slice = update(t, env.Client.DiscoveryV1().EndpointSlices(ns).Update, slice)
	expect("after cart-c became ready", []string{"10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.4:8080"},
		[]string{id("cart"), id("cart-canary")})

	// Terminating counts as not ready.
	slice.Endpoints[0].Conditions.Terminating = ptr.To(true)
	update(t, env.Client.DiscoveryV1().EndpointSlices(ns).Update, slice)
	expect("after cart-b started terminating", []string{"10.1.0.3:8080", "10.1.0.4:8080"},
		[]string{id("cart"), id("cart-canary")})

	if st := p.ledger.Status(); len(st) != 1 || !st[0].Synced() || st[0].Error != "" {
		t.Errorf("ledger: %+v", st)
	}
}

// clusterHosts returns the sorted "address:port" of the hosts Envoy has for a cluster.
func clusterHosts(t *testing.T, e *envoytest.Envoy, name string) []string {
	t.Helper()
	var cs struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Address struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"address"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	if err := e.AdminJSON(context.Background(), "/clusters?format=json", &cs); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs.ClusterStatuses {
		if c.Name != name {
			continue
		}
		for _, h := range c.HostStatuses {
			out = append(out, net.JoinHostPort(h.Address.SocketAddress.Address, strconv.Itoa(h.Address.SocketAddress.PortValue)))
		}
	}
	slices.Sort(out)
	return out
}

// clusterSANs returns the sorted exact URI SANs an active cluster requires of its peers.
func clusterSANs(t *testing.T, e *envoytest.Envoy, name string) []string {
	t.Helper()
	var dump struct {
		Configs []struct {
			Cluster map[string]any `json:"cluster"`
		} `json:"configs"`
	}
	if err := e.AdminJSON(context.Background(), "/config_dump?resource=dynamic_active_clusters", &dump); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range dump.Configs {
		v := c.Cluster
		if v["name"] != name {
			continue
		}
		walk(v, func(key string, val any) {
			if key != "match_typed_subject_alt_names" {
				return
			}
			for _, m := range val.([]any) {
				mm := m.(map[string]any)
				if mm["san_type"] == "URI" {
					out = append(out, fmt.Sprint(mm["matcher"].(map[string]any)["exact"]))
				}
			}
		})
	}
	slices.Sort(out)
	return out
}

func walk(v any, visit func(key string, val any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			visit(k, val)
			walk(val, visit)
		}
	case []any:
		for _, val := range x {
			walk(val, visit)
		}
	}
}

// create creates a Kubernetes object (in a namespace of the test's own: see newNamespace).
func create[T interface{ GetName() string }](t testing.TB, fn func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := fn(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s: %v", obj.GetName(), err)
	}
	return out
}

func update[T interface{ GetName() string }](t testing.TB, fn func(context.Context, T, metav1.UpdateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := fn(context.Background(), obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("updating %s: %v", obj.GetName(), err)
	}
	return out
}

// createPod creates a pod running as sa, with the injector's annotation when injected. No
// kubelet runs: the pod stays Pending, which the source does not mind.
func createPod(t testing.TB, env *kubetest.Env, ns, name, sa string, injected bool) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": strings.SplitN(name, "-", 2)[0]}},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "example.org/app:1"}}},
	}
	if injected {
		pod.Annotations = map[string]string{v1alpha1.AnnotationInjected: "test"}
	}
	create(t, env.Client.CoreV1().Pods(ns).Create, pod)
}

func endpointSlice(ns, name, service string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// ep is an endpoint of a pod (none when pod is empty).
func ep(addr, pod string, ready bool) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}
	if pod != "" {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pod}
	}
	return e
}
