package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/test/envoytest"
	"github.com/portcullis/portcullis/test/kubetest"
)

// CoreDNSVersion is the CoreDNS the cluster runs (the Makefile's COREDNS_VERSION).
const CoreDNSVersion = "v1.15.0"

// CNIDir is where Debian's containernetworking-plugins puts the plugins.
const CNIDir = "/usr/lib/cni"

// Parts are the programs a cluster is made of.
type Parts struct {
	// Built into the tool cache (make kube, make coredns).
	Etcd, APIServer, ControllerManager, Scheduler, Proxy, Kubelet, CoreDNS string
	// Installed on the host from Debian (make cluster-tools; util-linux and iproute2 are
	// Debian's base).
	Containerd, Ctr, Runc, Shim, Nsenter, Unshare, IP, Iptables string
}

// FindParts locates every part, or says which are missing and how to get them.
func FindParts() (Parts, error) {
	root, err := envoytest.RepoRoot()
	if err != nil {
		return Parts{}, fmt.Errorf("cluster: %w", err)
	}
	cache := filepath.Join(root, ".cache")
	var missing []string
	cached := func(name, target string) string {
		p := filepath.Join(cache, "bin", name)
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, fmt.Sprintf("%s (make %s)", p, target))
		}
		return p
	}
	onHost := func(name, target string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (make %s)", name, target))
		}
		return p
	}
	kube := func(b string) string { return cached(b+"-"+kubetest.KubeVersion, "kube") }
	p := Parts{
		APIServer:         kube("kube-apiserver"),
		ControllerManager: kube("kube-controller-manager"),
		Scheduler:         kube("kube-scheduler"),
		Proxy:             kube("kube-proxy"),
		Kubelet:           kube("kubelet"),
		CoreDNS:           cached("coredns-"+CoreDNSVersion, "coredns"),
		Containerd:        onHost("containerd", "cluster-tools"),
		Ctr:               onHost("ctr", "cluster-tools"),
		Runc:              onHost("runc", "cluster-tools"),
		Shim:              onHost("containerd-shim-runc-v2", "cluster-tools"),
		Iptables:          onHost("iptables-restore", "cluster-tools"),
		Nsenter:           onHost("nsenter", "cluster-tools: util-linux"),
		Unshare:           onHost("unshare", "cluster-tools: util-linux"),
		IP:                onHost("ip", "cluster-tools: iproute2"),
	}
	if assets, err := kubetest.Assets(); err != nil {
		missing = append(missing, err.Error())
	} else {
		p.Etcd = filepath.Join(assets, "etcd")
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIDir, plugin)); err != nil {
			missing = append(missing, fmt.Sprintf("%s/%s (make cluster-tools)", CNIDir, plugin))
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (namespaces, cgroups, containers)")
	}
	if len(missing) > 0 {
		return p, errors.New("cluster: missing " + strings.Join(missing, ", "))
	}
	return p, nil
}

// RequireParts returns the parts, or ends the test: failing it under CI=true (where `make test`
// installs everything) and skipping it, loudly, elsewhere.
func RequireParts(t testing.TB) Parts {
	t.Helper()
	p, err := FindParts()
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: the cluster tests must run)", err)
	}
	t.Skipf("SKIPPING, NO CLUSTER: %v", err)
	return p
}
