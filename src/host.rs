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
/// the host's loopback-only services, the known risk of that setting (the CVE-2020-8558 class). The
/// guard drops every packet to 127.0.0.0/8, and every packet from it (a spoofed source, which the
/// setting no longer treats as a martian, and which services trusting 127.0.0.0/8 would take for
/// the host's own), that arrives on an interface other than `lo`, before routing and conntrack, in
/// a table of its own: neither a firewalld reload, restart or stop, nor libvirt's accepts in INPUT
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
    Some(guard_complete(&chain))
}

/// Whether `nft -j list chain inet virtzone localnet` shows both of the guard's rules (an older
/// virtzone's guard had only the destination rule: it is then put in place again, whole).
fn guard_complete(chain_json: &str) -> bool {
    let Ok(listing) = serde_json::from_str::<serde_json::Value>(chain_json) else {
        return false;
    };
    let rules: Vec<&serde_json::Value> = listing["nftables"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.get("rule")).collect())
        .unwrap_or_default();
    ["saddr", "daddr"].iter().all(|field| {
        rules.iter().any(|r| {
            let text = r["expr"].to_string();
            text.contains("\"drop\"")
                && text.contains("127.0.0.0")
                && text.contains(&format!("\"field\":\"{field}\""))
        })
    })
}

/// The entries of `/proc/sys/net/ipv4/conf` whose `route_localnet` is on, sorted: interfaces and
/// `all` (the kernel ORs `all` with each interface's own value). Not `default` (it only seeds
/// interfaces created later, which show up here once they exist) and not `lo` (packets arriving on
/// `lo` are the host's own).
pub fn route_localnet_on() -> Vec<String> {
    route_localnet_on_in(Path::new("/proc/sys/net/ipv4/conf"))
}

fn route_localnet_on_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut on: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != "default" && name != "lo")
        .filter(|name| {
            std::fs::read_to_string(dir.join(name).join("route_localnet"))
                .is_ok_and(|v| v.trim() == "1")
        })
        .collect();
    on.sort();
    on
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
    let rule = |field: &str, comment: &str| {
        serde_json::json!({"add": {"rule": {"family": "inet", "table": LOCALNET_GUARD,
        "chain": GUARD_CHAIN,
        "comment": comment,
        "expr": [
            {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"match": {"op": "==",
                "left": {"payload": {"protocol": "ip", "field": field}},
                "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
            {"counter": null},
            {"drop": null}
        ]}}})
    };
    vec![
        serde_json::json!({"add": table}),
        serde_json::json!({"add": {"chain": {"family": "inet", "table": LOCALNET_GUARD,
            "name": GUARD_CHAIN, "type": "filter", "hook": "prerouting", "prio": -310,
            "policy": "accept"}}}),
        serde_json::json!({"flush": {"chain": {"family": "inet", "table": LOCALNET_GUARD,
            "name": GUARD_CHAIN}}}),
        rule(
            "daddr",
            "virtzone: guests never reach the host's loopback (route_localnet)",
        ),
        rule(
            "saddr",
            "virtzone: no loopback source arrives from outside (route_localnet)",
        ),
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
    fn the_guard_is_complete_only_with_both_rules() {
        let rule = |field: &str| {
            format!(
                r#"{{"rule": {{"family": "inet", "table": "virtzone", "chain": "localnet", "expr": [
                {{"match": {{"op": "!=", "left": {{"meta": {{"key": "iifname"}}}}, "right": "lo"}}}},
                {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "{field}"}}}},
                  "right": {{"prefix": {{"addr": "127.0.0.0", "len": 8}}}}}}}},
                {{"counter": {{"packets": 0, "bytes": 0}}}}, {{"drop": null}}]}}}}"#
            )
        };
        let listing = |rules: &[String]| format!(r#"{{"nftables": [{}]}}"#, rules.join(","));
        assert!(super::guard_complete(&listing(&[
            rule("daddr"),
            rule("saddr")
        ])));
        // An older virtzone's guard, the destination rule alone.
        assert!(!super::guard_complete(&listing(&[rule("daddr")])));
        assert!(!super::guard_complete(&listing(&[])));
        assert!(!super::guard_complete("not json"));
    }

    #[test]
    fn finds_interfaces_with_route_localnet_on() {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("all", "0"),
            ("default", "1"),
            ("lo", "1"),
            ("virbr0", "1\n"),
            ("eth0", "0"),
            ("br-x", "1"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("route_localnet"), value).unwrap();
        }
        assert_eq!(super::route_localnet_on_in(dir.path()), ["br-x", "virbr0"]);
        assert!(super::route_localnet_on_in(&dir.path().join("missing")).is_empty());
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
