#!/usr/bin/env bash
# The demo's steps, run by scripts/demo.sh inside a lab (DBUS_SYSTEM_BUS_ADDRESS points at the lab's bus).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="${VIRTZONE_BIN_DIR:-$PWD/target/release}:$PATH" VIRTZONE_STATE_DIR="$LAB_DIR/state"
step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; local rc=$?; printf '(exit status %d)\n' "$rc"; }

step "What firewalld is this, and does it have libvirt's zones?"
run virtzone status

step "The net-start pre-check for a NAT network, before any libvirt zone exists"
run virtzone check --network-xml demo/default.xml

step "Install virtzone's zones and policies (live, over D-Bus, one reload)"
run virtzone install

step "The same pre-check now, and one for a routed network"
run virtzone check --network-xml demo/default.xml
run virtzone check --network-xml demo/routed.xml --json

step "An admin lets guests reach a web server on the host; a re-install keeps that"
run firewall-cmd --permanent --zone=libvirt --add-service=http
run virtzone install

step "firewalld manages what virtzone installed"
run firewall-cmd --info-zone=libvirt

step "Start the daemon (systemd runs it as virtzone.service) and bind a bridge through it"
virtzone serve 2>"$LAB_DIR/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT
until_true() { # until_true WHAT COMMAND...: polls COMMAND for up to 30 s
    local what=$1 i; shift
    for ((i = 0; i < 3000; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.01; done
    echo "timed out waiting until $what" >&2; return 1
}
has_owner() { busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus NameHasOwner s "$1" | grep -q true; }
until_true "the daemon owns its name" has_owner org.virtzone.VirtZone1
ip link add virbr0 type bridge
run virtzone attach virbr0
run virtzone list

step "firewalld reloads (which drops every runtime binding); the daemon puts it back"
reconciles() { busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.virtzone.VirtZone1 \
    /org/virtzone/VirtZone1 org.virtzone.VirtZone1 ReconcileCount | cut -d' ' -f2; }
before=$(reconciles)
# A function, so that every poll reads the count again (an argument would be read once, before polling).
reconciled_since_before() { test "$(reconciles)" -gt "$before"; }
run firewall-cmd --reload
until_true "the daemon's reconcile after the reload" reconciled_since_before
run firewall-cmd --get-zone-of-interface=virbr0
run virtzone list

step "libvirt's network hook: the pre-check at 'start begin', the binding at 'started begin'"
hookdata="<hookData>$(cat demo/routed.xml)</hookData>"
run virtzone hook network routed start begin - <<<"$hookdata"
ip link add virbr1 type bridge
run virtzone hook network routed started begin - <<<"$hookdata"
run firewall-cmd --get-zone-of-interface=virbr1

step "Status: zones, policies, where they come from, and every bridge's zone"
run virtzone status

step "The hook's 'stopped end' unbinds the routed network's bridge"
run virtzone hook network routed stopped end - <<<"$hookdata"
run virtzone list
