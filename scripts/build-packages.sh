#!/usr/bin/env bash
# Builds the Debian packages (and, with --rpm, the RPMs) from this tree, the way a packager would:
#
#   scripts/build-packages.sh [--deb] [--rpm] [OUT_DIR]     (default: --deb into target/packages)
#
# Each build runs on a clean copy of the tracked files (git ls-files, plus untracked files that are
# not ignored) in a temp dir: packaging/debian is copied to the top as debian/ there, and the RPM
# gets a virtzone-VERSION.tar.gz of the copy. cargo builds with CARGO_TARGET_DIR (default: this
# tree's target/), so a build after `cargo build --release` only relinks.
#
# Needs: debhelper (Debian), rpm (rpmbuild; its BuildRequires are not checked on a non-RPM host and
# packaging/rpm/macros.systemd-fallback stands in for systemd-rpm-macros). Install them with
#   . scripts/packages.sh; ensure_packages debhelper rpm
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

deb="" rpm="" out=""
for arg in "$@"; do
    case $arg in
    --deb) deb=1 ;;
    --rpm) rpm=1 ;;
    -*) echo "usage: $0 [--deb] [--rpm] [OUT_DIR]" >&2; exit 2 ;;
    *) out=$arg ;;
    esac
done
[ -n "$deb$rpm" ] || deb=1
out=$(realpath -m "${out:-target/packages}")
mkdir -p "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/virtzone-$version"
mkdir -p "$src"
# Only the project's files: no target/, no editor leftovers.
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src"

if [ -n "$deb" ]; then
    echo "== Debian packages"
    cp -a packaging/debian "$src/debian"
    start=$SECONDS
    (cd "$src" && dpkg-buildpackage -b -us -uc)
    echo "== dpkg-buildpackage took $((SECONDS - start)) s"
    cp "$work"/*.deb "$out/"
    rm -rf "$src/debian"
fi

if [ -n "$rpm" ]; then
    echo "== RPM packages"
    top="$work/rpmbuild"
    mkdir -p "$top/SOURCES"
    tar -C "$work" -czf "$top/SOURCES/virtzone-$version.tar.gz" "virtzone-$version"
    macros=()
    # On a host without systemd-rpm-macros (Debian), its stand-in; no debuginfo package (Debian's
    # rpm lacks find-debuginfo).
    if [ "$(rpm --eval '%{?_unitdir}')" = "" ]; then
        macros=(--load "$repo/packaging/rpm/macros.systemd-fallback" --define 'debug_package %{nil}')
    fi
    start=$SECONDS
    rpmbuild -bb --nodeps "${macros[@]}" --define "_topdir $top" packaging/rpm/virtzone.spec
    echo "== rpmbuild took $((SECONDS - start)) s"
    find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
fi

ls -l "$out"
