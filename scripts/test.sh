#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what the tests need, fetches
# the other firewalld releases the suite runs against, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/packages.sh
# Debian packages the tests drive for real (firewalld, its backends, a private bus, namespaces).
ensure_packages firewalld nftables dbus iproute2 iptables iputils-ping hyperfine systemd procps make \
    libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 libvirt-clients dnsmasq-base busybox zsh fish rpm man-db groff-base pkg-config \
    mmdebstrap debhelper util-linux ansible-core
# A real Docker daemon inside a lab namespace (tests/common/docker.rs): doctor's fix for Docker's
# FORWARD DROP is proven against its own chains. The package's service is not started (policy-rc.d).
ensure_packages docker.io
# The Cockpit page's browser test (tests/cockpit.rs): Debian 12's cockpit 287 and headless Chromium.
ensure_packages cockpit-ws cockpit-bridge chromium
# Its build check rebuilds cockpit/dist into a temp dir with the locked toolchain (esbuild,
# PatternFly) and compares it with the committed one: install only the toolchain here, never rebuild
# cockpit/dist itself (that would hide a stale commit).
command -v npm >/dev/null || ensure_packages nodejs npm
echo "== the Cockpit page's toolchain (cockpit/node_modules, from cockpit/package-lock.json)"
make -s cockpit-deps

echo "== fetching firewalld 0.9.3, 2.3.1 and 2.5.2 (Debian 11, 13, sid) into the lab cache"
scripts/fetch-firewalld.sh
echo "== building the Debian sid root (libvirt 12, firewalld 2.5.2) into the lab cache"
scripts/fetch-sid-root.sh

echo "== the booted-system lab's Debian 12 root (cached under target/lab/roots)"
scripts/build-root.sh

echo "== this tree's .deb for the booted-system tests (cached under target/packages/cache)"
scripts/deb-cached.sh

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi
