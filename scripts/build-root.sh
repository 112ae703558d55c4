#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) root the booted-system lab (tests/common/booted.rs) boots with systemd
# as PID 1: systemd, dbus, firewalld, libvirtd and dnsmasq, ready for virtzone's .deb to be installed
# into it with its real maintainer scripts. See docs/design notes in tests/common/booted.rs.
#
#   scripts/build-root.sh            prints the root's path (building it first when it is not cached)
#
# The root is cached under target/lab/roots/bookworm-<key>, where <key> is a hash of this recipe, so
# a changed recipe builds a new root and an unchanged one is reused. It is built in a temp dir beside
# it and renamed into place only when complete: a half-built root is never used. Every use touches
# its `.complete` stamp; roots of other recipes unused for two days are removed once the new one is
# in place (target/lab may be shared by several worktrees whose recipes differ: a root another tree
# still boots must not vanish under it).
#
# The mirror is Debian's, read from this machine's apt configuration at run time
# (/etc/apt/sources.list.d/debian.sources, first `URIs:` field); mmdebstrap keeps its own apt state,
# so the host's apt configuration is never touched.
#
# Needs: mmdebstrap (. scripts/packages.sh; ensure_packages mmdebstrap), root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

suite=bookworm
# What the booted system needs: an init and a bus; the firewall and libvirt as a distribution
# installs them; netbase (/etc/protocols: without it firewalld dies at start with
# "INVALID_PROTOCOL: esp"); iptables (libvirt 9's network driver); busybox (udhcpc for guests);
# apt (the tests install the .deb with `apt-get install ./virtzone_*.deb`); network-manager (the
# NM-managed host bridges of tests/nm.rs: NM owns their firewalld zone).
packages=systemd,systemd-sysv,dbus,firewalld,nftables,iptables,iproute2,libvirt-daemon-system,libvirt-clients,dnsmasq-base,netbase,busybox,iputils-ping,procps,python3,apt,network-manager

# Runs in the finished root ($1) before it is cached.
customize=$(cat <<'CUSTOMIZE'
set -e
# Packages must be able to start their services once booted (mmdebstrap may leave a policy-rc.d).
rm -f "$1/usr/sbin/policy-rc.d"
# No serial line ever appears: the getty would keep the system "starting" for ever.
ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$1/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$1/etc/systemd/system/getty@tty1.service"
# Tests start the networks they need; libvirt's autostarted "default" network would race them.
rm -f "$1/etc/libvirt/qemu/networks/autostart/default.xml"
echo vzbooted >"$1/etc/hostname"
# A fresh machine id at every boot of a copy (systemd writes one on first boot).
: >"$1/etc/machine-id"
CUSTOMIZE
)

key=$(printf '%s\n%s\n%s\n' "$suite" "$packages" "$customize" | sha256sum | cut -c1-12)
roots=$repo/target/lab/roots
root=$roots/$suite-$key
if [ -f "$root/.complete" ]; then
    touch "$root/.complete" 2>/dev/null || true
    echo "$root"
    exit 0
fi

command -v mmdebstrap >/dev/null || { echo "build-root: mmdebstrap not found (apt-get install mmdebstrap)" >&2; exit 1; }
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources | grep -v -- -security | head -n1)
[ -n "$mirror" ] || { echo "build-root: no URIs: line in /etc/apt/sources.list.d/debian.sources" >&2; exit 1; }

mkdir -p "$roots"
# One builder at a time (two test binaries may ask at once): the second waits, then finds it cached.
exec 9>"$roots/.lock"
flock 9
if [ -f "$root/.complete" ]; then
    echo "$root"
    exit 0
fi
tmp=$(mktemp -d "$roots/.build-$suite-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP
start=$SECONDS
echo "build-root: building the $suite root ($packages) from $mirror" >&2
printf '%s' "$customize" >"$tmp/customize.sh"
mmdebstrap --variant=apt --include="$packages" --customize-hook="sh '$tmp/customize.sh' \"\$1\"" \
    "$suite" "$tmp/root" "deb $mirror $suite main" >&2
touch "$tmp/root/.complete"
rm -rf "$root"
mv "$tmp/root" "$root"
echo "build-root: built $root in $((SECONDS - start)) s" >&2
# Roots of other recipes nobody booted for two days.
for old in "$roots/$suite"-*; do
    [ "$old" = "$root" ] && continue
    if [ -z "$(find "$old/.complete" -mtime -2 2>/dev/null)" ]; then rm -rf "$old"; fi
done
echo "$root"
