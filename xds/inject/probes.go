package inject

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/portcullis/portcullis/xds/inject/appprobe"
)

// rewriteProbes points every HTTP, TCP and gRPC probe of the application containers at the
// agent's admin port and returns the originals by agent path (see package appprobe). A probe
// with an explicit host, or a named port the container does not declare, is left as it is.
func rewriteProbes(pod *corev1.Pod) appprobe.Probes {
	out := appprobe.Probes{}
	for i := range pod.Spec.Containers {
		ct := &pod.Spec.Containers[i]
		for kind, probe := range map[string]*corev1.Probe{"livez": ct.LivenessProbe, "readyz": ct.ReadinessProbe, "startupz": ct.StartupProbe} {
			if probe == nil {
				continue
			}
			orig, ok := original(ct, probe)
			if !ok {
				continue
			}
			path := appprobe.Path(ct.Name, kind)
			out[path] = orig
			probe.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(AgentAdminPort), Scheme: corev1.URISchemeHTTP}}
		}
	}
	return out
}

func original(ct *corev1.Container, p *corev1.Probe) (appprobe.Probe, bool) {
	orig := appprobe.Probe{TimeoutSeconds: p.TimeoutSeconds}
	switch {
	case p.HTTPGet != nil:
		port, ok := containerPort(ct, p.HTTPGet.Port)
		if !ok || p.HTTPGet.Host != "" {
			return orig, false
		}
		g := &appprobe.HTTPGet{Path: p.HTTPGet.Path, Port: port, HTTPS: p.HTTPGet.Scheme == corev1.URISchemeHTTPS}
		for _, h := range p.HTTPGet.HTTPHeaders {
			g.Headers = append(g.Headers, appprobe.Header{Name: h.Name, Value: h.Value})
		}
		orig.HTTPGet = g
	case p.TCPSocket != nil:
		port, ok := containerPort(ct, p.TCPSocket.Port)
		if !ok || p.TCPSocket.Host != "" {
			return orig, false
		}
		orig.TCPSocket = &appprobe.TCP{Port: port}
	case p.GRPC != nil:
		g := &appprobe.GRPC{Port: p.GRPC.Port}
		if p.GRPC.Service != nil {
			g.Service = *p.GRPC.Service
		}
		orig.GRPC = g
	default:
		return orig, false // exec probes run inside the container: nothing to redirect
	}
	return orig, true
}

// containerPort resolves a probe's port, by number or by the name of a container port.
func containerPort(ct *corev1.Container, port intstr.IntOrString) (int32, bool) {
	if port.Type == intstr.Int {
		return port.IntVal, port.IntVal > 0
	}
	for _, p := range ct.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// appProbesEnv is the agent's environment variable carrying the originals.
func appProbesEnv(ps appprobe.Probes) ([]corev1.EnvVar, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(ps)
	if err != nil {
		return nil, fmt.Errorf("inject: application probes: %w", err)
	}
	return []corev1.EnvVar{{Name: appprobe.Env, Value: string(b)}}, nil
}
