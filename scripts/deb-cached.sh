#!/usr/bin/env bash
# The Debian packages of this tree, built by scripts/build-packages.sh and cached: prints the directory
# holding virtzone_*.deb and virtzone-zones_*.deb, building them only when no build of exactly these
# sources is cached. The booted-system tests (tests/booted.rs) install them.
#
#   scripts/deb-cached.sh
#
# The cache key is a hash of the content of every project file but the tests and benchmarks, so any
# change to the sources, the packaging or the unit builds afresh. Builds go to
# target/packages/cache/<key> through a temp dir renamed into place, so a failed build is never
# used. cargo uses its own target dir (target/deb-build): a test run holding target/'s lock may call
# this script without waiting for itself, and the release build there is kept for the next build.
#
# Needs what build-packages.sh needs (debhelper).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# Tests and benchmarks do not go into the packages: editing them must not cost a rebuild.
key=$(git ls-files -z --cached --others --exclude-standard -- . ':!tests' ':!benches' | sort -z |
    xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)
cache=$repo/target/packages/cache
out=$cache/$key
if [ -f "$out/.complete" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/.complete" ]; then
    echo "$out"
    exit 0
fi
tmp=$(mktemp -d "$cache/.build-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP
CARGO_TARGET_DIR=${VIRTZONE_DEB_TARGET_DIR:-$repo/target/deb-build} scripts/build-packages.sh --deb "$tmp" >&2
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
# Packages of older sources: only the newest is ever installed.
for old in "$cache"/*; do
    [ "$old" = "$out" ] || rm -rf "$old"
done
echo "$out"
