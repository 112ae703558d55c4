#!/usr/bin/env bash
# The demo's steps, run by scripts/demo.sh inside a lab (DBUS_SYSTEM_BUS_ADDRESS points at the lab's bus).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/target/release:$PATH" VIRTZONE_STATE_DIR="$LAB_DIR/state"
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

step "Status, with a bridge bound to the libvirt zone"
ip link add virbr0 type bridge
run firewall-cmd --zone=libvirt --change-interface=virbr0
run virtzone status
