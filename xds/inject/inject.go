package inject

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/portcullis/portcullis/xds/inject/redirect"
	"github.com/portcullis/portcullis/xds/source/kube/apis/v1alpha1"
)

// ErrRefused wraps the reasons a pod that asked for the mesh cannot get it.
var ErrRefused = errors.New("inject: pod cannot be injected")

// Wanted reports whether a pod asks for the sidecar: its annotation decides ("true"/"false"),
// else its namespace's label.
func Wanted(pod *corev1.Pod, nsLabels map[string]string) bool {
	switch pod.Annotations[v1alpha1.AnnotationInject] {
	case "true":
		return true
	case "false":
		return false
	}
	return nsLabels[v1alpha1.LabelInject] == v1alpha1.InjectEnabled
}

// Injected reports whether the injector already changed the pod.
func Injected(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[v1alpha1.AnnotationInjected]; ok {
		return true
	}
	return slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == ProxyContainerName })
}

// Inject returns the pod with the mesh added, or an error wrapping ErrRefused saying why it
// cannot be. The pod given is not modified.
func (c *Config) Inject(in *corev1.Pod) (*corev1.Pod, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := refusal(in); err != nil {
		return nil, err
	}
	redirect, err := c.redirect(in)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	pod := in.DeepCopy()
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[v1alpha1.AnnotationInjected] = cmp.Or(c.Version, "dev")
	// The projected token needs the account named; the ServiceAccount admission plugin would
	// default it the same way, but may not have run (or be enabled) before this webhook.
	pod.Spec.ServiceAccountName = cmp.Or(pod.Spec.ServiceAccountName, "default")
	// The kubelet's plaintext probes would be redirected into the proxy and refused: the agent
	// runs them instead.
	probeEnv, err := appProbesEnv(rewriteProbes(pod))
	if err != nil {
		return nil, err
	}
	proxy := c.proxyContainer()
	proxy.Env = append(proxy.Env, probeEnv...)
	// The init container first, the sidecar second: both run before any init container of the
	// application, so even those have the mesh.
	pod.Spec.InitContainers = append([]corev1.Container{c.initContainer(redirect), proxy}, pod.Spec.InitContainers...)
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: SocketVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: "portcullis", ExpirationSeconds: ptr.To(max(cmp.Or(c.TokenExpirySeconds, 3600), 600)), Path: "token",
			}}},
		}}},
	)
	// Applications reach the SPIFFE Workload API through the agent's socket.
	for i := range pod.Spec.Containers {
		ct := &pod.Spec.Containers[i]
		ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: SocketVolume, MountPath: SocketDir, ReadOnly: true})
		if !slices.ContainsFunc(ct.Env, func(e corev1.EnvVar) bool { return e.Name == "SPIFFE_ENDPOINT_SOCKET" }) {
			ct.Env = append(ct.Env, corev1.EnvVar{Name: "SPIFFE_ENDPOINT_SOCKET", Value: "unix://" + SocketDir + "/workload.sock"})
		}
	}
	return pod, nil
}

// refusal says why a pod cannot be meshed, or nil.
func refusal(pod *corev1.Pod) error {
	if pod.Spec.HostNetwork {
		return fmt.Errorf("%w: it uses the host network, where redirecting traffic would capture the node's (set portcullis.dev/inject: \"false\")", ErrRefused)
	}
	all := append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
	for _, ct := range all {
		for _, p := range ct.Ports {
			if slices.Contains(reservedPorts, p.ContainerPort) {
				return fmt.Errorf("%w: container %q uses port %d, which the proxy needs (reserved: 15000, 15001, 15006, 15021)", ErrRefused, ct.Name, p.ContainerPort)
			}
		}
		if uid := runAsUser(pod, ct); uid != nil && *uid == ProxyUID {
			return fmt.Errorf("%w: container %q runs as UID %d, the proxy's, so its traffic would bypass the mesh", ErrRefused, ct.Name, ProxyUID)
		}
	}
	return nil
}

func runAsUser(pod *corev1.Pod, ct corev1.Container) *int64 {
	if ct.SecurityContext != nil && ct.SecurityContext.RunAsUser != nil {
		return ct.SecurityContext.RunAsUser
	}
	if pod.Spec.SecurityContext != nil {
		return pod.Spec.SecurityContext.RunAsUser
	}
	return nil
}

// redirect is the pod's redirection: the defaults and the pod's exclusion annotations.
func (c *Config) redirect(pod *corev1.Pod) (redirect.Redirect, error) {
	r := redirect.Redirect{InboundPort: InboundPort, OutboundPort: OutboundPort, ProxyUID: ProxyUID}
	var err error
	if r.ExcludeInboundPorts, err = redirect.ParsePorts(pod.Annotations[AnnotationExcludeInboundPorts]); err != nil {
		return r, fmt.Errorf("annotation %s: %w", AnnotationExcludeInboundPorts, err)
	}
	if r.ExcludeOutboundPorts, err = redirect.ParsePorts(pod.Annotations[AnnotationExcludeOutboundPorts]); err != nil {
		return r, fmt.Errorf("annotation %s: %w", AnnotationExcludeOutboundPorts, err)
	}
	cidrs, err := redirect.ParseCIDRs(pod.Annotations[AnnotationExcludeOutboundCIDRs])
	if err != nil {
		return r, fmt.Errorf("annotation %s: %w", AnnotationExcludeOutboundCIDRs, err)
	}
	for _, s := range c.ExcludeOutboundCIDRs {
		if p, err := netip.ParsePrefix(s); err == nil && !slices.Contains(cidrs, p.Masked()) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	r.ExcludeOutboundCIDRs = cidrs
	return r, nil
}

// initContainer installs the redirection: root with NET_ADMIN and NET_RAW for the nat table,
// nothing else, and it exits before the application starts.
func (c *Config) initContainer(r redirect.Redirect) corev1.Container {
	return corev1.Container{
		Name:            InitContainerName,
		Image:           c.Image,
		ImagePullPolicy: c.ImagePullPolicy,
		Command:         append([]string{"portcullis-agent", "init-iptables"}, r.Args()...), // the sidecar build has it
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("10m"), corev1.ResourceMemory: mustQuantity("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: mustQuantity("64Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// proxyContainer is the agent supervising Envoy, as a native sidecar: it starts before the
// application containers, whose start waits for its startup probe (the agent's /readyz: an SVID
// and Envoy with its first configuration), and it stops after them.
func (c *Config) proxyContainer() corev1.Container {
	args := []string{"agent",
		"--controlplane", c.ControlPlane,
		"--k8s-token-file", TokenFile,
		"--trust-domain", c.TrustDomain,
		"--socket-dir", SocketDir,
		// Applications run as other UIDs than the proxy: the sockets are the pod's own volume.
		"--socket-mode", "0666",
		"--no-persist",
		"--admin-addr", fmt.Sprintf("0.0.0.0:%d", AgentAdminPort),
		"--envoy-path", cmp.Or(c.EnvoyPath, "/usr/local/bin/envoy"),
		"--envoy-admin-addr", fmt.Sprintf("127.0.0.1:%d", EnvoyAdminPort),
		"--workload", "$(POD_NAME)",
		"--mode", "Transparent",
		"--address", "$(POD_IP)",
		"--log-format", "json",
	}
	pins := c.Pins()
	slices.Sort(pins)
	for _, p := range pins {
		args = append(args, "--ca-pin", p)
	}
	probe := func(failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(AgentAdminPort)}},
			PeriodSeconds:    1,
			FailureThreshold: failures,
			TimeoutSeconds:   1,
		}
	}
	startup, ready := probe(600), probe(3)
	ready.PeriodSeconds = 5
	return corev1.Container{
		Name:            ProxyContainerName,
		Image:           c.Image,
		ImagePullPolicy: c.ImagePullPolicy,
		Command:         []string{"portcullis-agent"}, // the sidecar build: the agent alone
		Args:            args,
		RestartPolicy:   ptr.To(corev1.ContainerRestartPolicyAlways),
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		},
		Ports:          []corev1.ContainerPort{{Name: "pc-admin", ContainerPort: AgentAdminPort, Protocol: corev1.ProtocolTCP}},
		Resources:      c.resources(),
		StartupProbe:   startup,
		ReadinessProbe: ready,
		VolumeMounts: []corev1.VolumeMount{
			{Name: SocketVolume, MountPath: SocketDir},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: ptr.To[int64](ProxyUID), RunAsGroup: ptr.To[int64](ProxyUID), RunAsNonRoot: ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// describe names a pod for messages; generateName pods have no name yet at admission.
func describe(pod *corev1.Pod) string {
	return pod.Namespace + "/" + cmp.Or(pod.Name, strings.TrimSuffix(pod.GenerateName, "-")+"-*")
}
