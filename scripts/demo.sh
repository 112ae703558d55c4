#!/usr/bin/env bash
# The demo: virtzone on a private firewalld lab (its own bus and network namespace; the host's firewall
# and bus are never touched), once per firewalld backend. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh
ensure_packages firewalld nftables dbus iproute2 iptables
cargo build --release --quiet --bin virtzone --example lab
for backend in nftables iptables; do
    printf '\n######## firewalld with the %s backend ########\n' "$backend"
    target/release/examples/lab --backend "$backend" --bus-policy dbus/org.virtzone.VirtZone1.conf \
        -- scripts/demo-steps.sh
done
