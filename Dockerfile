# The one image the manifests in deploy/ run: the control plane, and in meshed pods the
# iptables init container and the sidecar (agent supervising Envoy 1.40). Envoy's own image is
# the base, so the Envoy in the sidecar is the one the translator's output is validated against.
#   docker build -t ghcr.io/portcullis/portcullis:dev .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -ldflags "-X main.version=${VERSION}" -o /out/portcullis ./cmd/portcullis && \
    CGO_ENABLED=0 go build -tags agentonly -ldflags "-X main.version=${VERSION}" -o /out/portcullis-agent ./cmd/portcullis

FROM envoyproxy/envoy:v1.40.0
# iptables-restore for `portcullis init-iptables` (the injected init container, which alone runs as root).
RUN apt-get update && apt-get install -y --no-install-recommends iptables && rm -rf /var/lib/apt/lists/*
# portcullis-agent is the sidecar build: the agent without the control plane's packages (about
# 28 MiB RSS instead of 66).
COPY --from=build /out/portcullis /out/portcullis-agent /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/portcullis"]
