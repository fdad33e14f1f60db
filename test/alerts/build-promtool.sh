#!/usr/bin/env bash
# Builds promtool from the Go module proxy into the tool cache, static, as
# `go install github.com/prometheus/prometheus/cmd/promtool@<version>` does, without service
# discovery (tag remove_all_sd: rule tests need none, and the cloud SDKs it would link are most of
# the build): $cache/bin/promtool-<version>. test/alerts runs it on deploy/prometheus.
set -euo pipefail
version=${1:?prometheus module version, e.g. v0.316.0}
cache=${2:?cache dir}
out="$cache/bin/promtool-$version"
[ -x "$out" ] && { echo "promtool $version: $out"; exit 0; }
mkdir -p "$cache/bin"
tmp=$(mktemp -d "$cache/promtool-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "building promtool $version (cold: about 3.5 CPU-minutes with the modules cached)"
CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -trimpath -tags remove_all_sd "github.com/prometheus/prometheus/cmd/promtool@$version"
mv "$tmp/promtool" "$out"
echo "promtool $version: $out"
