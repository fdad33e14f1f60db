package kube_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source/kube"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// TestStatusConditions: the status writer marks valid resources Accepted and, once the real
// Envoy has ACKed the mesh they are in, Programmed "on 1 of 1 proxies"; a resource that is
// valid on its own but refers to a missing service is Accepted=False with the validation
// message and not programmed, while the rest stays live; one whose reach the namespace rules
// changed is Accepted with a warning, and programmed. Neither the status writes nor changes
// the mesh does not read (pod status, annotations, service accounts) rebuild the mesh or push
// anything to the proxy.
func TestStatusConditions(t *testing.T) {
	env := kubetest.Require(t, &api)
	ns := newNamespace(t, env, "status")
	ctx := context.Background()
	create(t, env.Client.CoreV1().ServiceAccounts(ns).Create, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns}})
	createPod(t, env, ns, "api-0", "api", true)
	cp := controlPlaneNamespace(t, env, "status-cp", "controlplane-0")
	p := startPlane(t, env)
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: %[1]s}
spec: {serviceAccounts: [api], ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: %[1]s}
spec: {service: api, inboundPort: %[2]d, appPort: 8080}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: %[1]s}
spec: {selector: {service: api}, action: ALLOW, rules: [{to: {methods: [GET]}}]}
`, ns, proctest.FreePort(t)), true)
	valid := []objectRef{{model.KindMesh, "", "default"}, {model.KindService, ns, "api"}, {model.KindWorkload, ns, "api-1"}, {model.KindAuthorizationPolicy, ns, "allow-get"}}
	p.startEnvoy(t, "api-1."+ns, spiffeid.RequireFromString("spiffe://example.org/ns/"+ns+"/sa/api"))
	waitFor(t, 15*time.Second, "the Envoy to ACK the live mesh", func() bool {
		counts, _ := p.ledger.Documents(p.src.Status().Version)
		return counts["Workload/"+ns+"/api-1"] == snapshot.DocumentCount{Proxies: 1, Programmed: 1}
	})
	// What the proxy has, and the source's last rebuild, before any status is written — once every
	// type it was sent is ACKed: a make test run saw the document programmed while the routes' and
	// ECDS's ACKs were still 10 ms away, and took their arrival for a new push.
	waitFor(t, 15*time.Second, "every type sent ACKed", func() bool {
		for _, ps := range p.ledger.Status() {
			for _, ts := range ps.Types {
				if ts.Acked != ts.Sent {
					return false
				}
			}
		}
		return true
	})
	rebuilt := p.src.Status().LastAttempt
	pushed := p.ledger.Status()

	startReporter(t, env, p, cp, "controlplane-0")
	startStatusWriter(t, env, p.src, cp)
	for _, r := range valid {
		waitCondition(t, env, r, v1alpha1.ConditionAccepted, metav1.ConditionTrue, kube.ReasonAccepted, "valid")
		waitCondition(t, env, r, v1alpha1.ConditionProgrammed, metav1.ConditionTrue, kube.ReasonProgrammed, "programmed on 1 of 1 proxies")
	}

	// Changes the mesh does not read: a pod's status (the kubelet's heartbeats), annotations, a
	// service account no pod runs as.
	pod, err := env.Client.CoreV1().Pods(ns).Get(ctx, "api-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP, pod.Status.Phase = "10.2.0.1", corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	update(t, env.Client.CoreV1().Pods(ns).UpdateStatus, pod)
	nsObj, err := env.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Annotations = map[string]string{"example.org/owner": "tests"}
	update(t, env.Client.CoreV1().Namespaces().Update, nsObj)
	create(t, env.Client.CoreV1().ServiceAccounts(ns).Create, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "unused", Namespace: ns}})

	time.Sleep(500 * time.Millisecond) // ten status passes, many debounce periods
	if got := p.src.Status().LastAttempt; !got.Equal(rebuilt) {
		t.Errorf("the source rebuilt at %s after status writes and status-only changes (last build %s)", got, rebuilt)
	}
	assertNoPush(t, pushed, p.ledger.Status())

	// Valid on its own (the API server accepts it), invalid with the rest of the mesh.
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-missing, namespace: %s}
spec: {selector: {service: missing}, action: ALLOW, rules: [{to: {methods: [GET]}}]}
`, ns), true)
	bad := objectRef{model.KindAuthorizationPolicy, ns, "allow-missing"}
	waitCondition(t, env, bad, v1alpha1.ConditionAccepted, metav1.ConditionFalse, kube.ReasonInvalid,
		`spec.selector.service: Service "missing" not found in namespace "`+ns+`"`)
	waitCondition(t, env, bad, v1alpha1.ConditionProgrammed, metav1.ConditionFalse, kube.ReasonNotLive,
		"not in the live mesh: this resource is invalid; the last good mesh stays live")
	for _, r := range valid {
		waitCondition(t, env, r, v1alpha1.ConditionAccepted, metav1.ConditionTrue, kube.ReasonAccepted, "valid")
		waitCondition(t, env, r, v1alpha1.ConditionProgrammed, metav1.ConditionTrue, kube.ReasonProgrammed, "programmed on 1 of 1 proxies")
	}
	if st := p.src.Status(); len(st.Problems) != 1 {
		t.Errorf("problems: %v", st.Problems)
	}
	assertNoPush(t, pushed, p.ledger.Status())

	// Valid, but its reach changed: the API server accepted a policy without a selector, which
	// now applies to its own namespace only while another namespace has services. The mesh takes
	// it, and Accepted says what changed.
	if err := crs(env, bad.kind, bad.namespace).Delete(ctx, bad.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %s}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: audit-deletes, namespace: %s}
spec: {action: AUDIT, rules: [{to: {methods: [DELETE]}}]}
`, newNamespace(t, env, "status-other"), ns), true)
	waitCondition(t, env, objectRef{model.KindAuthorizationPolicy, ns, "audit-deletes"}, v1alpha1.ConditionAccepted, metav1.ConditionTrue, kube.ReasonAccepted,
		`valid; warning: spec.selector: without a selector this policy now applies only to namespace "`+ns+`"`)
	waitCondition(t, env, objectRef{model.KindAuthorizationPolicy, ns, "audit-deletes"}, v1alpha1.ConditionProgrammed, metav1.ConditionTrue, kube.ReasonProgrammed, "programmed on 1 of 1 proxies")
}

type objectRef struct{ kind, namespace, name string }

// controlPlaneNamespace creates a namespace for the control plane's objects with a pod for each
// replica named. Create it before the sources start: pods and namespaces are events they read.
func controlPlaneNamespace(t *testing.T, env *kubetest.Env, base string, pods ...string) string {
	t.Helper()
	cp := newNamespace(t, env, base)
	create(t, env.Client.CoreV1().ServiceAccounts(cp).Create, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "controlplane", Namespace: cp}})
	for _, pod := range pods {
		createPod(t, env, cp, pod, "controlplane", false)
	}
	return cp
}

// startReporter runs a replica's reporter for plane p, as pod of the control plane's namespace
// cp, until the test ends or stop is called.
func startReporter(t *testing.T, env *kubetest.Env, p *plane, cp, pod string) (stop func()) {
	t.Helper()
	r, err := kube.NewReporter(kube.ReporterOptions{Client: env.Client, Source: p.src, Proxies: p.ledger, Namespace: cp, Pod: pod,
		Interval: 50 * time.Millisecond, Refresh: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startStatusWriter runs the leader's status writer on src, summing the reports in cp, until the
// test ends.
func startStatusWriter(t *testing.T, env *kubetest.Env, src *kube.Source, cp string) {
	t.Helper()
	w := kube.NewStatusWriter(kube.StatusWriterOptions{Dynamic: env.Dynamic, Source: src, Client: env.Client, Namespace: cp,
		Interval: 50 * time.Millisecond, Stale: 3 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitCondition waits until a resource's status has the condition, for its current generation.
func waitCondition(t *testing.T, env *kubetest.Env, r objectRef, typ string, status metav1.ConditionStatus, reason, message string) {
	t.Helper()
	var last string
	waitForf(t, 10*time.Second, func() bool {
		u, err := crs(env, r.kind, r.namespace).Get(context.Background(), r.name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false
		}
		var cur struct {
			Status v1alpha1.Status `json:"status"`
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cur); err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(cur.Status.Conditions, typ)
		if c == nil {
			last = "no condition"
			return false
		}
		last = fmt.Sprintf("%s %s %q (generation %d, observed %d/%d)", c.Status, c.Reason, c.Message, u.GetGeneration(), c.ObservedGeneration, cur.Status.ObservedGeneration)
		return c.Status == status && c.Reason == reason && strings.Contains(c.Message, message) &&
			c.ObservedGeneration == u.GetGeneration() && cur.Status.ObservedGeneration == u.GetGeneration()
	}, func() string {
		return fmt.Sprintf("%s %s/%s: want %s %s %s %q, have %s", r.kind, r.namespace, r.name, typ, status, reason, message, last)
	})
}

// assertNoPush fails if anything was published or sent to a proxy since before.
func assertNoPush(t *testing.T, before, after []snapshot.ProxyStatus) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("proxies: %d before, %d after", len(before), len(after))
	}
	for i, b := range before {
		a := after[i]
		if a.MeshVersion != b.MeshVersion || len(a.Types) != len(b.Types) {
			t.Errorf("%s: mesh %s → %s, %d → %d types", b.Node, b.MeshVersion, a.MeshVersion, len(b.Types), len(a.Types))
		}
		for url, bt := range b.Types {
			at := a.Types[url]
			if at == nil || at.Published != bt.Published || !at.PublishedAt.Equal(bt.PublishedAt) || at.Sent != bt.Sent || at.Acked != bt.Acked {
				t.Errorf("%s %s: pushed again: before %+v, after %+v", b.Node, url, *bt, at)
			}
		}
	}
}
