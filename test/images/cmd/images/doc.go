// Command images writes the project's image tarballs (test/images): the control plane, the
// sidecar, the init container and the pause image, reproducibly, with no registry and no
// container engine. `make images` runs it with the binaries it built:
//
//	go run ./test/images/cmd/images -out bin/images -portcullis bin/portcullis \
//	    -agent bin/portcullis-agent -pause bin/pause -envoy .cache/bin/envoy -debian .cache/debroot
//
// It prints each image's reference, digest and size; `ctr -n k8s.io images import`,
// `docker load` or `podman load` take the files. -debian-packages prints what the -debian root
// must hold (make image-debs fetches them).
package main
