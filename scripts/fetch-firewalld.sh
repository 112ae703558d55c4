#!/bin/sh
# Fetch a Debian release of firewalld and unpack it into a cache root for the integration-test lab
# (tests/common). The system's apt configuration, lists and cache are never touched: apt runs with
# a private sources list, lists dir, cache dir and (empty) dpkg status in a temp dir. The mirror is
# read from the machine's own apt configuration, never written into the project.
#
# Releases (the lab's `Release` enum; 1.3.3 is Debian 12's, installed from the host):
#   0.9.3  bullseye  firewalld, python3-firewall and slip/decorator (0.9.3 needs them), patched
#                    for Python 3.11 (slip 0.6.5 uses `collections.Callable`, gone since 3.10)
#                    and for kernels without /proc/modules (as firewalld 1.0 and later read it)
#   2.3.1  trixie    firewalld, python3-firewall
#   2.5.2  sid       firewalld, python3-firewall
#
# Usage: scripts/fetch-firewalld.sh [VERSION...]   (default: every release above)
# Env:   VIRTZONE_LAB_CACHE  cache root of 2.3.1 (default: <repo>/target/lab/firewalld-2.3.1; a
#                            relative path is relative to the repo); others go to
#                            <repo>/target/lab/firewalld-VERSION
#
# Idempotent: a release whose cache root is already complete is skipped.
set -eu

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Bumped when what the script does to a tree changes: older caches are fetched again.
RECIPE=2
repo=$(cd "$(dirname "$0")/.." && pwd)

# The first Debian archive URI of the machine's apt configuration (deb822 or one-line format);
# the security archive carries no firewalld.
mirror() {
    uris=
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uris="$uris $(sed -n 's/^URIs:[[:space:]]*//p' "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uris="$uris $(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' "$f")"
    done
    for u in $uris; do
        case $u in
            *security*) ;;
            http://* | https://*) echo "${u%/}"; return 0 ;;
        esac
    done
    return 1
}

fetch() {
    version=$1
    case $version in
        0.9.3) suite=bullseye; packages="firewalld python3-firewall python3-slip-dbus python3-slip python3-decorator" ;;
        2.3.1) suite=trixie; packages="firewalld python3-firewall" ;;
        2.5.2) suite=sid; packages="firewalld python3-firewall" ;;
        *) echo "fetch-firewalld: unknown release $version (known: 0.9.3 2.3.1 2.5.2)" >&2; exit 2 ;;
    esac
    root=$repo/target/lab/firewalld-$version
    if [ "$version" = 2.3.1 ] && [ -n "${VIRTZONE_LAB_CACHE:-}" ]; then
        root=$VIRTZONE_LAB_CACHE
        case $root in
            /*) ;;
            *) root=$repo/$root ;; # relative to the repo, as in tests/common
        esac
    fi
    if grep -qx "recipe $RECIPE" "$root/.complete" 2>/dev/null; then
        return 0
    fi
    echo "fetch-firewalld: fetching firewalld $version ($suite) into $root" >&2

    mkdir -p "$work/$version/etc/preferences.d" "$work/$version/lists/partial" \
        "$work/$version/cache/archives/partial" "$work/$version/debs"
    w=$work/$version
    echo "deb [signed-by=$KEYRING] $MIRROR $suite main" >"$w/etc/sources.list"
    # Dir::State::status points at an empty file so the host's installed-package set does not
    # matter (we only download, never install); the preferences dir is emptied so host pins do not
    # apply. Check-Valid-Until is off: sid's index may be past its date relative to this clock.
    : >"$w/status"
    set -- \
        -o Dir::Etc::SourceList="$w/etc/sources.list" \
        -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::Etc::Preferences=/dev/null \
        -o Dir::Etc::PreferencesParts="$w/etc/preferences.d" \
        -o Dir::State::Lists="$w/lists" \
        -o Dir::State::status="$w/status" \
        -o Dir::Cache="$w/cache" \
        -o Dir::Cache::pkgcache= \
        -o Dir::Cache::srcpkgcache= \
        -o APT::Architecture="$(dpkg --print-architecture)" \
        -o Acquire::Languages=none \
        -o Acquire::Check-Valid-Until=false \
        -o Debug::NoLocking=true \
        -q
    apt-get "$@" update >"$w/update.log" 2>&1 || {
        cat "$w/update.log" >&2
        echo "fetch-firewalld: apt-get update for $suite failed" >&2
        exit 1
    }
    # `apt-get download` verifies the hashes from the signed index. firewalld itself is asked for
    # by exact version so a new upload is noticed loudly, not silently used.
    wanted=
    for p in $packages; do
        case $p in
            firewalld | python3-firewall) wanted="$wanted $p=$version-*" ;;
            *) wanted="$wanted $p" ;;
        esac
    done
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    (cd "$w/debs" && apt-get "$@" download $wanted) >"$w/download.log" 2>&1 || {
        cat "$w/download.log" >&2
        echo "fetch-firewalld: could not download firewalld $version from $suite" >&2
        exit 1
    }

    # Unpack into a fresh directory and move it into place only when complete, so an interrupted
    # run never leaves a half-unpacked root that looks valid.
    mkdir -p "$(dirname "$root")"
    staging=$(mktemp -d "$(dirname "$root")/.firewalld-$version.XXXXXX")
    for deb in "$w"/debs/*.deb; do
        dpkg-deb -x "$deb" "$staging"
    done
    for f in usr/sbin/firewalld usr/lib/python3/dist-packages/firewall/config/__init__.py usr/lib/firewalld/zones; do
        if [ ! -e "$staging/$f" ]; then
            echo "fetch-firewalld: unpacked packages lack $f" >&2
            exit 1
        fi
    done
    if [ "$version" = 0.9.3 ]; then
        # A kernel without module support has no /proc/modules: 0.9.3 fails every complete reload
        # and stop on it; 1.0 and later read it inside a try (the same outcome: no modules).
        f=$staging/usr/lib/python3/dist-packages/firewall/core/modules.py
        sed -i 's|with open("/proc/modules", "r") as f:|with open("/proc/modules" if __import__("os").path.exists("/proc/modules") else "/dev/null", "r") as f:|' "$f"
        grep -q '"/dev/null", "r"' "$f" || {
            echo "fetch-firewalld: could not patch $f" >&2
            exit 1
        }
        # slip 0.6.5 predates Python 3.10, which removed the `collections.Callable` alias.
        for f in usr/lib/python3/dist-packages/slip/util/hookable.py usr/lib/python3/dist-packages/slip/dbus/polkit.py; do
            sed -i -e 's/collections\.Callable/collections.abc.Callable/g' \
                -e 's/^import collections$/import collections\nimport collections.abc/' "$staging/$f"
            grep -q 'import collections.abc' "$staging/$f" || {
                echo "fetch-firewalld: could not patch $f for Python 3.11" >&2
                exit 1
            }
        done
    fi
    # Precompile with the python that runs it, so no lab pays for byte-compiling at start and
    # parallel labs never race to write __pycache__ (the lab clears PYTHONDONTWRITEBYTECODE).
    if [ -x /usr/bin/python3 ]; then
        /usr/bin/python3 -m compileall -q "$staging/usr/lib/python3/dist-packages" >/dev/null || true
    fi
    chmod 755 "$staging"
    { ls "$w/debs"; echo "recipe $RECIPE"; } >"$staging/.complete"
    rm -rf "$root"
    mv "$staging" "$root"
    staging=
}

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fetch-firewalld: $tool not found" >&2; exit 1; }
done
if [ ! -r "$KEYRING" ]; then
    echo "fetch-firewalld: $KEYRING missing (install debian-archive-keyring)" >&2
    exit 1
fi
MIRROR=$(mirror) || {
    echo "fetch-firewalld: no Debian archive URI in /etc/apt (sources.list or sources.list.d)" >&2
    exit 1
}

# Private apt state in a temp dir; it and any half-unpacked staging dir go on exit, whatever happens.
staging=
work=$(mktemp -d "${TMPDIR:-/tmp}/vz-fetch-firewalld.XXXXXX")
trap 'rm -rf "$work" ${staging:+"$staging"}' EXIT
trap 'exit 1' INT TERM HUP

if [ $# -eq 0 ]; then
    set -- 0.9.3 2.3.1 2.5.2
fi
for v in "$@"; do
    fetch "$v"
done
