#!/usr/bin/env bash
# Builds the Jaeger UI (github.com/jaegertracing/jaeger-ui at the tag matching the Jaeger
# version) into the tool cache: <cache>/jaeger-ui-<version>, index.html and static/, which Jaeger
# serves with extensions.jaeger_query.ui.assets_path (a Jaeger built from the Go module embeds
# only a placeholder page). The source is a tarball of the UI's repository (a path or a URL;
# the Makefile's JAEGER_UI_SOURCE), its packages come from the npm registry with the lockfile
# (npm ci). The UI asks for Node 24: when the node on PATH is older, Node comes from the npm
# registry's `node` package into the tool cache.
set -euo pipefail
version=${1:?version}
cache=${2:?cache dir}
source=${3:?source: a path or URL of the jaeger-ui source tarball}
out="$cache/jaeger-ui-$version"
[ -f "$out/index.html" ] && { echo "jaeger ui $version: $out"; exit 0; }

node_version=24.21.0
if ! command -v npm >/dev/null; then
  echo "jaeger ui: npm not found: install Node.js with npm (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 24 ]; then
  node_dir="$cache/node-$node_version"
  if [ ! -x "$node_dir/node_modules/.bin/node" ]; then
    echo "jaeger ui: node $(node --version 2>/dev/null || echo missing) is older than the UI's 24: installing node@$node_version into $node_dir"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$node_dir" "node@$node_version"
  fi
  export PATH="$node_dir/node_modules/.bin:$PATH"
fi

work="$cache/jaeger-ui-build-$version"
rm -rf "$work"
mkdir -p "$work/src"
trap 'rm -rf "$work"' EXIT
case "$source" in
  http://* | https://*) curl -fsSL --retry 3 -o "$work/source.tar.gz" "$source"; tarball="$work/source.tar.gz" ;;
  *) tarball=$source ;;
esac
[ -f "$tarball" ] || { echo "jaeger ui: no source tarball at $tarball (set JAEGER_UI_SOURCE to a path or URL of jaeger-ui $version's source)" >&2; exit 1; }
echo "jaeger ui $version: building from $source (sha256 $(sha256sum "$tarball" | cut -d' ' -f1)) with node $(node --version)"
tar -xzf "$tarball" -C "$work/src" --strip-components=1
cd "$work/src"
start=$SECONDS
# Not --ignore-scripts: the root's prepare script builds packages/plexus, which the UI needs.
npm ci --no-audit --no-fund --loglevel=error
(cd packages/jaeger-ui && npm run build)
rm -rf "$out.tmp"
cp -r packages/jaeger-ui/build "$out.tmp"
mv "$out.tmp" "$out"
echo "jaeger ui $version: $out ($(du -sh "$out" | cut -f1), built in $((SECONDS - start)) s)"
