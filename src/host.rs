//! Facts about this host's network namespace.

use std::path::Path;

/// The bridges of the current network namespace, sorted by name.
///
/// Read from sysfs (`/sys/class/net/*/bridge`), which shows the namespace sysfs was mounted for:
/// `ip netns exec` remounts it, a bare `unshare --net` does not.
pub fn bridges() -> std::io::Result<Vec<String>> {
    bridges_in(Path::new("/sys/class/net"))
}

fn bridges_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().join("bridge").is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `/proc/sys/KEY` of the current network namespace, trimmed; `None` when it cannot be read
/// (e.g. the interface of `net/ipv4/conf/IF/…` does not exist).
pub fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key))
        .ok()
        .map(|v| v.trim().to_string())
}

/// Whether `/proc/sys/KEY` may be written: not under systemd's `ProtectKernelTunables=`, which
/// mounts `/proc/sys` read-only for the daemon.
pub fn sysctl_writable(key: &str) -> bool {
    rustix::fs::access(
        Path::new("/proc/sys").join(key),
        rustix::fs::Access::WRITE_OK,
    )
    .is_ok()
}

/// Writes `value` to `/proc/sys/KEY` (never through a symlink; there are none in /proc/sys, and
/// a key naming one is refused).
pub fn write_sysctl(key: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = Path::new("/proc/sys").join(key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(value.as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// virtzone's own nftables table, holding only the localnet guard.
///
/// Where `route_localnet` is on (a forward of the host's loopback address), guests could reach
/// the host's loopback-only services, the known risk of that setting. The guard drops every packet
/// to 127.0.0.0/8 that arrives on an interface other than `lo`, before routing and conntrack, in a
/// table of its own: neither a firewalld reload, restart or stop, nor libvirt's accepts in INPUT
/// (measured: with firewalld's iptables backend, libvirt's `LIBVIRT_INP` accepts guests' DNS before
/// any firewalld policy could drop it) take it away. Without `route_localnet` such packets are
/// martians anyway, so the guard costs nothing.
pub const LOCALNET_GUARD: &str = "virtzone";
/// The guard's chain in [`LOCALNET_GUARD`].
const GUARD_CHAIN: &str = "localnet";

/// Whether the localnet guard is in place; `None` when nft cannot be run.
pub fn localnet_guard_present() -> Option<bool> {
    let listing = crate::external::nft_json(&["list", "tables", "inet"]).ok()?;
    let tables: serde_json::Value = serde_json::from_str(&listing).ok()?;
    let ours = tables["nftables"].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|i| i["table"]["name"] == LOCALNET_GUARD && i["table"]["family"] == "inet")
    });
    if !ours {
        return Some(false);
    }
    let chain =
        crate::external::nft_json(&["list", "chain", "inet", LOCALNET_GUARD, GUARD_CHAIN]).ok()?;
    Some(chain.contains("\"drop\"") && chain.contains("127.0.0.0"))
}

/// The nft commands (JSON, `{"add": …}` …) that put the localnet guard in place (`present`) or
/// take it away, idempotently; the executor runs them as one nft transaction.
pub fn localnet_guard_commands(present: bool) -> Vec<serde_json::Value> {
    let table = serde_json::json!({"table": {"family": "inet", "name": LOCALNET_GUARD}});
    if !present {
        // Adding first makes the deletion succeed whether or not the table exists.
        return vec![
            serde_json::json!({"add": table}),
            serde_json::json!({"delete": table}),
        ];
    }
    vec![
        serde_json::json!({"add": table}),
        serde_json::json!({"add": {"chain": {"family": "inet", "table": LOCALNET_GUARD,
            "name": GUARD_CHAIN, "type": "filter", "hook": "prerouting", "prio": -310,
            "policy": "accept"}}}),
        serde_json::json!({"flush": {"chain": {"family": "inet", "table": LOCALNET_GUARD,
            "name": GUARD_CHAIN}}}),
        serde_json::json!({"add": {"rule": {"family": "inet", "table": LOCALNET_GUARD,
        "chain": GUARD_CHAIN,
        "comment": "virtzone: guests never reach the host's loopback (route_localnet)",
        "expr": [
            {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"match": {"op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
            {"counter": null},
            {"drop": null}
        ]}}}),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_guard_commands_are_valid_nft_commands() {
        // The executor parses them with the nftables crate's schema before nft runs.
        for present in [true, false] {
            for c in super::localnet_guard_commands(present) {
                serde_json::from_value::<nftables::schema::NfCmd<'static>>(c.clone())
                    .unwrap_or_else(|e| panic!("{c}: {e}"));
            }
        }
    }

    #[test]
    fn finds_bridge_directories() {
        let dir = tempfile::tempdir().unwrap();
        for (name, is_bridge) in [("virbr0", true), ("eth0", false), ("br-x", true)] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            if is_bridge {
                std::fs::create_dir(dir.path().join(name).join("bridge")).unwrap();
            }
        }
        assert_eq!(super::bridges_in(dir.path()).unwrap(), ["br-x", "virbr0"]);
    }
}
