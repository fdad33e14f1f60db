#!/usr/bin/env bash
# Builds a pinned kube-apiserver into the tool cache from the Go module proxy: a scratch module
# that requires k8s.io/kubernetes and replaces each of its staging modules (which Kubernetes'
# go.mod points at local directories) with the published k8s.io/* release of the same minor.
# sample-cli-plugin and sample-controller are left out: they are not served.
set -euo pipefail
version=${1:?kubernetes version, e.g. v1.37.2}
cache=${2:?cache dir}
out="$cache/bin/kube-apiserver-$version"
[ -x "$out" ] && { echo "kube-apiserver $version: $out"; exit 0; }
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
echo "building kube-apiserver $version (cold: about 9 minutes on 2 cores, measured 2026-11-23)"
minor=${version#v1.}; minor=${minor%%.*}
ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags="$ldflags -X k8s.io/component-base/version/base.gitVersion=$version -X k8s.io/component-base/version/base.gitMajor=1 -X k8s.io/component-base/version/base.gitMinor=$minor"
go build -trimpath -ldflags "$ldflags" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out.tmp" "$out"
echo "kube-apiserver $version: $out"
