//! Which firewall backend libvirt's network driver uses: from its `network.conf`, else from the rules
//! it keeps running. libvirt 10.4 added an nftables backend (table `ip libvirt_network`); before, and
//! where configured so (Debian's default), it writes iptables chains (`LIBVIRT_INP`, `LIBVIRT_FWO`, …).

use serde::Serialize;

/// libvirt's network configuration.
pub const NETWORK_CONF: &str = "/etc/libvirt/network.conf";

/// libvirt's firewall backend and where that was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibvirtFirewall {
    /// `nftables` or `iptables`.
    pub backend: String,
    /// `network.conf` or `running rules`.
    pub source: String,
}

/// The `firewall_backend` setting of a `network.conf` text, if set (uncommented).
pub fn from_network_conf(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let value = line.strip_prefix("firewall_backend")?.trim_start();
        let value = value.strip_prefix('=')?.trim();
        let value = value.trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The backend libvirt's running rules show: its nftables table, or its iptables chains (in
/// `nft list tables` / `iptables -S` terms: `ip libvirt_network` present, or chain `LIBVIRT_FWO`).
pub fn from_rules(has_nft_table: bool, has_iptables_chain: bool) -> Option<String> {
    match (has_nft_table, has_iptables_chain) {
        (true, _) => Some("nftables".into()),
        (false, true) => Some("iptables".into()),
        (false, false) => None,
    }
}

/// Reads what can be read, `network.conf` first; `None` when neither tells.
pub fn detect() -> Option<LibvirtFirewall> {
    if let Some(backend) = std::fs::read_to_string(NETWORK_CONF)
        .ok()
        .as_deref()
        .and_then(from_network_conf)
    {
        return Some(LibvirtFirewall {
            backend,
            source: NETWORK_CONF.into(),
        });
    }
    let ok = |args: &[&str]| {
        crate::external::output_within(
            std::process::Command::new("nft").args(args),
            None,
            crate::external::COMMAND_TIMEOUT,
        )
        .is_ok_and(|o| o.status.success())
    };
    let backend = from_rules(
        ok(&["list", "table", "ip", "libvirt_network"]),
        ok(&["list", "chain", "ip", "filter", "LIBVIRT_FWO"]),
    )?;
    Some(LibvirtFirewall {
        backend,
        source: "running rules".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_conf_setting() {
        assert_eq!(
            from_network_conf("#firewall_backend = \"iptables\"\n"),
            None
        );
        assert_eq!(
            from_network_conf("# x\nfirewall_backend = \"nftables\"\n"),
            Some("nftables".into())
        );
        assert_eq!(
            from_network_conf("  firewall_backend=\"iptables\""),
            Some("iptables".into())
        );
        assert_eq!(from_network_conf("firewall_backend_x = 1"), None);
        assert_eq!(from_rules(false, true), Some("iptables".into()));
        assert_eq!(from_rules(false, false), None);
    }
}
