// Package kubetest runs a real Kubernetes API server (kube-apiserver and etcd from the tool
// cache, through controller-runtime's envtest) for a test package, with the portcullis CRDs
// installed. One API server serves every test of a package: start it in TestMain with Main and
// take it in each test with Require, which fails under CI=true and skips loudly elsewhere when
// the binaries are missing (`make kube` builds them).
package kubetest
