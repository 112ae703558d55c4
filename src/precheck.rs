//! The net-start pre-check: will guest networking work for this network on this firewalld?
//!
//! A pure decision over gathered facts, following libvirt 9's own rules for choosing a bridge's zone
//! (see `libvirt.md`), so that a failure here is the failure libvirt would hit, said earlier and
//! with the way out.

use serde::Serialize;

use crate::firewalld::{Backend, Capabilities, FirewalldFacts, Running, State};
use crate::libvirt::network::Bridged;
use crate::libvirt::{ForwardMode, Network};
use crate::names::ZoneName;
use crate::{LIBVIRT_ROUTED_OUT_POLICY, LIBVIRT_ROUTED_ZONE, LIBVIRT_ZONE};

/// Why the verdict is what it is; stable names for scripts (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// firewalld is not running and nothing asked for a zone.
    FirewalldNotRunning,
    /// A zone was requested, but firewalld is not running.
    ZoneRequestedWithoutFirewalld,
    /// firewalld's configuration failed to load.
    FirewalldFailed,
    /// The requested zone exists.
    RequestedZone,
    /// The requested zone does not exist.
    RequestedZoneMissing,
    /// libvirt's rules chose a zone, and it exists.
    DefaultZone,
    /// Forward mode `open`: libvirt sets no zone.
    OpenMode,
    /// The network has no libvirt bridge (`bridge`, macvtap and hostdev modes).
    UnmanagedBridge,
    /// No libvirt zone on the nftables backend: guest networking will break.
    NoZoneNftables,
    /// No libvirt zone on the iptables backend: works, through libvirt's own rules.
    NoZoneIptables,
}

/// The outcome of the pre-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether guest networking will work (exit status 0) or not (1).
    pub ok: bool,
    /// The stable reason.
    pub reason: Reason,
    /// The zone the bridge gets, when it gets one.
    pub zone: Option<ZoneName>,
    /// One or more sentences for the user: what happens, or what is wrong and what to do.
    pub message: String,
    /// Things that work but deserve attention.
    pub warnings: Vec<String>,
}

impl Verdict {
    fn pass(reason: Reason, zone: Option<ZoneName>, message: String) -> Self {
        Verdict {
            ok: true,
            reason,
            zone,
            message,
            warnings: Vec::new(),
        }
    }

    fn fail(reason: Reason, message: String) -> Self {
        Verdict {
            ok: false,
            reason,
            zone: None,
            message,
            warnings: Vec::new(),
        }
    }
}

/// What is being checked: a network, and a zone the caller requests over the network's own.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The network.
    pub network: &'a Network,
    /// `--zone`: overrides `<bridge zone=…>`.
    pub zone: Option<&'a ZoneName>,
}

impl Request<'_> {
    fn explicit_zone(&self) -> Option<&ZoneName> {
        self.zone.or(self.network.zone.as_ref())
    }

    fn bridge(&self) -> &str {
        self.network
            .bridge
            .as_ref()
            .map_or("(none)", |b| b.as_str())
    }
}

/// The zone libvirt's rules give a network's bridge on this firewalld, when one exists.
///
/// Explicit zones aside: route mode gets `libvirt-routed` when that zone and the `libvirt-routed-out`
/// policy exist, else `libvirt`; nat and isolated networks get `libvirt`; `open` and unmanaged modes
/// get nothing.
pub fn default_zone(forward: &ForwardMode, fw: &Running) -> Option<ZoneName> {
    match forward {
        ForwardMode::Open | ForwardMode::Unmanaged(_) => None,
        ForwardMode::Route
            if fw.zones.contains(LIBVIRT_ROUTED_ZONE)
                && fw.has_policy(LIBVIRT_ROUTED_OUT_POLICY) =>
        {
            Some(ZoneName::libvirt_routed())
        }
        ForwardMode::Route | ForwardMode::Nat | ForwardMode::None => {
            fw.zones.contains(LIBVIRT_ZONE).then(ZoneName::libvirt)
        }
    }
}

/// firewalld 2.0.0 and 2.0.1 do not apply policies whose egress zone is `ANY` to interfaces added at
/// runtime (fixed in 2.0.2): a routed network's bridge, bound at runtime, loses policy
/// `libvirt-routed-out`. The warning for such a version, if it is one.
pub fn egress_any_warning(caps: &Capabilities, version_text: &str) -> Option<String> {
    caps.egress_any_misses_runtime_interfaces.then(|| {
        format!(
            "firewalld {version_text} does not apply policies whose egress zone is ANY to interfaces \
             added at runtime (fixed in 2.0.2): routed networks lose their outbound policy \
             {LIBVIRT_ROUTED_OUT_POLICY}, so their guests reach nothing beyond the host; upgrade \
             firewalld"
        )
    })
}

/// What a network without a libvirt bridge means for its guests' traffic (forward mode `bridge`
/// on a host bridge, macvtap, hostdev).
pub fn bridged_message(network: &Network, mode: &str) -> String {
    let net = &network.name;
    match network.bridged() {
        Some(Bridged::HostBridge(br)) => format!(
            "network {net} puts its guests on host bridge {br} (forward mode bridge): libvirt owns no \
             bridge for it and virtzone changes no zone for it; {br}'s own zone decides its guests' \
             traffic (guest to guest and to the LAN: that zone's intra-zone forwarding) whenever \
             br_netfilter (net.bridge.bridge-nf-call-iptables) passes bridged frames to the IP \
             firewall; `virtzone explain --bridge {br} --forward --to ADDR tcp/PORT` follows such a \
             packet"
        ),
        Some(Bridged::Macvtap(devs)) => format!(
            "network {net} attaches its guests by macvtap to {} (forward mode {mode}): their \
             traffic never crosses a host bridge or the host's netfilter bridge path, so no zone \
             and no br_netfilter setting applies to it (and guests cannot reach the host through \
             the same device)",
            devs.join(", ")
        ),
        None => format!(
            "network {net} uses forward mode {mode}: libvirt owns no bridge for it, so no zone is needed"
        ),
    }
}

/// Decides whether guest networking will work for `req` on the firewalld described by `facts`.
pub fn decide(req: &Request<'_>, facts: &FirewalldFacts) -> Verdict {
    let net = &req.network.name;
    let bridge = req.bridge();
    if let ForwardMode::Unmanaged(mode) = &req.network.forward {
        return Verdict::pass(
            Reason::UnmanagedBridge,
            None,
            bridged_message(req.network, mode),
        );
    }
    let fw = match facts {
        FirewalldFacts::NotRunning { .. } => {
            return match req.explicit_zone() {
                Some(zone) => Verdict::fail(
                    Reason::ZoneRequestedWithoutFirewalld,
                    format!(
                        "zone {zone} requested for network {net} but firewalld is not running; \
                         start firewalld or remove the zone from the network's <bridge> element"
                    ),
                ),
                None => Verdict::pass(
                    Reason::FirewalldNotRunning,
                    None,
                    format!(
                        "firewalld is not running: nothing filters network {net}'s bridge {bridge}"
                    ),
                ),
            };
        }
        FirewalldFacts::Running(fw) => fw,
    };
    if fw.state == State::Failed {
        return Verdict::fail(
            Reason::FirewalldFailed,
            format!(
                "firewalld {} is in FAILED state: its configuration did not load and it runs a fallback \
                 without your zones; see `journalctl -u firewalld` (or /var/log/firewalld) for the broken \
                 file, fix it, then run `firewall-cmd --reload`",
                fw.version_text
            ),
        );
    }
    if let Some(zone) = req.explicit_zone() {
        return if fw.zones.contains(zone.as_str()) {
            let mut verdict = Verdict::pass(
                Reason::RequestedZone,
                Some(zone.clone()),
                format!("bridge {bridge} of network {net} gets the requested zone {zone}"),
            );
            if zone.as_str() == LIBVIRT_ROUTED_ZONE {
                verdict
                    .warnings
                    .extend(egress_any_warning(&fw.capabilities, &fw.version_text));
            }
            verdict
        } else {
            let hint = if zone.as_str().starts_with(LIBVIRT_ZONE) {
                "run `virtzone install` to add libvirt's zones"
            } else {
                "create it with `firewall-cmd --permanent --new-zone` and reload, or request an existing zone"
            };
            Verdict::fail(
                Reason::RequestedZoneMissing,
                format!(
                    "zone {zone} requested for network {net} does not exist in firewalld; {hint}"
                ),
            )
        };
    }
    if req.network.forward == ForwardMode::Open {
        return Verdict::pass(
            Reason::OpenMode,
            None,
            format!(
                "network {net} uses forward mode open: libvirt sets no zone, bridge {bridge} stays wherever \
                 firewalld puts it"
            ),
        );
    }
    if let Some(zone) = default_zone(&req.network.forward, fw) {
        let mut verdict = Verdict::pass(
            Reason::DefaultZone,
            Some(zone.clone()),
            format!("bridge {bridge} of network {net} gets zone {zone}"),
        );
        if zone.as_str() == LIBVIRT_ROUTED_ZONE {
            verdict
                .warnings
                .extend(egress_any_warning(&fw.capabilities, &fw.version_text));
        }
        if req.network.forward == ForwardMode::Route && zone.as_str() == LIBVIRT_ZONE {
            verdict.warnings.push(format!(
                "routed network {net} falls back to zone {LIBVIRT_ZONE}: zone {LIBVIRT_ROUTED_ZONE} or policy \
                 {LIBVIRT_ROUTED_OUT_POLICY} is missing (firewalld {} {} policies)",
                fw.version_text,
                if fw.capabilities.policies { "supports" } else { "does not support" },
            ));
        }
        return verdict;
    }
    missing_zone(req, fw)
}

/// No zone exists for the network: fatal on nftables (its drop cannot be overridden from libvirt's
/// tables), survivable on iptables (libvirt's own rules carry the traffic).
fn missing_zone(req: &Request<'_>, fw: &Running) -> Verdict {
    let net = &req.network.name;
    let bridge = req.bridge();
    if fw.backend == Backend::Nftables && fw.capabilities.nftables_backend {
        let way_out = if fw.capabilities.rule_priorities {
            "run `virtzone install` to add the zone, or set FirewallBackend=iptables in \
             /etc/firewalld/firewalld.conf and restart firewalld"
                .to_string()
        } else {
            format!(
                "firewalld {} cannot load the {LIBVIRT_ZONE} zone at all (it needs rich-rule priorities, \
                 firewalld 0.7.0 or later): upgrade firewalld to 0.7.0 or later, or set \
                 FirewallBackend=iptables in /etc/firewalld/firewalld.conf and restart firewalld",
                fw.version_text
            )
        };
        return Verdict::fail(
            Reason::NoZoneNftables,
            format!(
                "firewalld {} uses the nftables backend and has no {LIBVIRT_ZONE} zone: guests on network \
                 {net} (bridge {bridge}) would lose DHCP, DNS and forwarded traffic, because firewalld \
                 drops bridge traffic that no zone accepts and libvirt's own rules cannot override that; \
                 {way_out}",
                fw.version_text
            ),
        );
    }
    let mut verdict = Verdict::pass(
        Reason::NoZoneIptables,
        None,
        format!(
            "firewalld has no {LIBVIRT_ZONE} zone; on the {} backend guest networking of network {net} works \
             through libvirt's own iptables rules",
            fw.backend.as_str()
        ),
    );
    verdict.warnings.push(format!(
        "bridge {bridge} stays in firewalld's default zone; run `virtzone install` to give it the {LIBVIRT_ZONE} zone"
    ));
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewalld::{parse_version, Capabilities};
    use crate::names::BridgeName;

    fn running(
        version: &str,
        backend: Backend,
        zones: &[&str],
        policies: &[&str],
    ) -> FirewalldFacts {
        let v = parse_version(version).unwrap();
        let caps = Capabilities::of(&v);
        FirewalldFacts::Running(Running {
            capabilities: caps,
            version: v,
            version_text: version.into(),
            state: State::Running,
            backend,
            zones: zones.iter().map(|s| s.to_string()).collect(),
            policies: caps
                .policies
                .then(|| policies.iter().map(|s| s.to_string()).collect()),
        })
    }

    fn net(forward: ForwardMode, zone: Option<&str>) -> Network {
        Network {
            name: "default".parse().unwrap(),
            bridge: forward
                .has_libvirt_bridge()
                .then(|| BridgeName::new("virbr0").unwrap()),
            zone: zone.map(|z| ZoneName::new(z).unwrap()),
            forward,
            ips: Vec::new(),
            forward_devs: Vec::new(),
            nat: None,
        }
    }

    const ALL: &[&str] = &["public", "trusted", "libvirt", "libvirt-routed"];
    const POLICIES: &[&str] = &["libvirt-routed-in", "libvirt-routed-out", "libvirt-to-host"];
    use Backend::{Iptables as Ipt, Nftables as Nft};
    use ForwardMode::{Nat, None as Isolated, Open, Route};

    /// (version, backend, zones, policies, mode, xml zone, --zone) → (ok, reason, zone, message part)
    type Row = (
        &'static str,
        Backend,
        &'static [&'static str],
        &'static [&'static str],
        ForwardMode,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        Reason,
        Option<&'static str>,
        &'static str,
    );

    #[test]
    fn decision_table() {
        let bridge = || ForwardMode::Unmanaged("bridge".into());
        let pub_only: &[&str] = &["public"];
        let no_rt: &[&str] = &["public", "libvirt"];
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            // Zones present: nat, isolated, route pick theirs on every version that has them.
            ("1.3.3", Nft, ALL, POLICIES, Nat, None, None, true, Reason::DefaultZone, Some("libvirt"), "gets zone libvirt"),
            ("1.3.3", Nft, ALL, POLICIES, Isolated, None, None, true, Reason::DefaultZone, Some("libvirt"), "virbr0"),
            ("1.3.3", Nft, ALL, POLICIES, Route, None, None, true, Reason::DefaultZone, Some("libvirt-routed"), "libvirt-routed"),
            ("2.3.1", Ipt, ALL, POLICIES, Route, None, None, true, Reason::DefaultZone, Some("libvirt-routed"), "libvirt-routed"),
            ("2.0.0", Nft, ALL, POLICIES, Nat, None, None, true, Reason::DefaultZone, Some("libvirt"), "libvirt"),
            ("0.9.0", Nft, ALL, POLICIES, Route, None, None, true, Reason::DefaultZone, Some("libvirt-routed"), "libvirt-routed"),
            // Route falls back to libvirt without the policy, or before policies existed.
            ("1.3.3", Nft, ALL, &["libvirt-routed-in"], Route, None, None, true, Reason::DefaultZone, Some("libvirt"), "gets zone libvirt"),
            ("1.3.3", Nft, no_rt, POLICIES, Route, None, None, true, Reason::DefaultZone, Some("libvirt"), "gets zone libvirt"),
            ("0.7.0", Nft, no_rt, &[], Route, None, None, true, Reason::DefaultZone, Some("libvirt"), "gets zone libvirt"),
            // No zone: nftables ≥ 0.6.0 fails loudly; iptables passes.
            ("1.3.3", Nft, pub_only, &[], Nat, None, None, false, Reason::NoZoneNftables, None, "nftables backend and has no libvirt zone"),
            ("2.3.1", Nft, pub_only, &[], Isolated, None, None, false, Reason::NoZoneNftables, None, "virtzone install"),
            ("1.3.3", Nft, pub_only, &[], Route, None, None, false, Reason::NoZoneNftables, None, "FirewallBackend=iptables"),
            ("0.9.0", Nft, pub_only, &[], Nat, None, None, false, Reason::NoZoneNftables, None, "virtzone install"),
            ("0.7.0", Nft, pub_only, &[], Nat, None, None, false, Reason::NoZoneNftables, None, "virtzone install"),
            ("0.6.4", Nft, pub_only, &[], Nat, None, None, false, Reason::NoZoneNftables, None, "upgrade firewalld to 0.7.0"),
            ("0.6.0", Nft, pub_only, &[], Nat, None, None, false, Reason::NoZoneNftables, None, "cannot load the libvirt zone"),
            ("0.5.5", Nft, pub_only, &[], Nat, None, None, true, Reason::NoZoneIptables, None, "libvirt's own iptables rules"),
            ("0.5.5", Ipt, pub_only, &[], Nat, None, None, true, Reason::NoZoneIptables, None, "works"),
            ("1.3.3", Ipt, pub_only, &[], Nat, None, None, true, Reason::NoZoneIptables, None, "iptables backend"),
            ("2.3.1", Ipt, pub_only, &[], Route, None, None, true, Reason::NoZoneIptables, None, "iptables"),
            ("0.4.4.6", Ipt, pub_only, &[], Nat, None, None, true, Reason::NoZoneIptables, None, "iptables"),
            // Explicit zones: XML or --zone (which wins), present or not.
            ("1.3.3", Nft, ALL, POLICIES, Nat, Some("trusted"), None, true, Reason::RequestedZone, Some("trusted"), "requested zone trusted"),
            ("1.3.3", Nft, ALL, POLICIES, Nat, Some("trusted"), Some("public"), true, Reason::RequestedZone, Some("public"), "public"),
            ("1.3.3", Nft, ALL, POLICIES, Route, None, Some("libvirt"), true, Reason::RequestedZone, Some("libvirt"), "libvirt"),
            ("1.3.3", Nft, ALL, POLICIES, Nat, Some("nosuch"), None, false, Reason::RequestedZoneMissing, None, "zone nosuch requested for network default does not exist"),
            ("1.3.3", Ipt, pub_only, &[], Nat, None, Some("libvirt"), false, Reason::RequestedZoneMissing, None, "virtzone install"),
            ("0.5.5", Ipt, pub_only, &[], Nat, Some("dmz"), None, false, Reason::RequestedZoneMissing, None, "does not exist"),
            // Open: only an explicit zone counts.
            ("1.3.3", Nft, ALL, POLICIES, Open, None, None, true, Reason::OpenMode, None, "forward mode open"),
            ("1.3.3", Nft, pub_only, &[], Open, None, None, true, Reason::OpenMode, None, "libvirt sets no zone"),
            ("1.3.3", Nft, ALL, POLICIES, Open, Some("trusted"), None, true, Reason::RequestedZone, Some("trusted"), "trusted"),
            ("1.3.3", Nft, pub_only, &[], Open, Some("libvirt"), None, false, Reason::RequestedZoneMissing, None, "libvirt"),
            // Bridge mode: nothing to check, whatever firewalld has.
            ("1.3.3", Nft, pub_only, &[], bridge(), None, None, true, Reason::UnmanagedBridge, None, "forward mode bridge"),
            ("0.6.4", Nft, pub_only, &[], bridge(), Some("nosuch"), None, true, Reason::UnmanagedBridge, None, "no zone is needed"),
        ];
        for (
            i,
            (version, backend, zones, policies, mode, xml_zone, cli_zone, ok, reason, zone, part),
        ) in table.into_iter().enumerate()
        {
            let facts = running(version, backend, zones, policies);
            let network = net(mode, xml_zone);
            let cli_zone = cli_zone.map(|z| ZoneName::new(z).unwrap());
            let v = decide(
                &Request {
                    network: &network,
                    zone: cli_zone.as_ref(),
                },
                &facts,
            );
            let row = format!(
                "row {i} ({version} {backend:?} {:?}): {v:?}",
                network.forward
            );
            assert_eq!(v.ok, ok, "{row}");
            assert_eq!(v.reason, reason, "{row}");
            assert_eq!(v.zone.as_ref().map(|z| z.as_str()), zone, "{row}");
            assert!(v.message.contains(part), "{row} should say {part:?}");
        }
    }

    #[test]
    fn firewalld_absent() {
        for no_bus in [false, true] {
            let facts = FirewalldFacts::NotRunning { no_bus };
            let v = decide(
                &Request {
                    network: &net(Nat, None),
                    zone: None,
                },
                &facts,
            );
            assert!(v.ok && v.reason == Reason::FirewalldNotRunning, "{v:?}");
            let v = decide(
                &Request {
                    network: &net(Nat, Some("libvirt")),
                    zone: None,
                },
                &facts,
            );
            assert!(!v.ok, "{v:?}");
            assert_eq!(
                v.message.split(';').next().unwrap(),
                "zone libvirt requested for network default but firewalld is not running"
            );
            let z = ZoneName::new("trusted").unwrap();
            let v = decide(
                &Request {
                    network: &net(Route, None),
                    zone: Some(&z),
                },
                &facts,
            );
            assert_eq!(v.reason, Reason::ZoneRequestedWithoutFirewalld);
            let v = decide(
                &Request {
                    network: &net(ForwardMode::Unmanaged("bridge".into()), Some("x")),
                    zone: None,
                },
                &facts,
            );
            assert!(v.ok);
        }
    }

    #[test]
    fn failed_state_fails_even_with_zones() {
        for backend in [Nft, Ipt] {
            let mut facts = running("1.3.3", backend, ALL, POLICIES);
            if let FirewalldFacts::Running(r) = &mut facts {
                r.state = State::Failed;
            }
            let v = decide(
                &Request {
                    network: &net(Nat, None),
                    zone: None,
                },
                &facts,
            );
            assert!(!v.ok);
            assert_eq!(v.reason, Reason::FirewalldFailed);
            assert!(
                v.message.contains("FAILED") && v.message.contains("journalctl"),
                "{}",
                v.message
            );
        }
    }

    #[test]
    fn warnings() {
        let v = decide(
            &Request {
                network: &net(Route, None),
                zone: None,
            },
            &running("0.8.0", Nft, &["libvirt"], &[]),
        );
        assert!(v.ok);
        assert!(
            v.warnings[0].contains("falls back to zone libvirt"),
            "{v:?}"
        );
        let v = decide(
            &Request {
                network: &net(Nat, None),
                zone: None,
            },
            &running("1.3.3", Ipt, &["public"], &[]),
        );
        assert!(v.warnings[0].contains("default zone"), "{v:?}");
        let v = decide(
            &Request {
                network: &net(Nat, None),
                zone: None,
            },
            &running("1.3.3", Nft, ALL, POLICIES),
        );
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn routed_networks_warn_on_firewalld_2_0_0_and_2_0_1() {
        for (version, warns) in [
            ("1.3.3", false),
            ("2.0.0", true),
            ("2.0.1", true),
            ("2.0.2", false),
        ] {
            let v = decide(
                &Request {
                    network: &net(Route, None),
                    zone: None,
                },
                &running(version, Nft, ALL, POLICIES),
            );
            assert!(v.ok, "{version}");
            let hit = v.warnings.iter().any(|w| w.contains("egress zone is ANY"));
            assert_eq!(hit, warns, "{version}: {v:?}");
        }
        // NAT networks have no egress-ANY policy of theirs.
        let v = decide(
            &Request {
                network: &net(Nat, None),
                zone: None,
            },
            &running("2.0.1", Nft, ALL, POLICIES),
        );
        assert!(v.warnings.is_empty(), "{v:?}");
    }

    /// Forward mode bridge on a host bridge names the bridge's zone and br_netfilter as what
    /// decides; macvtap says its traffic never crosses the host's bridge path.
    #[test]
    fn bridged_networks_say_what_decides_their_guests_traffic() {
        let facts = FirewalldFacts::NotRunning { no_bus: false };
        let mut n = net(ForwardMode::Unmanaged("bridge".into()), None);
        n.bridge = Some(BridgeName::new("br0").unwrap());
        let v = decide(
            &Request {
                network: &n,
                zone: None,
            },
            &facts,
        );
        assert!(v.ok && v.zone.is_none(), "{v:?}");
        assert!(v.message.contains("host bridge br0"), "{}", v.message);
        assert!(
            v.message.contains("br0's own zone decides"),
            "{}",
            v.message
        );
        assert!(v.message.contains("br_netfilter"), "{}", v.message);
        let mut n = net(ForwardMode::Unmanaged("bridge".into()), None);
        n.forward_devs = vec!["eth0".into()];
        let v = decide(
            &Request {
                network: &n,
                zone: None,
            },
            &facts,
        );
        assert!(v.ok && v.zone.is_none(), "{v:?}");
        assert!(
            v.message.contains("macvtap to eth0")
                && v.message
                    .contains("never crosses a host bridge or the host's netfilter bridge path"),
            "{}",
            v.message
        );
    }
}
