//! What each bridge's traffic must do, compared with what the evaluator ([`super::eval`]) says the
//! live ruleset does to it. Pure: the facts come in, the report goes out.
//!
//! For a bridge whose zone is libvirt's (or that virtzone keeps in one, or that is libvirt's own
//! bridge), synthetic first packets of new connections are followed through every table:
//! - guest → host for each service and protocol of the zone (`libvirt`) or of policy
//!   `libvirt-to-host` (`libvirt-routed`): must be accepted;
//! - guest → host on a port no rule names, TCP and UDP: must be rejected (the zone's catch-all);
//! - guest → upstream (forwarded): must be accepted;
//! - upstream → guest, a new connection: must be accepted for `libvirt-routed`; for `libvirt` (NAT)
//!   it is reported, not judged (libvirt's own rules decide that on a real host);
//! - guest → guest on the same bridge: must be accepted.
//!
//! A verdict the evaluator cannot reach (an expression outside its model) is reported as unknown,
//! never as ok and never as a problem.

use std::net::IpAddr;

use serde::Serialize;

use super::eval::{evaluate, AddrType, Packet, Proto, Ruleset, Trace, Verdict};
use crate::{LIBVIRT_ROUTED_ZONE, LIBVIRT_ZONE};

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// What was confirmed, one sentence each.
    pub confirmed: Vec<String>,
    /// What is wrong, one precise sentence each.
    pub problems: Vec<String>,
    /// What the evaluator could not tell (an expression outside its model): neither ok nor a
    /// problem.
    pub unknown: Vec<String>,
}

/// The interface the forwarded probes use for "the rest of the world" when the host has no
/// default route.
pub const OTHER_IFACE: &str = "vz-verify-out";

/// The policy deciding what guests of routed networks reach on the host.
const TO_HOST_POLICY: &str = "libvirt-to-host";

/// What the checks know about one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeFacts {
    /// Its name.
    pub name: String,
    /// The zone firewalld has it in at runtime.
    pub zone: Option<String>,
    /// The zone virtzone was asked to keep it in (`virtzone attach`, the libvirt hook).
    pub recorded: Option<String>,
    /// Whether it is one of libvirt's bridges (a running network's, or named `virbrN`).
    pub libvirt: bool,
    /// The host's addresses on it, with prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
}

/// What the checks know about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The interface of the default route (where forwarded guest traffic leaves).
    pub uplink: Option<String>,
    /// `br_netfilter` hands bridged packets to the IP hooks too.
    pub br_netfilter: bool,
}

/// One service a guest reaches on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service's (or protocol's) name in the zone.
    pub name: String,
    /// Its protocol.
    pub proto: Proto,
    /// Its port (0 for ICMP).
    pub port: u16,
    /// IPv4 only / IPv6 only / both.
    pub v4: bool,
    /// See `v4`.
    pub v6: bool,
}

/// The ports of firewalld's definitions of the services libvirt's zones list, and the protocols.
/// Other names are not probed (they cannot come from virtzone's definitions).
pub fn services(names: &[String], protocols: &[String]) -> Vec<Service> {
    let mut out = Vec::new();
    let mut add = |name: &str, proto, port, v4, v6| {
        out.push(Service {
            name: name.to_string(),
            proto,
            port,
            v4,
            v6,
        })
    };
    for n in names {
        match n.as_str() {
            "dhcp" => add(n, Proto::Udp, 67, true, false),
            "dhcpv6" => add(n, Proto::Udp, 547, false, true),
            "dns" => {
                add(n, Proto::Udp, 53, true, true);
                add(n, Proto::Tcp, 53, true, true);
            }
            "ssh" => add(n, Proto::Tcp, 22, true, true),
            "tftp" => add(n, Proto::Udp, 69, true, true),
            _ => {}
        }
    }
    for p in protocols {
        match p.as_str() {
            "icmp" => add(p, Proto::Icmp, 0, true, false),
            "ipv6-icmp" => add(p, Proto::Icmp, 0, false, true),
            _ => {}
        }
    }
    out
}

/// What guests must reach on the host through `zone`: the services and protocols of virtzone's
/// own zone `libvirt`, or of policy `libvirt-to-host` for `libvirt-routed`.
pub fn host_services(zone: &str) -> Vec<Service> {
    use crate::zone::shipped::{try_shipped_policy, try_shipped_zone};
    let defined = if zone == LIBVIRT_ROUTED_ZONE {
        try_shipped_policy(TO_HOST_POLICY).map(|p| (p.body.services, p.body.protocols))
    } else {
        try_shipped_zone(LIBVIRT_ZONE).map(|z| (z.body.services, z.body.protocols))
    };
    defined.map(|(s, p)| services(&s, &p)).unwrap_or_default()
}

/// Addresses for the probes of one family on a bridge.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    /// The host's address on the bridge.
    pub host: IpAddr,
    /// A guest's address (the host's + 1, in the bridge's network).
    pub guest: IpAddr,
    /// An address out in the world (documentation range, matched by no sane rule).
    pub upstream: IpAddr,
}

/// The probe addresses of a bridge: from its own addresses, else documentation ones.
pub fn ends(addrs: &[(IpAddr, u8)]) -> Vec<Ends> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let own = addrs
            .iter()
            .find(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, _)| *a);
        let host = own.unwrap_or_else(|| {
            if v6 {
                "2001:db8:7a::1".parse().unwrap_or(IpAddr::from([0u16; 8]))
            } else {
                IpAddr::from([192, 0, 2, 1])
            }
        });
        let guest = match host {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
        };
        let upstream = if v6 {
            "2001:db8:ffff::10".parse().unwrap_or(host)
        } else {
            IpAddr::from([198, 51, 100, 10])
        };
        out.push(Ends {
            host,
            guest,
            upstream,
        });
    }
    out
}

/// The probes, by name; built here so `explain` sends exactly the same packets.
pub mod probe {
    use super::*;

    /// A guest on `br` to the host.
    pub fn to_host(br: &str, e: &Ends, proto: Proto, port: u16) -> Packet {
        Packet {
            iif: br.into(),
            oif: None,
            bridged: false,
            br_netfilter: false,
            saddr: e.guest,
            daddr: e.host,
            daddr_type: AddrType::Local,
            proto,
            sport: 40000,
            dport: port,
        }
    }

    /// DHCP's and DHCPv6's requests: from no address to broadcast, from link-local to multicast.
    pub fn dhcp(br: &str, v6: bool) -> Packet {
        let (saddr, daddr, ty, sport, dport) = if v6 {
            (
                "fe80::2".parse().unwrap_or(IpAddr::from([0u16; 8])),
                "ff02::1:2".parse().unwrap_or(IpAddr::from([0u16; 8])),
                AddrType::Multicast,
                546,
                547,
            )
        } else {
            (
                IpAddr::from([0, 0, 0, 0]),
                IpAddr::from([255, 255, 255, 255]),
                AddrType::Broadcast,
                68,
                67,
            )
        };
        Packet {
            iif: br.into(),
            oif: None,
            bridged: false,
            br_netfilter: false,
            saddr,
            daddr,
            daddr_type: ty,
            proto: Proto::Udp,
            sport,
            dport,
        }
    }

    /// A guest on `br` to `to` out of `out`.
    pub fn forward(br: &str, out: &str, e: &Ends, to: IpAddr, proto: Proto, port: u16) -> Packet {
        Packet {
            iif: br.into(),
            oif: Some(out.into()),
            bridged: false,
            br_netfilter: false,
            saddr: e.guest,
            daddr: to,
            daddr_type: AddrType::Unicast,
            proto,
            sport: 40000,
            dport: port,
        }
    }

    /// `from` (in by `uplink`) to a guest on `br`.
    pub fn inbound(
        br: &str,
        uplink: &str,
        from: IpAddr,
        to: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Packet {
        Packet {
            iif: uplink.into(),
            oif: Some(br.into()),
            bridged: false,
            br_netfilter: false,
            saddr: from,
            daddr: to,
            daddr_type: AddrType::Unicast,
            proto,
            sport: 40000,
            dport: port,
        }
    }

    /// `saddr` to `daddr`, both on `br`'s link: bridged between two of its ports (a guest to
    /// another guest, or to the LAN behind a host bridge), never routed by the host.
    pub fn across(
        br: &str,
        saddr: IpAddr,
        daddr: IpAddr,
        proto: Proto,
        port: u16,
        br_netfilter: bool,
    ) -> Packet {
        Packet {
            iif: br.into(),
            oif: None,
            bridged: true,
            br_netfilter,
            saddr,
            daddr,
            daddr_type: AddrType::Unicast,
            proto,
            sport: 40000,
            dport: port,
        }
    }

    /// Guest to guest across the bridge.
    pub fn bridged(br: &str, e: &Ends, port: u16, br_netfilter: bool) -> Packet {
        let other = match e.guest {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
        };
        Packet {
            iif: br.into(),
            oif: None,
            bridged: true,
            br_netfilter,
            saddr: e.guest,
            daddr: other,
            daddr_type: AddrType::Unicast,
            proto: Proto::Tcp,
            sport: 40000,
            dport: port,
        }
    }
}

/// A TCP/UDP port no rule of the ruleset names: nothing but a catch-all can decide it.
pub fn unused_port(rs: &Ruleset) -> u16 {
    let mut named = std::collections::BTreeSet::new();
    for chain in &rs.chains {
        for rule in &chain.rules {
            collect_ints(&serde_json::Value::Array(rule.expr.clone()), &mut named);
            if let Some(saved) = &rule.saved {
                for t in saved.split(|c: char| !c.is_ascii_digit()) {
                    if let Ok(n) = t.parse::<u64>() {
                        named.insert(n);
                    }
                }
            }
        }
    }
    (1..u16::MAX)
        .find(|p| !named.contains(&u64::from(*p)))
        .unwrap_or(1)
}

fn collect_ints(v: &serde_json::Value, out: &mut std::collections::BTreeSet<u64>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.insert(n);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_ints(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_ints(x, out)),
        _ => {}
    }
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Runs every check for every bridge.
pub fn check(rs: &Ruleset, host: &HostFacts, bridges: &[BridgeFacts]) -> Report {
    let mut report = Report::default();
    if bridges.is_empty() {
        report
            .confirmed
            .push("no bridge in this network namespace: nothing to check".into());
    }
    for b in bridges {
        check_bridge(&mut report, rs, host, b);
    }
    report
}

/// Probes that went as the zone means, grouped for the report: (group, item, deciding chain).
#[derive(Default)]
struct Confirmed(Vec<(&'static str, String, Option<String>)>);

impl Confirmed {
    /// One line per group: "guests reach on the host: dns (udp/53, IPv4), …; decided in …".
    fn lines(&self, who: &str) -> Vec<String> {
        let mut groups: Vec<&str> = Vec::new();
        for (g, _, _) in &self.0 {
            if !groups.contains(g) {
                groups.push(g);
            }
        }
        groups
            .into_iter()
            .map(|g| {
                let items: Vec<&str> = self
                    .0
                    .iter()
                    .filter(|(x, _, _)| *x == g)
                    .map(|(_, i, _)| i.as_str())
                    .collect();
                let mut chains: Vec<&str> = Vec::new();
                for (_, _, c) in self.0.iter().filter(|(x, _, _)| *x == g) {
                    if let Some(c) = c.as_deref() {
                        if !chains.contains(&c) {
                            chains.push(c);
                        }
                    }
                }
                let by = if chains.is_empty() {
                    String::new()
                } else {
                    format!("; decided in {}", chains.join(", "))
                };
                format!("{who}: {g}: {}{by}", items.join(", "))
            })
            .collect()
    }
}

/// Sorts one probe's trace into the report against what it should be: `label` names the probe in
/// problems, `group` and `item` in the confirmation.
#[allow(clippy::too_many_arguments)] // one call site shape, all of it context for the sentence
fn judge(
    report: &mut Report,
    who: &str,
    label: &str,
    group: &'static str,
    item: String,
    t: &Trace,
    want: Verdict,
    ok: &mut Confirmed,
) {
    match &t.verdict {
        Verdict::Unknown(why) => report
            .unknown
            .push(format!("{who}: {label}: cannot tell: {why}")),
        v if *v == want => {
            let chain =
                t.by.as_ref()
                    .map(|b| format!("{} {} {}", b.family, b.table, b.chain));
            ok.0.push((group, item, chain));
        }
        _ => report.problems.push(format!(
            "{who}: {label} should be {}, but is {}",
            want.word(),
            t.describe()
        )),
    }
}

fn check_bridge(report: &mut Report, rs: &Ruleset, host: &HostFacts, b: &BridgeFacts) {
    let br = &b.name;
    // The meaning to check against: what virtzone keeps it in, else its zone if libvirt's; a
    // libvirt bridge in another zone (or none) must still give its guests DHCP and DNS.
    let libvirt_zone = |z: &str| z == LIBVIRT_ZONE || z == LIBVIRT_ROUTED_ZONE;
    let meaning = match (&b.recorded, &b.zone) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(z)) if libvirt_zone(z) => Some(z.clone()),
        (None, _) if b.libvirt => Some(LIBVIRT_ZONE.to_string()),
        _ => None,
    };
    match (&b.zone, &b.recorded) {
        (None, Some(want)) => report.problems.push(format!(
            "{br}: virtzone keeps it in zone {want}, but firewalld has it in no zone (a firewalld \
             reload drops runtime bindings: is the virtzone daemon running?); rebind it: virtzone \
             attach {br} --zone {want}"
        )),
        (Some(z), Some(want)) if z != want => report.problems.push(format!(
            "{br}: virtzone keeps it in zone {want}, but firewalld has it in zone {z}"
        )),
        (None, None) if b.libvirt => report.problems.push(format!(
            "{br}: a libvirt bridge in no zone, so firewalld handles it as its default zone; bind \
             it: virtzone attach {br} (or firewall-cmd --zone=libvirt --change-interface={br})"
        )),
        (Some(z), None) if b.libvirt && !libvirt_zone(z) => report.problems.push(format!(
            "{br}: a libvirt bridge in zone {z}, which is not one of libvirt's zones"
        )),
        _ => {}
    }
    let Some(meaning) = meaning else {
        report.confirmed.push(format!(
            "{br}: in {} and not a libvirt bridge; not checked",
            b.zone
                .as_deref()
                .map_or("no zone".to_string(), |z| format!("zone {z}"))
        ));
        return;
    };
    if !libvirt_zone(&meaning) {
        report.confirmed.push(format!(
            "{br}: kept in zone {meaning}, not one of libvirt's zones; its traffic was not judged"
        ));
        return;
    }
    let who = match &b.zone {
        Some(z) => format!("{br} (zone {z})"),
        None => format!("{br} (no zone)"),
    };
    let uplink = host.uplink.as_deref().unwrap_or(OTHER_IFACE);
    let unused = unused_port(rs);
    let mut ok = Confirmed::default();
    let services = host_services(&meaning);
    for (i, e) in ends(&b.addrs).iter().enumerate() {
        let v6 = i == 1;
        let fam = family(v6);
        for s in services.iter().filter(|s| if v6 { s.v6 } else { s.v4 }) {
            let p = if s.name == "dhcp" || s.name == "dhcpv6" {
                probe::dhcp(br, v6)
            } else {
                probe::to_host(br, e, s.proto, s.port)
            };
            let item = match s.proto {
                Proto::Icmp => format!("{} ({fam})", s.name),
                Proto::Tcp => format!("{} (tcp/{}, {fam})", s.name, s.port),
                Proto::Udp => format!("{} (udp/{}, {fam})", s.name, s.port),
            };
            let label = format!("guest → host {item}");
            let t = evaluate(rs, &p);
            let group = "guests reach on the host";
            judge(
                report,
                &who,
                &label,
                group,
                item,
                &t,
                Verdict::Accept,
                &mut ok,
            );
        }
        for proto in [Proto::Tcp, Proto::Udp] {
            let p = probe::to_host(br, e, proto, unused);
            let name = if proto == Proto::Tcp { "tcp" } else { "udp" };
            let item = format!("{name}/{unused} ({fam})");
            let label = format!("guest → host {name}/{unused}, listed nowhere ({fam})");
            let t = evaluate(rs, &p);
            if t.verdict == Verdict::Accept && meaning == LIBVIRT_ZONE {
                report.problems.push(format!(
                    "{who}: {label} should be rejected, but is {}: zone libvirt has no working \
                     catch-all reject (`<rule priority=\"32767\"><reject/></rule>`; firewalld \
                     before 2.3.0 drops a rich rule it cannot load with only a warning)",
                    t.describe()
                ));
                continue;
            }
            let group = "ports listed nowhere are rejected";
            judge(
                report,
                &who,
                &label,
                group,
                item,
                &t,
                Verdict::Reject,
                &mut ok,
            );
        }
        let p = probe::forward(br, uplink, e, e.upstream, Proto::Tcp, 80);
        let label = format!("guest → upstream tcp/80, forwarded out of {uplink} ({fam})");
        let group = "guests' connections out through the host are accepted";
        let item = format!("tcp/80 out of {uplink} ({fam})");
        let t = evaluate(rs, &p);
        judge(
            report,
            &who,
            &label,
            group,
            item,
            &t,
            Verdict::Accept,
            &mut ok,
        );
        let p = probe::inbound(br, uplink, e.upstream, e.guest, Proto::Tcp, 80);
        let t = evaluate(rs, &p);
        let label = format!("upstream → guest tcp/80, a new connection in by {uplink} ({fam})");
        if meaning == LIBVIRT_ROUTED_ZONE {
            let group = "new connections routed in to the guests are accepted";
            let item = format!("tcp/80 in by {uplink} ({fam})");
            judge(
                report,
                &who,
                &label,
                group,
                item,
                &t,
                Verdict::Accept,
                &mut ok,
            );
        } else {
            // NAT networks: libvirt's own rules (or none) decide; reported, not judged.
            report
                .confirmed
                .push(format!("{who}: {label} is {}", t.describe()));
        }
        let p = probe::bridged(br, e, 80, host.br_netfilter);
        let label = format!("guest → guest tcp/80 on the bridge ({fam})");
        let group = "guest-to-guest traffic on the bridge is accepted";
        let t = evaluate(rs, &p);
        let item = format!("tcp/80 ({fam})");
        judge(
            report,
            &who,
            &label,
            group,
            item,
            &t,
            Verdict::Accept,
            &mut ok,
        );
    }
    report.confirmed.extend(ok.lines(&who));
}
