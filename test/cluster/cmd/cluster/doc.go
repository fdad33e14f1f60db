// Command cluster runs the test cluster (test/cluster) for a person: `make cluster` builds the
// images and runs it. It imports every image tarball of -images, installs the mesh and its demo
// as a user does (test/clustermesh; -no-mesh leaves the cluster empty), forwards the frontend,
// the control plane's admin port and Jaeger to the ports `make demo` uses, prints what to try,
// and stops the cluster, leaving nothing behind, on Ctrl-C or SIGTERM — also when only make
// itself was sent SIGINT (`kill -INT <make>`), which GNU make does not pass on to its children:
// the command watches its make parent for it.
package main
