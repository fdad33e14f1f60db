#!/usr/bin/env bash
# Builds a pinned Jaeger v2 (the OpenTelemetry-collector based `jaeger` binary) into the tool
# cache, outside this project's go.mod: a scratch module that requires Jaeger, copies its replace
# directives and its go.sum, so every dependency is checked against Jaeger's own sums.
# `go install ...@version` is refused because Jaeger's go.mod has a replace directive.
set -euo pipefail
version=${1:?version}
cache=${2:?cache dir}
out="$cache/bin/jaeger-$version"
[ -x "$out" ] && { echo "jaeger $version: $out"; exit 0; }
dir="$cache/jaeger-build-$version"
mkdir -p "$dir" "$cache/bin"
cd "$dir"
export GOFLAGS="-mod=mod -buildvcs=false"
info=$(cd / && go mod download -json "github.com/jaegertracing/jaeger@$version")
src=$(printf '%s' "$info" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
sum=$(printf '%s' "$info" | sed -n 's/.*"Sum": "\(.*\)",*/\1/p')
modsum=$(printf '%s' "$info" | sed -n 's/.*"GoModSum": "\(.*\)",*/\1/p')
{
  echo "module portcullis.local/jaegerbuild"
  echo
  echo "go 1.26"
  echo
  echo "require github.com/jaegertracing/jaeger $version"
  echo
  grep '^replace ' "$src/go.mod" || true
} > go.mod
cp "$src/go.sum" go.sum
chmod u+w go.sum
printf 'github.com/jaegertracing/jaeger %s %s\ngithub.com/jaegertracing/jaeger %s/go.mod %s\n' "$version" "$sum" "$version" "$modsum" >> go.sum
echo "building jaeger $version (cold: about 9 minutes on 2 cores, measured 2026-11-23)"
go build -trimpath -o "$out.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$out.tmp" "$out"
echo "jaeger $version: $out"
