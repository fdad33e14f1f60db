// Package kubetest runs a real Kubernetes API server (kube-apiserver and etcd from the tool
// cache, through controller-runtime's envtest) for a test package, with the portcullis CRDs
// installed. One API server serves every test of a package: the first Require starts it and Main
// (from TestMain) stops it after the package's tests, so tests and fuzz targets that never ask
// for it start none. Require fails the test under CI=true and skips it loudly elsewhere when the
// binaries are missing (`make kube` builds them).
package kubetest
