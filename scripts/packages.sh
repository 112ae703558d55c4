# Sourced by the scripts: installs the Debian packages given as arguments when any is missing.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "== installing ${missing[*]}"
        apt-get update -q
        # No package may start a daemon on this host (libvirt-daemon-system would start libvirtd and
        # its default network): tests start their own, inside their labs.
        local guard=/usr/sbin/policy-rc.d created=""
        if [ ! -e "$guard" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod +x "$guard" && created=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=600 "${missing[@]}" || { [ -z "$created" ] || rm -f "$guard"; return 1; }
        [ -z "$created" ] || rm -f "$guard"
    fi
    if ! command -v cargo >/dev/null; then
        echo "cargo is missing: install a Rust toolchain (1.89 or newer, e.g. with rustup) and run this again" >&2
        exit 1
    fi
}
