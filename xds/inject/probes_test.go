package inject_test

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/portcullis/portcullis/xds/inject"
	"github.com/portcullis/portcullis/xds/inject/appprobe"
)

// TestInjectRewritesApplicationProbes checks that the kubelet's probes go to the agent (whose
// port is not redirected into the STRICT inbound listener) and that the agent gets the originals.
func TestInjectRewritesApplicationProbes(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name:  "web",
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{TimeoutSeconds: 3, ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/ready", Port: intstr.FromString("http"), HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "1"}}}}},
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
		StartupProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
	}, {
		Name:           "other-host",
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "10.0.0.9", Port: intstr.FromInt32(80)}}},
	}}}}
	out, err := testConfig().Inject(pod)
	if err != nil {
		t.Fatal(err)
	}
	web := out.Spec.Containers[0]
	for kind, p := range map[string]*corev1.Probe{"readyz": web.ReadinessProbe, "livez": web.LivenessProbe} {
		g := p.HTTPGet
		if g == nil || g.Port.IntVal != inject.AgentAdminPort || g.Path != appprobe.Path("web", kind) {
			t.Errorf("%s probe of web not rewritten to the agent: %+v", kind, p.ProbeHandler)
		}
	}
	if web.ReadinessProbe.TimeoutSeconds != 3 {
		t.Errorf("readiness timeout %d, want the original 3", web.ReadinessProbe.TimeoutSeconds)
	}
	if web.StartupProbe.Exec == nil {
		t.Error("an exec probe runs in the container and must stay as it is")
	}
	if h := out.Spec.Containers[1].ReadinessProbe.HTTPGet; h.Port.IntVal != 80 || h.Host != "10.0.0.9" {
		t.Errorf("a probe of another host must stay as it is: %+v", h)
	}
	if pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.StrVal != "http" {
		t.Error("Inject modified the pod it was given")
	}

	var env string
	for _, ct := range out.Spec.InitContainers {
		if ct.Name != inject.ProxyContainerName {
			continue
		}
		for _, e := range ct.Env {
			if e.Name == appprobe.Env {
				env = e.Value
			}
		}
	}
	probes, err := appprobe.Parse(env)
	if err != nil {
		t.Fatal(err)
	}
	want := appprobe.Probes{
		appprobe.Path("web", "readyz"): {TimeoutSeconds: 3, HTTPGet: &appprobe.HTTPGet{Path: "/ready", Port: 8080, Headers: []appprobe.Header{{Name: "X-Probe", Value: "1"}}}},
		appprobe.Path("web", "livez"):  {TCPSocket: &appprobe.TCP{Port: 8080}},
	}
	got, _ := json.Marshal(probes)
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		t.Errorf("the agent gets %s, want %s", got, wantJSON)
	}
}
