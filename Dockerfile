# The images the manifests in deploy/ and the injector run, one target each, with the layout
# `make images` (test/images) builds without a registry or a container engine: same paths,
# entrypoints and users.
#   docker build --target controlplane -t ghcr.io/portcullis/portcullis:latest .        # also the demo apps
#   docker build --target proxy        -t ghcr.io/portcullis/portcullis-proxy:latest .  # the sidecar and init container
# The default target is the control plane.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=${VERSION}" -o /out/portcullis ./cmd/portcullis && \
    CGO_ENABLED=0 go build -trimpath -tags agentonly -ldflags "-X main.version=${VERSION}" -o /out/portcullis-agent ./cmd/portcullis && \
    CGO_ENABLED=0 go build -trimpath -o /out/pause ./test/images/pause

# The sidecar and the init container: portcullis-agent (the agent alone: about 28 MiB RSS
# instead of 66) supervising Envoy 1.40 at /usr/local/bin/envoy, the one the translator's output
# is validated against; and `portcullis-agent init-iptables` with Debian's iptables (nft back end
# by default, legacy too) and busybox, which the injector runs as root with NET_ADMIN and NET_RAW.
FROM envoyproxy/envoy:v1.40.0 AS proxy
RUN apt-get update && apt-get install -y --no-install-recommends iptables busybox-static && rm -rf /var/lib/apt/lists/* && \
    ln -sf /bin/busybox /bin/sh
COPY --from=build /out/portcullis-agent /usr/local/bin/
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/portcullis-agent"]

# The pod sandbox, for a cluster without a registry (test/cluster); clusters with one use theirs.
FROM scratch AS pause
COPY --from=build /out/pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]

# The control plane, and the demo applications (`portcullis demo-app`, deploy/overlays/demo):
# static, with the CA bundle and the nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot AS controlplane
COPY --from=build /out/portcullis /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/portcullis"]
