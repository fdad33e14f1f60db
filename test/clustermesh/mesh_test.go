package clustermesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/test/cluster"
	"github.com/portcullis/portcullis/test/clustermesh"
	"github.com/portcullis/portcullis/test/images"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/test/tracetest"
	"github.com/portcullis/portcullis/xds/source/kube"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

const frontendID = "spiffe://" + clustermesh.TrustDomain + "/ns/demo/sa/frontend"

// TestMeshOnKubernetes installs the mesh as a user does and drives it from real pods: the
// frontend pod calls the backend Service by its DNS name through both injected proxies.
func TestMeshOnKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Kubernetes cluster")
	}
	cluster.RequireParts(t)
	begin := time.Now()
	c := cluster.Start(t, cluster.Options{Images: meshImages(t)})
	t.Logf("cluster ready after %s", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	demo, err := clustermesh.Install(ctx, clustermesh.Options{Bin: proctest.Binary(t), Kubeconfig: c.Kubeconfig, Config: c.Config, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{c: c, demo: demo, ctx: ctx}
	m.frontend = m.forward(t, clustermesh.DemoNamespace, "app=frontend")

	var first time.Duration
	proctest.Eventually(t, time.Minute, func() error {
		code, body, _ := m.call("/api/items", nil)
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		first = time.Since(begin)
		return nil
	}, "the first allowed request")
	t.Logf("first request allowed %s after the cluster start (install %s, demo ready %s)", first.Round(time.Millisecond),
		demo.ControlPlaneReady.Round(time.Millisecond), demo.DemoReady.Round(time.Millisecond))
	for _, p := range c.RSS() {
		t.Logf("RSS %-40s %6.1f MiB", p.Name, p.RSSMiB)
	}

	t.Run("mTLS with the caller's SPIFFE ID", func(t *testing.T) {
		code, body, _ := m.call("/api/items", nil)
		var answer struct{ Caller, Service string }
		if err := json.Unmarshal([]byte(body), &answer); code != 200 || err != nil || answer.Caller != frontendID {
			t.Fatalf("GET /api/items: %d %s: want 200 naming the caller %s", code, body, frontendID)
		}
	})
	t.Run("denied by policy", func(t *testing.T) {
		code, body, h := m.call("/debug/vars", nil)
		if code != http.StatusForbidden || h.Get("x-portcullis-decision-id") == "" {
			t.Fatalf("GET /debug/vars: %d %s, decision id %q: want 403 with a decision id", code, body, h.Get("x-portcullis-decision-id"))
		}
	})
	t.Run("JWT", func(t *testing.T) {
		if code, body, _ := m.call("/admin/stats", nil); code != http.StatusUnauthorized {
			t.Errorf("GET /admin/stats without a token: %d %s, want 401", code, body)
		}
		if code, body, _ := m.call("/admin/stats", http.Header{"Authorization": {"Bearer " + demo.AdminToken}}); code != http.StatusOK {
			t.Errorf("GET /admin/stats with an admin token: %d %s, want 200", code, body)
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		// Two backend proxies with buckets of 20: 80 requests at once overflow both.
		codes := m.burst("/api/items", 80)
		if codes[http.StatusTooManyRequests] == 0 || codes[http.StatusOK] == 0 {
			t.Fatalf("80 requests at once: %v; want some 200 and some 429", codes)
		}
		time.Sleep(2 * time.Second) // refill, for what follows
	})
	t.Run("a Global limit holds across proxies and replicas, in Redis", func(t *testing.T) {
		m.globalLimit(t)
	})
	t.Run("a pod outside the mesh is refused under STRICT", func(t *testing.T) {
		m.outsider(t)
	})
	t.Run("application probes pass through the agent", func(t *testing.T) {
		m.probesRewritten(t)
	})
	t.Run("one trace per request in the cluster's Jaeger", func(t *testing.T) {
		m.trace(t)
	})
	t.Run("a policy edit takes effect", func(t *testing.T) {
		m.policyEdit(t)
	})
	t.Run("scaling the backend moves EDS", func(t *testing.T) {
		m.scale(t)
	})
	t.Run("a backend pod deleted under load fails no request", func(t *testing.T) {
		m.underLoad(t, "pod deletion", func() {
			pods := m.pods(t, clustermesh.DemoNamespace, "app=backend")
			if err := m.demo.Client.CoreV1().Pods(clustermesh.DemoNamespace).Delete(m.ctx, pods[0].Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := clustermesh.WaitAvailable(m.ctx, m.demo.Client, clustermesh.DemoNamespace, "backend", 2); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("a control plane rolling restart fails no request", func(t *testing.T) {
		m.underLoad(t, "control plane rolling restart", func() {
			patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339))
			if _, err := m.demo.Client.AppsV1().Deployments(clustermesh.SystemNamespace).Patch(m.ctx, clustermesh.ControlPlane,
				types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := clustermesh.WaitAvailable(m.ctx, m.demo.Client, clustermesh.SystemNamespace, clustermesh.ControlPlane, 2); err != nil {
				t.Fatal(err)
			}
			// Until the old replicas are gone: their streams end as they stop.
			proctest.Eventually(t, time.Minute, func() error {
				pods, err := m.demo.Client.CoreV1().Pods(clustermesh.SystemNamespace).List(m.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + clustermesh.ControlPlane})
				if err != nil || len(pods.Items) != 2 {
					return fmt.Errorf("%d control plane pods, %v", len(pods.Items), err)
				}
				return nil
			}, "the old replicas gone")
		})
	})
}

// meshImages are the images deploy/ names, built from this source: the control plane and demo
// applications, the proxy (sidecar and init container) and Jaeger (the cluster builds its
// sandbox image itself).
func meshImages(t *testing.T) []images.Image {
	t.Helper()
	jaeger := tracetest.JaegerBinary()
	if jaeger == "" || tracetest.JaegerUI() == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Jaeger or its UI is not built (make jaeger): CI=true, the cluster test must run")
		}
		t.Skip("SKIPPING: Jaeger or its UI is not built (make jaeger)")
	}
	return images.ForTest(t, jaeger, "portcullis", "portcullis-proxy", "jaeger", "redis")
}

type mesh struct {
	c        *cluster.Cluster
	demo     *clustermesh.Demo
	ctx      context.Context
	frontend string // the frontend pod's application, port-forwarded
}

// forward port-forwards to port 8080 of the first ready pod matching selector.
func (m *mesh) forward(t testing.TB, ns, selector string) string {
	t.Helper()
	pods := m.pods(t, ns, selector)
	f, err := clustermesh.ForwardPort(m.c.Config, m.demo.Client, ns, pods[0].Name, 0, 8080)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f.Addr
}

// pods lists the running pods matching selector, failing the test when there is none.
func (m *mesh) pods(t testing.TB, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := m.demo.Client.CoreV1().Pods(ns).List(m.ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no running pod in %s matches %s", ns, selector)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var client = &http.Client{Timeout: 10 * time.Second}

// call asks the frontend to call the backend's path: the frontend's request goes to
// http://backend.demo.svc:8080 (CoreDNS, the Service) through its proxy, mTLS, the backend's.
func (m *mesh) call(path string, h http.Header) (int, string, http.Header) {
	return callAt(m.frontend, path, h)
}

func callAt(addr, path string, h http.Header) (int, string, http.Header) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/call?path="+path, nil)
	if err != nil {
		return 0, err.Error(), nil
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), resp.Header
}

// burst sends n calls at once and counts the answers by status.
func (m *mesh) burst(path string, n int) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			code, _, _ := m.call(path, nil)
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}

// underLoad runs change while the frontend calls the backend 10 times a second, and fails the
// test if any call is not answered 200.
func (m *mesh) underLoad(t *testing.T, what string, change func()) {
	t.Helper()
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sent.Add(1)
			if code, body, _ := m.call("/api/items", nil); code != http.StatusOK {
				failed.Add(1)
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s %d %s", time.Now().Format("15:04:05.000"), code, body))
				mu.Unlock()
			}
		}
	}()
	time.Sleep(time.Second)
	start := time.Now()
	change()
	time.Sleep(3 * time.Second) // requests after the change settles count too
	close(stop)
	<-done
	t.Logf("%s: %d requests over %s, %d failed", what, sent.Load(), time.Since(start).Round(time.Millisecond), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%s: %d of %d requests failed:\n%s", what, failed.Load(), sent.Load(), strings.Join(failures, "\n"))
	}
}

// outsider runs the demo frontend in a namespace without injection: its plaintext call to the
// backend Service must be refused by the backend's proxy.
// globalLimit: the demo's /admin/export allows each user 3 requests a minute across both
// backend proxies, whichever control plane replica each proxy's rate limit call reaches: with
// buckets per proxy or per replica, or Redis unreachable (the limit fails open), more pass.
func (m *mesh) globalLimit(t *testing.T) {
	user := func(sub string) http.Header {
		token, err := m.demo.IDP.Token(sub, []string{"admin"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + token}}
	}
	carol := user(fmt.Sprintf("carol-%d", time.Now().UnixNano()))
	var codes []int
	for range 8 {
		code, body, h := m.call("/admin/export", carol)
		if code != http.StatusOK && code != http.StatusTooManyRequests {
			t.Fatalf("GET /admin/export: %d %s %v", code, body, h)
		}
		codes = append(codes, code)
		time.Sleep(50 * time.Millisecond) // well inside each proxy's Local limit
	}
	if want := []int{200, 200, 200, 429, 429, 429, 429, 429}; !slices.Equal(codes, want) {
		t.Fatalf("8 exports by one user: %v, want %v (3 a minute, across every proxy)", codes, want)
	}
	if code, body, _ := m.call("/admin/export", user(fmt.Sprintf("dave-%d", time.Now().UnixNano()))); code != http.StatusOK {
		t.Fatalf("another user's first export: %d %s, want 200 (a bucket of their own)", code, body)
	}
}

func (m *mesh) outsider(t *testing.T) {
	t.Helper()
	const ns = "outside"
	k := m.demo.Client
	if _, err := k.CoreV1().Namespaces().Create(m.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "intruder", Labels: map[string]string{"app": "intruder"}},
		Spec: corev1.PodSpec{
			SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](10001)},
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "app", Image: images.Repository + "portcullis:latest", ImagePullPolicy: corev1.PullIfNotPresent,
				Args:           []string{"demo-app", "frontend", "--listen=0.0.0.0:8080", "--upstream=http://backend.demo.svc:8080"},
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
			}},
		},
	}
	if _, err := k.CoreV1().Pods(ns).Create(m.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, time.Minute, func() error {
		p, err := k.CoreV1().Pods(ns).Get(m.ctx, "intruder", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	}, "the pod outside the mesh ready")
	if len(m.pods(t, ns, "app=intruder")[0].Spec.InitContainers) > 0 {
		t.Fatal("the pod outside the mesh was injected")
	}
	addr := m.forward(t, ns, "app=intruder")
	code, body, _ := callAt(addr, "/api/items", nil)
	if code != http.StatusBadGateway {
		t.Fatalf("plaintext from outside the mesh: %d %s; want the connection refused (502 from the caller)", code, body)
	}
	t.Logf("plaintext from outside the mesh: %d %s", code, body)
}

// probesRewritten checks that the demo pods' probes point at the agent, and that the pods are
// ready: the agent ran the applications' probes.
func (m *mesh) probesRewritten(t *testing.T) {
	t.Helper()
	for _, p := range m.pods(t, clustermesh.DemoNamespace, "app in (frontend, backend)") {
		probe := p.Spec.Containers[0].ReadinessProbe
		if probe == nil || probe.HTTPGet == nil || !strings.HasPrefix(probe.HTTPGet.Path, "/app-health/") {
			t.Errorf("pod %s: readiness probe %+v not rewritten to the agent", p.Name, probe)
		}
		ready := false
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "app" {
				ready = cs.Ready
			}
		}
		if !ready {
			t.Errorf("pod %s: application not ready", p.Name)
		}
	}
}

// trace finds an allowed request's trace in the cluster's Jaeger by its decision id: the
// frontend's outbound span, the backend's inbound span and the authorization Check.
func (m *mesh) trace(t *testing.T) {
	t.Helper()
	code, body, h := m.call("/api/items", nil)
	id := h.Get("x-portcullis-decision-id")
	if code != http.StatusOK || id == "" {
		t.Fatalf("GET /api/items: %d %s, decision id %q", code, body, id)
	}
	svc, err := m.demo.Client.CoreV1().Services(clustermesh.SystemNamespace).Get(m.ctx, "jaeger", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j := &tracetest.Jaeger{QueryURL: "http://" + svc.Spec.ClusterIP + ":16686", Client: m.c.HTTPClient()}
	// deploy/'s Jaeger serves the real UI, not the placeholder of a Go-module build.
	if resp, err := j.Client.Get(j.QueryURL + "/search"); err != nil {
		t.Errorf("Jaeger UI: %v", err)
	} else {
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), "<title>Jaeger UI</title>") {
			t.Errorf("Jaeger at %s/search serves no UI: %.300s", j.QueryURL, page)
		}
	}
	proctest.Eventually(t, time.Minute, func() error {
		spans := j.Spans(t)
		var check tracetest.Span
		for _, s := range spans {
			if s.Name == "authz.Check" && s.Attrs["authz.decision_id"] == id {
				check = s
			}
		}
		if check.SpanID == "" {
			return fmt.Errorf("no Check span for decision %s among %d spans", id, len(spans))
		}
		trace := tracetest.Trace(spans, check.TraceID)
		for _, want := range [][2]string{{"frontend", "outbound backend.demo"}, {"backend", "inbound backend.demo"}} {
			if _, ok := tracetest.Find(trace, want[0], want[1]); !ok {
				var names []string
				for _, s := range trace {
					names = append(names, s.Service+": "+s.Name)
				}
				return fmt.Errorf("trace %s has no %s span %q: %v", check.TraceID, want[0], want[1], names)
			}
		}
		return nil
	}, "the request's trace across both proxies and the Check")
}

// policyEdit moves the backend's DENY from /debug/* to /api/secret/*: a path the ALLOW rule
// admitted is denied within seconds of the edit.
func (m *mesh) policyEdit(t *testing.T) {
	t.Helper()
	if code, body, _ := m.call("/api/secret/plans", nil); code != http.StatusOK {
		t.Fatalf("before the edit: /api/secret/plans %d %s, want 200", code, body)
	}
	patch := `{"spec":{"rules":[{"name":"no-secrets","to":{"paths":["/api/secret/*"]}}]}}`
	if _, err := m.demo.Dynamic.Resource(clustermesh.AuthorizationPolicies).Namespace(clustermesh.DemoNamespace).Patch(m.ctx,
		"backend-deny-debug", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	took := proctest.Eventually(t, 30*time.Second, func() error {
		if code, _, _ := m.call("/api/secret/plans", nil); code != http.StatusForbidden {
			return fmt.Errorf("/api/secret/plans: %d", code)
		}
		return nil
	}, "the edited policy")
	t.Logf("policy edit applied within %s", took.Round(time.Millisecond))
	// Its status counts the proxies the policy reaches (the backends), whichever replica serves
	// them, at the edited generation.
	backends := len(m.pods(t, clustermesh.DemoNamespace, "app=backend"))
	want := fmt.Sprintf("programmed on %d of %d proxies", backends, backends)
	took = proctest.Eventually(t, 30*time.Second, func() error {
		u, err := m.demo.Dynamic.Resource(clustermesh.AuthorizationPolicies).Namespace(clustermesh.DemoNamespace).Get(m.ctx, "backend-deny-debug", metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			c, _ := c.(map[string]any)
			if c["type"] != v1alpha1.ConditionProgrammed {
				continue
			}
			gen, _ := c["observedGeneration"].(int64)
			if c["status"] == "True" && c["message"] == want && gen == u.GetGeneration() {
				return nil
			}
			return fmt.Errorf("Programmed %v %q at generation %d of %d, want True %q", c["status"], c["message"], gen, u.GetGeneration(), want)
		}
		return fmt.Errorf("no Programmed condition: %v", conds)
	}, "the edited policy's status")
	t.Logf("status %q %s after the edit took effect; per replica: %s", want, took.Round(time.Millisecond), m.reports())
}

// reports are the replicas' own counts of the edited policy, as they report them.
func (m *mesh) reports() string {
	cms, err := m.demo.Client.CoreV1().ConfigMaps(clustermesh.SystemNamespace).List(m.ctx, metav1.ListOptions{LabelSelector: kube.ReportLabel + "=programmed"})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, cm := range cms.Items {
		var r kube.Report
		if err := json.Unmarshal([]byte(cm.Data["report.json"]), &r); err != nil {
			out = append(out, cm.Name+": "+err.Error())
			continue
		}
		for name, d := range r.Documents {
			if strings.Contains(name, "backend-deny-debug") {
				out = append(out, fmt.Sprintf("%s: %+v", r.Replica, d))
			}
		}
	}
	return strings.Join(out, "; ")
}

// scale scales the backend to 3 and back to 1: every instance answers, then only one.
func (m *mesh) scale(t *testing.T) {
	t.Helper()
	answering := func() map[string]bool {
		names := map[string]bool{}
		for range 30 {
			code, body, _ := m.call("/api/items", nil)
			var a struct{ Service string }
			if code == http.StatusOK && json.Unmarshal([]byte(body), &a) == nil {
				names[a.Service] = true
			}
		}
		return names
	}
	for _, n := range []int32{3, 1, 2} {
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
		if _, err := m.demo.Client.AppsV1().Deployments(clustermesh.DemoNamespace).Patch(m.ctx, "backend", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := clustermesh.WaitAvailable(m.ctx, m.demo.Client, clustermesh.DemoNamespace, "backend", n); err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, p := range m.pods(t, clustermesh.DemoNamespace, "app=backend") {
			want[p.Name] = true
		}
		took := proctest.Eventually(t, 30*time.Second, func() error {
			got := answering()
			time.Sleep(2 * time.Second) // the rate limit's bucket
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("answering %v, want %v", keys(got), keys(want))
			}
			return nil
		}, fmt.Sprintf("EDS at %d backends", n))
		t.Logf("backend at %d replicas: every one answering within %s", n, took.Round(time.Millisecond))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
