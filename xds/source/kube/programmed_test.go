package kube_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portcullis/portcullis/test/kubetest"
	"github.com/portcullis/portcullis/test/proctest"
	"github.com/portcullis/portcullis/xds/model"
	"github.com/portcullis/portcullis/xds/snapshot"
	"github.com/portcullis/portcullis/xds/source/kube"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// TestProgrammedAcrossReplicas: two control-plane replicas, each with its own source, ledger,
// ADS and real Envoys, publish their counts; the leader's status writer sums them per document.
// A policy of api counts api's proxies on both replicas; documents no proxy uses say so. A
// generation Envoy refuses (a listener on a taken port) is refused there, while what the refused
// listener shares with the one Envoy keeps (the Mesh, the services) stays programmed. An edit
// shows Pending for its new generation until every proxy has ACKed it, while the documents
// sharing its routes stay programmed. Reports of a replica that is gone (its pod deleted) or
// stale are left out.
func TestProgrammedAcrossReplicas(t *testing.T) {
	env := kubetest.Require(t, &api)
	ns := newNamespace(t, env, "programmed")
	cp := controlPlaneNamespace(t, env, "programmed-cp", "replica-a", "replica-b")
	webOutbound := proctest.FreePort(t)
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: %[1]s}
spec: {serviceAccounts: [api], ports: [{name: http, port: 8080}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec: {serviceAccounts: [web], ports: [{name: http, port: 8081}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Service
metadata: {name: idle, namespace: %[1]s}
spec: {serviceAccounts: [idle], ports: [{name: http, port: 8082}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: api-1, namespace: %[1]s}
spec: {service: api, inboundPort: %[2]d, appPort: 8080}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: api-2, namespace: %[1]s}
spec: {service: api, inboundPort: %[3]d, appPort: 8080}
---
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: %[1]s}
spec: {service: web, inboundPort: %[4]d, appPort: 8081, upstreams: [{service: api, localPort: %[5]d}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow, namespace: %[1]s}
spec: {selector: {service: api}, action: ALLOW, rules: [{to: {methods: [GET]}}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: idle-allow, namespace: %[1]s}
spec: {selector: {service: idle}, action: ALLOW, rules: [{to: {methods: [GET]}}]}
---
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-limit, namespace: %[1]s}
spec: {selector: {service: api}, limits: [{name: all, bucket: {maxTokens: 10, fillInterval: 1s}}]}
`, ns, proctest.FreePort(t), proctest.FreePort(t), proctest.FreePort(t), webOutbound), true)

	// What a replica that stopped writing left behind (a control plane run outside the cluster,
	// whose report no pod owns, killed).
	leftover := func(name string, updated time.Time) {
		rep, err := json.Marshal(kube.Report{Replica: name, Updated: updated, Documents: map[string]kube.ReportedDocument{
			"AuthorizationPolicy/" + ns + "/api-allow": {Generation: 1, DocumentCount: snapshot.DocumentCount{Proxies: 5, Programmed: 5}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		create(t, env.Client.CoreV1().ConfigMaps(cp).Create, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: kube.ReportPrefix + name, Namespace: cp, Labels: map[string]string{kube.ReportLabel: "programmed"}},
			Data:       map[string]string{"report.json": string(rep)},
		})
	}
	leftover("replica-stale", time.Now().Add(-time.Hour))

	a := startPlane(t, env)
	b := servePlane(t, env, startSource(t, env, 5*time.Millisecond), 5*time.Millisecond)
	id := func(sa string) spiffeid.ID {
		return spiffeid.RequireFromString("spiffe://example.org/ns/" + ns + "/sa/" + sa)
	}
	a.startEnvoy(t, "api-1."+ns, id("api"))
	a.startEnvoy(t, "web-1."+ns, id("web"))
	api2 := b.startEnvoy(t, "api-2."+ns, id("api"))
	startReporter(t, env, a, cp, "replica-a")
	stopB := startReporter(t, env, b, cp, "replica-b")
	startStatusWriter(t, env, a.src, cp)

	type want struct {
		status          metav1.ConditionStatus
		reason, message string
	}
	programmed := func(n, m int) want {
		return want{metav1.ConditionTrue, kube.ReasonProgrammed, fmt.Sprintf("programmed on %d of %d proxies", n, m)}
	}

	unused := want{metav1.ConditionFalse, kube.ReasonNoProxies, "programmed on 0 of 0 proxies: no proxy uses it"}
	check := func(docs map[objectRef]want) {
		t.Helper()
		for r, w := range docs {
			waitCondition(t, env, r, v1alpha1.ConditionProgrammed, w.status, w.reason, w.message)
		}
	}
	ref := func(kind, name string) objectRef { return objectRef{kind, ns, name} }
	mesh := objectRef{model.KindMesh, "", "default"}

	both := map[objectRef]want{
		ref(model.KindAuthorizationPolicy, "api-allow"):  programmed(2, 2), // api-1 on a, api-2 on b
		ref(model.KindRateLimitPolicy, "api-limit"):      programmed(2, 2),
		ref(model.KindWorkload, "api-1"):                 programmed(1, 1),
		ref(model.KindWorkload, "api-2"):                 programmed(1, 1),
		ref(model.KindService, "api"):                    programmed(3, 3), // web-1 calls it
		mesh:                                             programmed(3, 3),
		ref(model.KindWorkload, "web-1"):                 programmed(1, 1),
		ref(model.KindService, "web"):                    programmed(1, 1),
		ref(model.KindAuthorizationPolicy, "idle-allow"): unused,
		ref(model.KindService, "idle"):                   unused,
	}
	check(both)

	// web-1 moves its inbound listener to a port that is taken: Envoy refuses the listeners and
	// keeps those it has, which carry the Mesh and the services as they are.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: %s}
spec: {service: web, inboundPort: %d, appPort: 8081, upstreams: [{service: api, localPort: %d}]}
`, ns, taken.Addr().(*net.TCPAddr).Port, webOutbound), false)
	both[ref(model.KindWorkload, "web-1")] = want{metav1.ConditionFalse, kube.ReasonRefused, "programmed on 0 of 1 proxies; 1 refused it"}
	check(both)

	// An edit while api-2's Envoy does not answer: the new generation of the rate limit is
	// pending on it, and programmed once it has ACKed; the policy and the service on the same
	// routes stay as they were.
	api2.Pause()
	apply(t, env, fmt.Sprintf(`
apiVersion: portcullis.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-limit, namespace: %s}
spec: {selector: {service: api}, limits: [{name: all, bucket: {maxTokens: 20, fillInterval: 1s}}]}
`, ns), false)
	limit := ref(model.KindRateLimitPolicy, "api-limit")
	waitCondition(t, env, limit, v1alpha1.ConditionProgrammed, metav1.ConditionFalse, kube.ReasonPending, "programmed on 1 of 2 proxies")
	if g := generation(t, env, limit); g != 2 {
		t.Fatalf("the edit is generation %d", g)
	}
	check(map[objectRef]want{ref(model.KindAuthorizationPolicy, "api-allow"): programmed(2, 2), ref(model.KindService, "api"): programmed(3, 3)})
	api2.Resume()
	waitCondition(t, env, limit, v1alpha1.ConditionProgrammed, metav1.ConditionTrue, kube.ReasonProgrammed, "programmed on 2 of 2 proxies")

	// Replica b's pod goes (its report stays while the reporter runs, as when a replica is
	// killed): its proxies leave the totals.
	if err := env.Client.CoreV1().Pods(cp).Delete(context.Background(), "replica-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	both[ref(model.KindAuthorizationPolicy, "api-allow")] = programmed(1, 1)
	both[limit] = programmed(1, 1)
	both[ref(model.KindWorkload, "api-2")] = unused
	both[ref(model.KindService, "api")] = programmed(2, 2)
	both[mesh] = programmed(2, 2)
	check(both)

	// A replica that stops deletes its report.
	stopB()
	if _, err := env.Client.CoreV1().ConfigMaps(cp).Get(context.Background(), kube.ReportPrefix+"replica-b", metav1.GetOptions{}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("replica-b's report after it stopped: %v", err)
	}
}

// generation returns a custom resource's metadata.generation.
func generation(t *testing.T, env *kubetest.Env, r objectRef) int64 {
	t.Helper()
	u, err := crs(env, r.kind, r.namespace).Get(context.Background(), r.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u.GetGeneration()
}
