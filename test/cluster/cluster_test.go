package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/test/cluster"
	"github.com/portcullis/portcullis/test/images"
	"github.com/portcullis/portcullis/test/proctest"
)

const namespace = "smoke"

// TestCluster starts the cluster with the portcullis image built from this source, runs the demo
// backend (a Deployment of 2 with a Service) and the frontend, which calls the backend by its
// Service's DNS name: a request to the frontend, through the API server's service proxy and
// from the node to its Service IP, comes back with the backend's answer. Then the cluster stops
// and nothing of it is left: no process, cgroup, mount, directory, and on the host no iptables
// chain, interface or network namespace it made.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Kubernetes cluster")
	}
	cluster.RequireParts(t)
	before, err := cluster.ReadHostState()
	if err != nil {
		t.Fatal(err)
	}
	c := cluster.Start(t, cluster.Options{Images: images.ForTest(t, "", "portcullis")})
	for _, p := range c.RSS() {
		t.Logf("idle RSS %-28s %6.1f MiB", p.Name, p.RSSMiB)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := c.Client
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "first"}, Spec: demoPod("backend", "--name=first")}
	created := time.Now()
	if _, err := k.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, time.Minute, func() error {
		p, err := k.CoreV1().Pods(namespace).Get(ctx, "first", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s: %s", p.Status.Phase, describe(p))
		}
		return nil
	}, "pod first Running")
	t.Logf("a pod Running %s after its creation", time.Since(created).Round(time.Millisecond))

	created = time.Now()
	deploy(ctx, t, c, "backend", 2, "backend", "--name=backend")
	t.Logf("a Deployment of 2 and its Service ready %s after their creation", time.Since(created).Round(time.Millisecond))
	deploy(ctx, t, c, "frontend", 1, "frontend", "--upstream=http://backend."+namespace+".svc:8080")

	check := func(how string, body []byte, err error) {
		t.Helper()
		var got map[string]string
		if err != nil || json.Unmarshal(body, &got) != nil {
			t.Fatalf("%s: %v %s", how, err, body)
		}
		if got["service"] != "backend" || got["path"] != "/api/items" {
			t.Fatalf("%s: answered %s, want the backend's answer for /api/items", how, body)
		}
	}
	body, err := k.CoreV1().Services(namespace).ProxyGet("http", "frontend", "8080", "call", map[string]string{"path": "/api/items"}).DoRaw(ctx)
	check("frontend through the API server's service proxy", body, err)

	svc, err := k.CoreV1().Services(namespace).Get(ctx, "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// kube-proxy programs a new Service within its sync period.
	proctest.Eventually(t, 30*time.Second, func() error {
		resp, err := c.HTTPClient().Get("http://" + svc.Spec.ClusterIP + ":8080/call?path=/api/items")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err
	}, "frontend's Service IP from the node")
	check("frontend's Service IP from the node", body, nil)

	for _, p := range c.RSS() {
		t.Logf("RSS with 4 pods %-28s %6.1f MiB", p.Name, p.RSSMiB)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("teardown %s", c.StopTime().Round(time.Millisecond))
	if left := c.Leftovers(); len(left) > 0 {
		t.Fatalf("the cluster left behind:\n%s", strings.Join(left, "\n"))
	}
	after, err := cluster.ReadHostState()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		what          string
		before, after []string
		ours          func(string) bool
	}{
		{"iptables rules", before.Chains, after.Chains, func(string) bool { return true }},
		{"interfaces", before.Links, after.Links, func(l string) bool { return l == cluster.Bridge || strings.HasPrefix(l, "veth") }},
		{"network namespaces", before.NetNS, after.NetNS, func(n string) bool { return strings.HasPrefix(n, "cni-") }},
		{"mounts", before.Mounts, after.Mounts, func(string) bool { return true }},
	} {
		var added []string
		for _, a := range d.after {
			if d.ours(a) && !slices.Contains(d.before, a) {
				added = append(added, a)
			}
		}
		if len(added) > 0 {
			t.Errorf("host %s the cluster left: %s", d.what, strings.Join(added, "; "))
		}
	}
}

// demoPod runs `portcullis demo-app <app>` as deploy/overlays/demo does: not root, read-only,
// no capabilities, ready when it answers HTTP.
func demoPod(app string, args ...string) corev1.PodSpec {
	return corev1.PodSpec{
		SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](10001)},
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		Containers: []corev1.Container{{
			Name:            "app",
			Image:           images.Repository + "portcullis:latest",
			ImagePullPolicy: corev1.PullNever,
			Args:            append([]string{"demo-app", app, "--listen=0.0.0.0:8080"}, args...),
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
				PeriodSeconds: 1,
			},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
}

// deploy creates a Deployment of the demo app and its Service, and waits until every replica
// is available and is a ready endpoint of the Service.
func deploy(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, replicas int32, app string, args ...string) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: demoPod(app, args...)},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")},
		}},
	}
	if _, err := c.Client.AppsV1().Deployments(namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, 2*time.Minute, func() error {
		got, err := c.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.AvailableReplicas != replicas {
			return fmt.Errorf("%d of %d replicas available", got.Status.AvailableReplicas, replicas)
		}
		eps, err := c.Client.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range eps.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready++
				}
			}
		}
		if ready != int(replicas) {
			return fmt.Errorf("%d ready endpoints, want %d", ready, replicas)
		}
		return nil
	}, "deployment "+name+" available behind its Service")
}

// describe says why a pod is not running yet: its conditions and containers' states.
func describe(p *corev1.Pod) string {
	var b strings.Builder
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			fmt.Fprintf(&b, "%s=%s %s; ", c.Type, c.Status, c.Message)
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			fmt.Fprintf(&b, "%s waiting: %s %s; ", s.Name, s.State.Waiting.Reason, s.State.Waiting.Message)
		}
	}
	return b.String()
}
