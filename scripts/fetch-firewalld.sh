#!/bin/sh
# Fetch Debian 13 (trixie)'s firewalld 2.3.1 (packages `firewalld` and `python3-firewall`, both
# architecture-independent) and unpack them into a cache root for the integration-test lab
# (tests/common). The system's apt configuration, lists and cache are never touched: apt runs with
# a private sources list, lists dir, cache dir and (empty) dpkg status in a temp dir.
#
# Usage: scripts/fetch-firewalld.sh
# Env:   VIRTZONE_LAB_CACHE  cache root (default: <repo>/target/lab/firewalld-2.3.1; a relative
#                            path is relative to the repo)
#
# Idempotent: exits at once when the cache root is already complete.
set -eu

VERSION=2.3.1
MIRROR=http://deb.debian.org/debian
SUITE=trixie
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${VIRTZONE_LAB_CACHE:-$repo/target/lab/firewalld-$VERSION}
case $root in
    /*) ;;
    *) root=$repo/$root ;; # relative to the repo, as in tests/common
esac
stamp=$root/.complete

if [ -f "$stamp" ]; then
    exit 0
fi

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fetch-firewalld: $tool not found" >&2; exit 1; }
done
if [ ! -r "$KEYRING" ]; then
    echo "fetch-firewalld: $KEYRING missing (install debian-archive-keyring)" >&2
    exit 1
fi

# Private apt state in a temp dir; it and any half-unpacked staging dir go on exit, whatever happens.
staging=
work=$(mktemp -d "${TMPDIR:-/tmp}/vz-fetch-firewalld.XXXXXX")
trap 'rm -rf "$work" ${staging:+"$staging"}' EXIT
trap 'exit 1' INT TERM HUP
mkdir -p "$work/etc/preferences.d" "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
cat >"$work/etc/sources.list" <<SOURCES
deb [signed-by=$KEYRING] $MIRROR $SUITE main
SOURCES

# Dir::State::status points at an empty file so the host's installed-package set does not matter
# (we only download, never install); the preferences dir is emptied so host pins do not apply.
: >"$work/status"
set -- \
    -o Dir::Etc::SourceList="$work/etc/sources.list" \
    -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::Etc::Preferences=/dev/null \
    -o Dir::Etc::PreferencesParts="$work/etc/preferences.d" \
    -o Dir::State::Lists="$work/lists" \
    -o Dir::State::status="$work/status" \
    -o Dir::Cache="$work/cache" \
    -o Dir::Cache::pkgcache= \
    -o Dir::Cache::srcpkgcache= \
    -o APT::Architecture="$(dpkg --print-architecture)" \
    -o Acquire::Languages=none \
    -o Acquire::Check-Valid-Until=false \
    -o Debug::NoLocking=true \
    -q

apt-get "$@" update >"$work/update.log" 2>&1 || {
    cat "$work/update.log" >&2
    echo "fetch-firewalld: apt-get update for $SUITE failed" >&2
    exit 1
}

# `apt-get download` writes into the current directory and verifies the hashes from the signed
# index. Ask for the exact version so a point release in trixie is noticed loudly, not silently used.
(cd "$work/debs" && apt-get "$@" download "firewalld=$VERSION-*" "python3-firewall=$VERSION-*") \
    >"$work/download.log" 2>&1 || {
    cat "$work/download.log" >&2
    echo "fetch-firewalld: could not download firewalld $VERSION from $SUITE" >&2
    exit 1
}

# Unpack into a fresh directory and move it into place only when complete, so an interrupted run
# never leaves a half-unpacked root that looks valid.
mkdir -p "$(dirname "$root")"
staging=$(mktemp -d "$(dirname "$root")/.firewalld-$VERSION.XXXXXX")
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$staging"
done
for f in usr/sbin/firewalld usr/lib/python3/dist-packages/firewall/config/__init__.py usr/lib/firewalld/zones; do
    if [ ! -e "$staging/$f" ]; then
        echo "fetch-firewalld: unpacked packages lack $f" >&2
        exit 1
    fi
done
# Precompile with the python that runs it, so no lab pays for byte-compiling at start and parallel
# labs never race to write __pycache__ (the lab clears PYTHONDONTWRITEBYTECODE for firewalld).
if [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 -m compileall -q "$staging/usr/lib/python3/dist-packages/firewall" >/dev/null
fi
chmod 755 "$staging"
ls "$work/debs" >"$staging/.complete"
rm -rf "$root"
mv "$staging" "$root"
staging=
