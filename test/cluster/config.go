package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// layout is where one cluster keeps everything, all under its run directory.
type layout struct {
	dir string
}

func (l layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.dir}, elem...)...)
}

func (l layout) containerdSocket() string { return l.path("containerd", "containerd.sock") }

// files writes every configuration file and certificate, and returns the parts' command lines.
type files struct {
	pki                                      *pki
	admin, kubelet, kcm, scheduler, proxy    string // kubeconfigs inside the cluster's namespace
	caKey, saKey, saPub                      string
	apiserver, kubeletClient, kubeletServing issued
	frontProxy                               issued // the API server's, calling aggregated APIs
	containerd, cni, kubeletConfig           string
	proxyConfig, corefile                    string
}

// frontProxyUser is the only client the API server takes request headers (X-Remote-User) from.
const frontProxyUser = "front-proxy-client"

// internalServer is the API server's address inside the cluster's namespace.
var internalServer = "https://" + net.JoinHostPort(NodeIP, strconv.Itoa(APIServerPort))

func writeFiles(l layout, cg cgroup) (*files, error) {
	p, err := newPKI(l.path("pki"))
	if err != nil {
		return nil, err
	}
	f := &files{pki: p}
	if f.caKey, err = p.CAKeyFile(); err != nil {
		return nil, err
	}
	if f.saKey, f.saPub, err = p.serviceAccountKey(); err != nil {
		return nil, err
	}
	hosts := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(APIServiceIP)}
	if f.apiserver, err = p.server("apiserver", hosts, ips); err != nil {
		return nil, err
	}
	if f.kubeletServing, err = p.server("kubelet", []string{NodeName}, []net.IP{net.ParseIP(NodeIP)}); err != nil {
		return nil, err
	}
	if f.kubeletClient, err = p.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return nil, err
	}
	if f.frontProxy, err = p.client("front-proxy-client", frontProxyUser); err != nil {
		return nil, err
	}
	for _, k := range []struct {
		file         *string
		name, user   string
		groups       []string
		certBaseName string
	}{
		{&f.admin, "admin", "portcullis-admin", []string{"system:masters"}, "admin"},
		{&f.kubelet, "kubelet", "system:node:" + NodeName, []string{"system:nodes"}, "kubelet-client"},
		{&f.kcm, "controller-manager", "system:kube-controller-manager", nil, "controller-manager"},
		{&f.scheduler, "scheduler", "system:kube-scheduler", nil, "scheduler"},
		{&f.proxy, "proxy", "system:kube-proxy", nil, "proxy"},
	} {
		cert, err := p.client(k.certBaseName, k.user, k.groups...)
		if err != nil {
			return nil, err
		}
		*k.file = l.path("kubeconfig", k.name)
		if err := writeKubeconfig(*k.file, internalServer, p.CAFile(), cert); err != nil {
			return nil, err
		}
	}
	f.containerd = l.path("containerd", "config.toml")
	f.cni = l.path("cni", "net.d", "10-portcullis.conflist")
	f.kubeletConfig = l.path("kubelet", "config.yaml")
	f.proxyConfig = l.path("proxy", "config.yaml")
	f.corefile = l.path("coredns", "Corefile")
	for path, content := range map[string]string{
		f.containerd:    containerdConfig(l, cg),
		f.cni:           cniConfig(l),
		f.kubeletConfig: kubeletConfig(l, cg, f),
		f.proxyConfig:   proxyConfig(f),
		f.corefile:      corefile(f),
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	return f, nil
}

// writeKubeconfig writes a kubeconfig for server with a client certificate.
func writeKubeconfig(path, server, ca string, cert issued) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["portcullis"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: ca}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificate: cert.Cert, ClientKey: cert.Key}
	cfg.Contexts["portcullis"] = &clientcmdapi.Context{Cluster: "portcullis", AuthInfo: "user"}
	cfg.CurrentContext = "portcullis"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("cluster: kubeconfig %s: %w", path, err)
	}
	return nil
}

// containerdConfig: containerd 1.6 with its own root, state and socket; CRI with the pause
// image the harness imports, pod network namespaces under its state directory (not /run/netns,
// where other tests' `ip netns` live), restrict_oom_score_adj (root here lacks
// CAP_SYS_RESOURCE: lowering a sandbox's oom_score_adj fails every sandbox with "can't get final
// child's PID from pipe: EOF"), shims in the cluster's cgroup, and the CNI plugins Debian
// installs in /usr/lib/cni.
func containerdConfig(l layout, cg cgroup) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  ShimCgroup = %[6]q
  Root = %[7]q

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %[8]q
  conf_dir = %[9]q
`, l.path("containerd", "root"), l.path("containerd", "state"), l.containerdSocket(), l.path("containerd", "opt"),
		PauseRef, "/"+cg.name+"/shims", l.path("containerd", "runc"), CNIDir, l.path("cni", "net.d"))
}

// cniConfig: the bridge the harness made, host-local addresses from the pod CIDR (state in the
// run directory), no masquerading (nothing outside the namespace to reach), hairpin so a pod
// reaches itself through its Service.
func cniConfig(l layout) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "portcullis",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q, "gateway": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %q
    }
  }]
}
`, Bridge, PodCIDR, PodGateway, l.path("cni", "ipam"))
}

// kubeletConfig: cgroup v1 accepted (failCgroupV1: false) with the cgroupfs driver under the
// cluster's cgroup; oomScoreAdj 0 (see containerdConfig); protectKernelDefaults, so the kubelet
// checks the tunables (shown to it by the namespace) instead of changing the host's; DNS at the
// node IP, where CoreDNS runs on the node; no host resolv.conf; no image garbage collection
// (imported images cannot be pulled again); no eviction for the host's disk, which the node
// shares with everything else on the machine (the defaults, 10-15% free, tainted the node and
// left every pod Pending on a machine with 13% of its disk free).
func kubeletConfig(l layout, cg cgroup, f *files) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %[2]s
tlsPrivateKeyFile: %[3]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[4]s}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[5]s
cgroupDriver: cgroupfs
cgroupRoot: /%[6]s
failCgroupV1: false
oomScoreAdj: 0
protectKernelDefaults: true
clusterDNS: [%[7]s]
clusterDomain: %[8]s
resolvConf: ""
podLogsDir: %[9]s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
failSwapOn: false
shutdownGracePeriod: 0s
registerNode: true
`, NodeIP, f.kubeletServing.Cert, f.kubeletServing.Key, f.pki.CAFile(), l.containerdSocket(), cg.name,
		NodeIP, ClusterDomain, l.path("pod-logs"))
}

// proxyConfig: iptables mode; oomScoreAdj 0 (see containerdConfig) and no conntrack changes
// (nf_conntrack_max is host-wide).
func proxyConfig(f *files) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
mode: iptables
clusterCIDR: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, f.proxy, NodeName, PodCIDR, NodeIP)
}

// corefile: cluster DNS on the node IP, answering from the API; no upstream (the namespace has
// no way out). ready on 8181 says when it has synced.
func corefile(f *files) string {
	return fmt.Sprintf(`.:53 {
    bind %s
    errors
    ready 127.0.0.1:8181
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
}
`, NodeIP, ClusterDomain, f.admin)
}
