#!/usr/bin/env bash
# virtzone's benchmark report (as root on Debian 12): one run, one table, every figure beside its
# baseline. Results with the machine description belong in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/packages.sh
ensure_packages firewalld nftables dbus iproute2 iptables
cargo bench --bench virtzone
