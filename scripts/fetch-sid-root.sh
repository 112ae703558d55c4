#!/bin/sh
# Build a Debian sid root with libvirt 12, firewalld 2.5.2 (with sid's own Python), nftables,
# iptables and dnsmasq for the integration-test lab (tests/libvirt12.rs), with mmdebstrap and the
# mirror of the machine's own apt configuration. No package's service starts while building
# (policy-rc.d). Cached: a complete root is kept until it is older than VIRTZONE_SID_ROOT_DAYS
# (default 30) days, so sid's moving target is picked up now and then, not on every run.
#
# Usage: scripts/fetch-sid-root.sh
# Env:   VIRTZONE_SID_ROOT  the root (default <repo>/target/lab/sid-root)
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${VIRTZONE_SID_ROOT:-$repo/target/lab/sid-root}
stamp=$root/.complete
days=${VIRTZONE_SID_ROOT_DAYS:-30}

if [ -f "$stamp" ] && [ -z "$(find "$stamp" -mtime +"$days")" ]; then
    exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || { echo "fetch-sid-root: mmdebstrap not found" >&2; exit 1; }

# The first Debian archive URI of the machine's apt configuration (as fetch-firewalld.sh).
mirror=
for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    for u in $(sed -n 's/^URIs:[[:space:]]*//p' "$f"); do
        case $u in *security*) ;; http://* | https://*) mirror=${mirror:-${u%/}} ;; esac
    done
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] && [ -z "$mirror" ] || continue
    mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' "$f" | grep -v security | head -n1)
done
[ -n "$mirror" ] || { echo "fetch-sid-root: no Debian archive URI in /etc/apt" >&2; exit 1; }

mkdir -p "$(dirname "$root")"
staging=$(mktemp -d "$(dirname "$root")/.sid-root.XXXXXX")
trap 'rm -rf "$staging"' EXIT
trap 'exit 1' INT TERM HUP
echo "fetch-sid-root: building a Debian sid root in $root (about 2 minutes, 400 MB)" >&2
# Check-Valid-Until: sid's index may be past its date relative to this machine's clock.
mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
    --include=libvirt-daemon-system,libvirt-clients,firewalld,nftables,iptables,iproute2,dbus,dnsmasq-base,busybox,iputils-ping,python3 \
    --customize-hook='printf "#!/bin/sh\nexit 101\n" > "$1/usr/sbin/policy-rc.d"; chmod +x "$1/usr/sbin/policy-rc.d"' \
    sid "$staging" "deb $mirror sid main" >&2
for f in usr/sbin/libvirtd usr/sbin/firewalld usr/bin/virsh usr/bin/dbus-daemon; do
    [ -e "$staging/$f" ] || { echo "fetch-sid-root: the root lacks $f" >&2; exit 1; }
done
chroot "$staging" dpkg-query -W -f='${Package} ${Version}\n' libvirt-daemon firewalld nftables >"$staging/.complete"
rm -rf "$root"
mv "$staging" "$root"
trap - EXIT
