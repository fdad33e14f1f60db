#!/usr/bin/env bash
# Builds CoreDNS from the Go module proxy into the tool cache, static, as
# `go install github.com/coredns/coredns@<version>` does: $cache/bin/coredns-<version>.
# The cluster harness (test/cluster) runs it as the cluster's DNS server.
set -euo pipefail
version=${1:?coredns version, e.g. v1.15.0}
cache=${2:?cache dir}
out="$cache/bin/coredns-$version"
[ -x "$out" ] && { echo "coredns $version: $out"; exit 0; }
mkdir -p "$cache/bin"
tmp=$(mktemp -d "$cache/coredns-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "building coredns $version (cold: about 2.5 minutes on 2 cores)"
CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -trimpath "github.com/coredns/coredns@$version"
mv "$tmp/coredns" "$out"
echo "coredns $version: $out"
