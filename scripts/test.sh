#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what the tests need, fetches
# the second firewalld release the suite runs against, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real (firewalld, its backends, a private bus, namespaces).
packages=(firewalld nftables dbus iproute2 iptables iputils-ping hyperfine)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install a Rust toolchain (1.89 or newer, e.g. with rustup) and run this again" >&2
    exit 1
fi

echo "== fetching firewalld 2.3.1 (Debian 13) into the lab cache"
scripts/fetch-firewalld.sh

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast
else
    cargo test --locked --no-fail-fast
fi
