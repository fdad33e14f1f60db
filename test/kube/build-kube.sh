#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries into the tool cache from the Go module proxy, in one
# `go build` (they share most packages, so one build costs little more than the largest alone):
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and kubelet.
# A scratch module requires k8s.io/kubernetes and replaces each of its staging modules (which
# Kubernetes' go.mod points at local directories) with the published k8s.io/* release of the same
# minor. sample-cli-plugin and sample-controller are left out: they are not served.
# Output: $cache/bin/<binary>-<version>.
set -euo pipefail
version=${1:?kubernetes version, e.g. v1.37.2}
cache=${2:?cache dir}
binaries=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
missing=()
for b in "${binaries[@]}"; do [ -x "$cache/bin/$b-$version" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "kubernetes $version: $cache/bin/{$(IFS=,; echo "${binaries[*]}")}-$version"; exit 0; fi
staging="v0.${version#v1.}"
dir="$cache/kube-build-$version"
mkdir -p "$dir" "$cache/bin"
cd "$dir"
export GOFLAGS="-mod=mod -buildvcs=false"
src=$(cd / && go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
{
  echo "module portcullis.local/kubebuild"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$src/go.mod" |
    grep -v -e sample-cli-plugin -e sample-controller |
    while read -r m; do echo "replace $m => $m $staging"; done
} > go.mod
echo "building ${missing[*]} $version (cold, all five: about 20 minutes on 2 cores)"
minor=${version#v1.}; minor=${minor%%.*}
ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags="$ldflags -X k8s.io/component-base/version/base.gitVersion=$version -X k8s.io/component-base/version/base.gitMajor=1 -X k8s.io/component-base/version/base.gitMinor=$minor"
pkgs=()
for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
rm -rf out && mkdir out
# Static binaries: the kubelet and kube-proxy run on the host, the control-plane parts anywhere.
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o out/ "${pkgs[@]}"
for b in "${missing[@]}"; do mv "out/$b" "$cache/bin/$b-$version"; done
echo "kubernetes $version: $cache/bin/{$(IFS=,; echo "${binaries[*]}")}-$version"
