// Command cluster runs the test cluster (test/cluster) for a person: `make cluster` builds the
// images and runs it. It imports every image tarball of -images, prints the KUBECONFIG to use,
// and stops the cluster, leaving nothing behind, on Ctrl-C or SIGTERM — also when only make
// itself was sent SIGINT (`kill -INT <make>`), which GNU make does not pass on to its children:
// the command watches its make parent for it.
package main
