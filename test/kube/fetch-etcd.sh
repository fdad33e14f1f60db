#!/usr/bin/env bash
# Fetches Debian's etcd-server package into the tool cache without installing it system-wide:
# apt-get download, then dpkg -x into a scratch directory; the binary lands in bin/etcd-<version>.
set -euo pipefail
version=${1:?etcd-server Debian version, e.g. 3.4.23-4+b4}
cache=${2:?cache dir}
out="$cache/bin/etcd-$version"
[ -x "$out" ] && { echo "etcd $version: $out"; exit 0; }
dir="$cache/etcd-deb-$version"
rm -rf "$dir" && mkdir -p "$dir" "$cache/bin"
cd "$dir"
if ! apt-get download "etcd-server=$version" 2>/dev/null; then
  apt-get update -qq
  apt-get download "etcd-server=$version"
fi
dpkg -x etcd-server_*.deb root
bin=root/usr/bin/etcd
[ -n "$bin" ] || { echo "no etcd binary in the package" >&2; exit 1; }
cp "$bin" "$out.tmp" && mv "$out.tmp" "$out"
echo "etcd $version: $out"
