// Package cluster runs a real single-node Kubernetes cluster for tests and for `make cluster`:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy
// (v1.37.2, built into the tool cache by `make kube`), CoreDNS (`make coredns`), containerd,
// runc and the CNI plugins from Debian (`make cluster-tools`), with images imported from
// tarballs (test/images) instead of pulled.
//
// Every part runs inside one network namespace and one mount namespace of the cluster's own,
// held by a process the harness starts: the node IP on the namespace's loopback, the pods'
// bridge, kube-proxy's and the kubelet's iptables chains, the pods' network namespaces and every
// mount exist only there and vanish with the cluster's last process. Files live in a run
// directory under the temporary directory; pods and shims in a cgroup named after it. The test
// process reaches the API server through a loopback port it forwards (Cluster.Kubeconfig) and
// anything else by dialling from inside the namespace (Cluster.DialContext).
//
// Stop stops the parts in order (node parts, containers, containerd, the API server, etcd) and
// removes the cgroup and the directory; Start (for tests) also checks that nothing is left. A
// run whose process died without stopping is cleaned up by the next one. docs/cluster.md
// explains each workaround the host needs (cgroup v1, no CAP_SYS_RESOURCE, no dummy interfaces).
package cluster
