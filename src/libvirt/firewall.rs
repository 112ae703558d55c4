//! Which firewall backend libvirt's network driver uses, the one place that decides it: from its
//! `network.conf`, else from the rules it keeps running. libvirt 10.4 added an nftables backend
//! (table `ip libvirt_network`, chain `guest_input` naming each bridge); before, and where
//! configured so (Debian's default), it writes iptables chains (`LIBVIRT_INP`, `LIBVIRT_FWI`, …).
//!
//! The decision is pure ([`Rules`], [`decide`]): each caller fills [`Rules`] from the listing it
//! already has (forwards: `iptables -S` through firewalld and libvirt's nftables table; the healer:
//! `nft list tables` and base-chain jumps; `doctor`: the whole ruleset; `status`: two `nft` probes).

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// libvirt's network configuration.
pub const NETWORK_CONF: &str = "/etc/libvirt/network.conf";

/// libvirt's nftables table, in families `ip` and `ip6`.
pub const NFT_TABLE: &str = "libvirt_network";

/// libvirt's iptables chain that rejects forwarded traffic into its networks unless accepted
/// before; every bridge of a network with libvirt's rules is named there (`-o BRIDGE`).
pub const IPTABLES_FWI: &str = "LIBVIRT_FWI";

/// libvirt's firewall backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LibvirtBackend {
    /// iptables chains (`LIBVIRT_*`, libvirt before 10.4 or configured so).
    Iptables,
    /// Its own nftables tables `ip`/`ip6 libvirt_network` (libvirt ≥ 10.4).
    Nftables,
}

impl LibvirtBackend {
    /// libvirt's name for it, as in `network.conf`.
    pub fn as_str(self) -> &'static str {
        match self {
            LibvirtBackend::Iptables => "iptables",
            LibvirtBackend::Nftables => "nftables",
        }
    }

    /// A `firewall_backend` value; `None` for anything libvirt does not know.
    pub fn parse(text: &str) -> Option<LibvirtBackend> {
        match text {
            "iptables" => Some(LibvirtBackend::Iptables),
            "nftables" => Some(LibvirtBackend::Nftables),
            _ => None,
        }
    }
}

impl fmt::Display for LibvirtBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libvirt's firewall backend and where that was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibvirtFirewall {
    /// `nftables` or `iptables`.
    pub backend: LibvirtBackend,
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

/// What libvirt's running rules show, whichever listing it was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// libvirt's nftables table exists.
    pub nft_table: bool,
    /// libvirt's iptables chains (`LIBVIRT_*`) exist.
    pub iptables_chains: bool,
    /// The bridges libvirt's own rules in nftables chain `guest_input` name.
    pub nft_bridges: BTreeSet<String>,
    /// The bridges libvirt's iptables chain [`IPTABLES_FWI`] names.
    pub iptables_bridges: BTreeSet<String>,
}

impl Rules {
    /// From an `iptables -S` listing of table `filter` (`None`: no iptables to ask) and the bridges
    /// of libvirt's nftables chain `guest_input` (`None`: no such table).
    pub fn from_listings(
        iptables_filter: Option<&str>,
        nft_bridges: Option<BTreeSet<String>>,
    ) -> Self {
        let listing = iptables_filter.unwrap_or_default();
        Rules {
            nft_table: nft_bridges.is_some(),
            iptables_chains: listing.lines().any(|l| l.starts_with("-N LIBVIRT_")),
            nft_bridges: nft_bridges.unwrap_or_default(),
            iptables_bridges: iptables_bridges(listing),
        }
    }

    /// The host's backend as the rules show it: libvirt's nftables table wins (a switch back to
    /// iptables leaves no table behind, while a switch to nftables may leave iptables chains).
    pub fn backend(&self) -> Option<LibvirtBackend> {
        match (self.nft_table, self.iptables_chains) {
            (true, _) => Some(LibvirtBackend::Nftables),
            (false, true) => Some(LibvirtBackend::Iptables),
            (false, false) => None,
        }
    }

    /// The backend holding `bridge`'s rules: the one whose rules name it, nftables first.
    pub fn backend_of(&self, bridge: &str) -> Option<LibvirtBackend> {
        if self.nft_bridges.contains(bridge) {
            Some(LibvirtBackend::Nftables)
        } else if self.iptables_bridges.contains(bridge) {
            Some(LibvirtBackend::Iptables)
        } else {
            None
        }
    }

    /// Whether libvirt keeps rules that concern `bridge`: its iptables chains exist (they hold
    /// every network's rules; a bridge not named yet is being rebuilt), or its nftables chain
    /// names the bridge.
    pub fn present_for(&self, bridge: &str) -> bool {
        self.iptables_chains || self.nft_bridges.contains(bridge)
    }

    /// Both backends' rules exist: leftovers of a backend switch.
    pub fn both(&self) -> bool {
        self.nft_table && self.iptables_chains
    }
}

/// The bridges named in libvirt's `LIBVIRT_FWI` (`-A LIBVIRT_FWI … -o BRIDGE …`) of an
/// `iptables -S` listing. libvirt's own lines carry no quoted arguments, so words are enough.
pub fn iptables_bridges(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 3 || words[0] != "-A" || words[1] != IPTABLES_FWI {
                return None;
            }
            let i = words.iter().position(|w| *w == "-o")?;
            words.get(i + 1).map(|b| b.to_string())
        })
        .collect()
}

/// libvirt's backend: its `network.conf` setting (`conf`, the raw value) when it names one, else
/// what the running rules show.
pub fn decide(conf: Option<&str>, rules: &Rules) -> Option<LibvirtBackend> {
    conf.and_then(LibvirtBackend::parse)
        .or_else(|| rules.backend())
}

/// Reads what can be read, `network.conf` first; `None` when neither tells.
pub fn detect() -> Option<LibvirtFirewall> {
    let conf = std::fs::read_to_string(NETWORK_CONF)
        .ok()
        .as_deref()
        .and_then(from_network_conf);
    if let Some(backend) = conf.as_deref().and_then(LibvirtBackend::parse) {
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
    let rules = Rules {
        nft_table: ok(&["list", "table", "ip", NFT_TABLE]),
        iptables_chains: ok(&["list", "chain", "ip", "filter", "LIBVIRT_FWO"]),
        ..Rules::default()
    };
    Some(LibvirtFirewall {
        backend: decide(None, &rules)?,
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
    }

    /// The backend per bridge and for the host, from the listings the forwards read.
    #[test]
    fn backend_from_listings() {
        let ipt = "-P FORWARD ACCEPT\n-N LIBVIRT_FWI\n-N LIBVIRT_FWO\n\
                   -A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
                   -A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable\n\
                   -A FORWARD -o virbr9 -j ACCEPT\n";
        let nft: BTreeSet<String> = ["virbr1".to_string()].into();
        let only_ipt = Rules::from_listings(Some(ipt), None);
        assert_eq!(only_ipt.backend(), Some(LibvirtBackend::Iptables));
        assert_eq!(
            only_ipt.backend_of("virbr0"),
            Some(LibvirtBackend::Iptables)
        );
        assert_eq!(only_ipt.backend_of("virbr9"), None);
        assert!(only_ipt.present_for("virbr5") && !only_ipt.both());
        let both = Rules::from_listings(Some(ipt), Some(nft.clone()));
        assert_eq!(both.backend(), Some(LibvirtBackend::Nftables));
        assert_eq!(both.backend_of("virbr1"), Some(LibvirtBackend::Nftables));
        assert_eq!(both.backend_of("virbr0"), Some(LibvirtBackend::Iptables));
        assert!(both.both());
        let only_nft = Rules::from_listings(Some("-P FORWARD ACCEPT\n"), Some(nft));
        assert!(only_nft.present_for("virbr1") && !only_nft.present_for("virbr0"));
        let none = Rules::from_listings(None, None);
        assert_eq!(none.backend(), None);
        assert!(!none.present_for("virbr0"));
    }

    /// `network.conf` wins over the rules, unless it names no backend libvirt knows.
    #[test]
    fn configuration_first() {
        let ipt = Rules {
            iptables_chains: true,
            ..Rules::default()
        };
        assert_eq!(
            decide(Some("nftables"), &ipt),
            Some(LibvirtBackend::Nftables)
        );
        assert_eq!(decide(Some("bogus"), &ipt), Some(LibvirtBackend::Iptables));
        assert_eq!(decide(None, &Rules::default()), None);
    }
}
