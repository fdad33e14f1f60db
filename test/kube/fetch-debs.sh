#!/usr/bin/env bash
# Fetches Debian packages into the tool cache without installing them (apt-get download, then
# dpkg -x of each into one directory), for the image builder (test/images): the images hold
# Debian's files, not the host's. The directory is keyed by the packages' versions (the
# candidates apt knows), so a new Debian release of one of them makes a new directory:
# $cache/debroot-<hash>, and $cache/debroot links to it. Prints the directory.
set -euo pipefail
cache=${1:?cache dir}
shift
[ $# -gt 0 ] || { echo "usage: $0 CACHE PACKAGE..." >&2; exit 2; }
candidates() {
  for p in "$@"; do
    v=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    [ -n "$v" ] && [ "$v" != "(none)" ] || return 1
    echo "$p=$v"
  done
}
if ! pins=$(candidates "$@"); then
  apt-get update -qq
  pins=$(candidates "$@") || { echo "fetch-debs: apt knows no version of one of: $*" >&2; exit 1; }
fi
pins=$(echo "$pins" | LC_ALL=C sort)
key=$(echo "$pins" | sha256sum | cut -c1-12)
root="$cache/debroot-$key"
if [ ! -f "$root/.complete" ]; then
  work=$(mktemp -d "$cache/debroot-fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # shellcheck disable=SC2086 # one argument per package
  (cd "$work" && { apt-get download -qq $pins 2>/dev/null || { apt-get update -qq && apt-get download -qq $pins; }; })
  mkdir "$work/root"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
  echo "$pins" > "$work/root/.versions"
  touch "$work/root/.complete"
  rm -rf "$root"
  mv "$work/root" "$root"
fi
ln -sfn "$(basename "$root")" "$cache/debroot"
echo "$root"
