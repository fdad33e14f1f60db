// Package images builds the project's container images as tarballs with no registry and no
// container engine (github.com/google/go-containerregistry): the control plane (portcullis),
// the sidecar and init container (portcullis-proxy: portcullis-agent, Envoy, and Debian's
// iptables for `portcullis-agent init-iptables`) and the pod sandbox (pause). The demo applications run from the portcullis image, as deploy/overlays/demo does.
//
// Builds are reproducible: the same inputs give byte-identical tarballs (entries sorted, owner
// root, every time the Unix epoch, layers shared between images by content). Shared libraries,
// iptables and busybox come from Debian packages fetched into the tool cache
// (test/kube/fetch-debs.sh), found by walking the binaries' ELF dependencies, so what an image
// holds does not depend on the host's installation. The Dockerfile builds the same layout with
// a container engine.
package images
