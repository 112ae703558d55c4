//! What must hold in the ruleset for each bridge, as pure functions over the [`Ruleset`] model.
//!
//! For every bridge bound to a zone: a rule that selects the bridge by name dispatches its traffic
//! to the zone's chains (for the host and for forwarded traffic). For the zones whose meaning
//! virtzone knows, probes follow a guest's first packet through the rules:
//! - `libvirt`: each service and protocol of virtzone's zone is accepted, a port nothing lists is
//!   rejected (not dropped, not accepted) — so the catch-all reject exists and sits after the
//!   services — and forwarded traffic is accepted (target ACCEPT).
//! - `libvirt-routed`: the same services are accepted and other ports rejected (policy
//!   `libvirt-to-host`), and routed traffic passes both ways (`libvirt-routed-out`, `-in`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::rules::{ChainOwner, Decision, Family, Final, Hook, Position, Probe, Ruleset};
use super::Report;
use crate::{LIBVIRT_ROUTED_ZONE, LIBVIRT_ZONE};

/// The name the forwarded probes use for "some other interface" (one no zone binds).
pub const OTHER_IFACE: &str = "vz-verify-out";

/// The policy deciding what guests of routed networks reach on the host.
const TO_HOST_POLICY: &str = "libvirt-to-host";

/// One ruleset and the families it filters: nftables' `inet` table filters both; iptables has one
/// ruleset per family.
#[derive(Debug, Clone)]
pub struct View {
    /// Shown in messages when there are several views (`iptables`, `ip6tables`).
    pub label: Option<String>,
    /// The families this ruleset filters.
    pub families: Vec<Family>,
    /// The ruleset.
    pub ruleset: Ruleset,
}

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
}

/// One thing a guest reaches on the host.
#[derive(Debug, Clone)]
struct Service {
    /// The service's (or protocol's) name in the zone.
    name: String,
    proto: &'static str,
    port: Option<u16>,
    families: &'static [Family],
    /// A destination the service's traffic really has (broadcast, multicast), if special.
    daddr: Option<&'static str>,
}

impl Service {
    /// `udp/53` for port-based services.
    fn detail(&self) -> Option<String> {
        self.port.map(|p| format!("{}/{p}", self.proto))
    }

    fn label(&self) -> String {
        match self.detail() {
            Some(d) => format!("{} ({d})", self.name),
            None => self.name.clone(),
        }
    }
}

const BOTH: &[Family] = &[Family::V4, Family::V6];
const V4: &[Family] = &[Family::V4];
const V6: &[Family] = &[Family::V6];

/// The ports of firewalld's service definitions for the services libvirt's zones list, and the
/// protocols. Other names are not probed (they cannot come from virtzone's definitions).
fn services(names: &[String], protocols: &[String]) -> Vec<Service> {
    let mut out = Vec::new();
    let mut add = |name: &str, proto, port, families, daddr| {
        out.push(Service {
            name: name.to_string(),
            proto,
            port,
            families,
            daddr,
        })
    };
    for n in names {
        match n.as_str() {
            "dhcp" => add(n, "udp", Some(67), V4, Some("255.255.255.255")),
            "dhcpv6" => add(n, "udp", Some(547), V6, Some("ff02::1:2")),
            "dns" => {
                add(n, "udp", Some(53), BOTH, None);
                add(n, "tcp", Some(53), BOTH, None);
            }
            "ssh" => add(n, "tcp", Some(22), BOTH, None),
            "tftp" => add(n, "udp", Some(69), BOTH, None),
            _ => {}
        }
    }
    for p in protocols {
        match p.as_str() {
            "icmp" => add(p, "icmp", None, V4, None),
            "ipv6-icmp" => add(p, "ipv6-icmp", None, V6, None),
            _ => {}
        }
    }
    out
}

/// What guests must reach on the host through zone `libvirt` / policy `libvirt-to-host`: the
/// services and protocols of virtzone's own definitions.
fn host_services(zone: &str) -> Vec<Service> {
    use crate::zone::shipped::{try_shipped_policy, try_shipped_zone};
    let defined = if zone == LIBVIRT_ROUTED_ZONE {
        try_shipped_policy(TO_HOST_POLICY).map(|p| (p.body.services, p.body.protocols))
    } else {
        try_shipped_zone(LIBVIRT_ZONE).map(|z| (z.body.services, z.body.protocols))
    };
    defined.map(|(s, p)| services(&s, &p)).unwrap_or_default()
}

/// Runs every check for every bridge.
pub fn check(views: &[View], bridges: &[BridgeFacts]) -> Report {
    let mut report = Report::default();
    if bridges.is_empty() {
        report
            .confirmed
            .push("no bridge in this network namespace: nothing to check".into());
    }
    for bridge in bridges {
        check_bridge(&mut report, views, bridge);
    }
    report
}

fn probe(
    family: Family,
    iif: &str,
    oif: Option<&str>,
    proto: &'static str,
    port: Option<u16>,
) -> Probe {
    Probe {
        family,
        iif: Some(iif.to_string()),
        oif: oif.map(str::to_string),
        proto,
        dport: port,
        daddr: None,
    }
}

/// "it goes to zone public's chains and is rejected by …": where a bridge's traffic really ends.
fn whereabouts(d: &Decision) -> String {
    // The zone whose chain decided; else the last zone entered (in 2.x policies, which iptables
    // does not mark as such, come before the zone, and the dispatch chain holds the zone's target).
    let owner = d.owner().filter(|o| !o.policy).or_else(|| {
        d.entered
            .iter()
            .rev()
            .filter_map(|c| ChainOwner::of(c))
            .find(|o| o.sub.is_none() && !o.policy)
    });
    match owner {
        Some(o) => format!(
            "it goes to the chains of {} and is {}",
            o.name,
            d.describe()
        ),
        None => format!("it is {}", d.describe()),
    }
}

fn check_bridge(report: &mut Report, views: &[View], b: &BridgeFacts) {
    let br = &b.name;
    // Where the bridge's traffic to the host goes, for messages about missing bindings.
    let ends_up = || -> String {
        views
            .first()
            .and_then(|v| {
                let f = v.families.first().copied().unwrap_or(Family::V4);
                let port = v.ruleset.unused_port("tcp");
                v.ruleset
                    .evaluate(Hook::Input, &probe(f, br, None, "tcp", Some(port)))
                    .ok()
            })
            .map(|d| whereabouts(&d))
            .unwrap_or_else(|| "its traffic cannot be followed".into())
    };
    match (&b.zone, &b.recorded) {
        (None, Some(want)) => {
            report.problems.push(format!(
                "{br}: virtzone keeps it in zone {want}, but firewalld has it in no zone (a \
                 firewalld reload drops runtime bindings: is the virtzone daemon running?); for \
                 its guests' traffic to the host {}; rebind it: virtzone attach {br} --zone {want}",
                ends_up()
            ));
            return;
        }
        (Some(z), Some(want)) if z != want => report.problems.push(format!(
            "{br}: virtzone keeps it in zone {want}, but firewalld has it in zone {z}"
        )),
        (None, None) if b.libvirt => {
            report.problems.push(format!(
                "{br}: a libvirt bridge in no zone, so firewalld handles it as its default zone: \
                 for its guests' traffic to the host {}; bind it: virtzone attach {br} (or \
                 firewall-cmd --zone=libvirt --change-interface={br})",
                ends_up()
            ));
            return;
        }
        (None, None) => {
            report.confirmed.push(format!(
                "{br}: in no zone and not a libvirt bridge; not checked"
            ));
            return;
        }
        _ => {}
    }
    let Some(zone) = &b.zone else {
        return;
    };
    for view in views {
        let who = match &view.label {
            Some(l) => format!("{br} (zone {zone}, {l})"),
            None => format!("{br} (zone {zone})"),
        };
        for (hook, what) in [
            (Hook::Input, "traffic to the host"),
            (Hook::Forward, "forwarded traffic"),
        ] {
            match view.ruleset.dispatch(hook, br, zone) {
                Some(pos) => report
                    .confirmed
                    .push(format!("{who}: {what} is dispatched to the zone by {pos}")),
                None => {
                    let f = view.families.first().copied().unwrap_or(Family::V4);
                    let oif = (hook == Hook::Forward).then_some(OTHER_IFACE);
                    let port = view.ruleset.unused_port("tcp");
                    let end = match view
                        .ruleset
                        .evaluate(hook, &probe(f, br, oif, "tcp", Some(port)))
                    {
                        Ok(d) => whereabouts(&d),
                        Err(e) => format!("it cannot be followed: {e}"),
                    };
                    report.problems.push(format!(
                        "{who}: firewalld reports the bridge in zone {zone}, but no rule selecting \
                         iifname {br} sends its {what} to the zone's chains; instead {end}"
                    ));
                }
            }
        }
        if zone == LIBVIRT_ZONE || zone == LIBVIRT_ROUTED_ZONE {
            check_host(report, view, &who, br, zone);
            check_forward(report, view, &who, br, zone);
        } else {
            report.confirmed.push(format!(
                "{who}: not one of libvirt's zones, so only its dispatch was checked"
            ));
        }
    }
}

/// Whether the rule at `pos` has no conditions (a catch-all).
fn unconditional(rs: &Ruleset, pos: &Position) -> bool {
    rs.chains
        .get(&pos.chain)
        .and_then(|c| c.rules.get(pos.index.wrapping_sub(1)))
        .is_some_and(|r| r.conds.is_empty() && r.vmap.is_none())
}

/// Joins labels: "a", "a and b", "a, b and c".
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// What a probe was: a name (`dns`, `tcp/1`), the protocol and port when the name does not tell
/// (`udp/53`), and the family.
struct Probed {
    name: String,
    detail: Option<String>,
    families: Vec<Family>,
}

/// Groups probe results by where they ended, keeping first-seen order.
#[derive(Default)]
struct Groups {
    order: Vec<String>,
    by_end: BTreeMap<String, (Decision, Vec<Probed>)>,
}

impl Groups {
    fn add(&mut self, d: Decision, name: String, detail: Option<String>, family: Family) {
        let key = d.describe();
        if !self.by_end.contains_key(&key) {
            self.order.push(key.clone());
        }
        let (_, probed) = self.by_end.entry(key).or_insert((d, Vec::new()));
        match probed
            .iter_mut()
            .find(|p| p.name == name && p.detail == detail)
        {
            Some(p) => p.families.push(family),
            None => probed.push(Probed {
                name,
                detail,
                families: vec![family],
            }),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(Decision, Vec<Probed>)> {
        self.order.iter().filter_map(|k| self.by_end.get(k))
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

fn family_list(families: &[Family]) -> String {
    join(
        &families
            .iter()
            .map(|f| f.label().to_string())
            .collect::<Vec<_>>(),
    )
}

/// "dns (udp/53) and ssh (tcp/22) over IPv4 and IPv6", or with differing families
/// "dhcp (udp/67, IPv4) and dns (udp/53, IPv4 and IPv6)". Families are left out when the view
/// filters only one.
fn render(probed: &[Probed], view: &View) -> String {
    let uniform = probed.windows(2).all(|w| w[0].families == w[1].families);
    let show_families = view.families.len() > 1;
    if uniform || !show_families {
        let names: Vec<String> = probed
            .iter()
            .map(|p| match &p.detail {
                Some(d) => format!("{} ({d})", p.name),
                None => p.name.clone(),
            })
            .collect();
        match probed.first() {
            Some(p) if show_families => {
                format!("{} over {}", join(&names), family_list(&p.families))
            }
            _ => join(&names),
        }
    } else {
        let names: Vec<String> = probed
            .iter()
            .map(|p| {
                let fams = family_list(&p.families);
                match &p.detail {
                    Some(d) => format!("{} ({d}, {fams})", p.name),
                    None => format!("{} ({fams})", p.name),
                }
            })
            .collect();
        join(&names)
    }
}

/// Services accepted, everything else rejected after them.
fn check_host(report: &mut Report, view: &View, who: &str, br: &str, zone: &str) {
    let rs = &view.ruleset;
    let (owner, owner_text) = if zone == LIBVIRT_ROUTED_ZONE {
        (TO_HOST_POLICY, format!("policy {TO_HOST_POLICY}"))
    } else {
        (zone, format!("zone {zone}"))
    };
    let mut accepted: Vec<String> = Vec::new();
    let mut accepted_in: Vec<String> = Vec::new();
    let mut refused = Groups::default();
    for s in host_services(zone) {
        for f in s.families.iter().filter(|f| view.families.contains(f)) {
            let mut p = probe(*f, br, None, s.proto, s.port);
            p.daddr = s.daddr.and_then(|a| a.parse::<IpAddr>().ok());
            match rs.evaluate(Hook::Input, &p) {
                Ok(d) if d.verdict == Final::Accept => {
                    if !accepted.contains(&s.name) {
                        accepted.push(s.name.clone());
                    }
                    if let Some(pos) = &d.by {
                        if !accepted_in.contains(&pos.chain) {
                            accepted_in.push(pos.chain.clone());
                        }
                    }
                }
                Ok(d) => refused.add(d, s.name.clone(), s.detail(), *f),
                Err(e) => report
                    .problems
                    .push(format!("{who}: cannot follow {}: {e}", s.label())),
            }
        }
    }
    for (d, probed) in refused.iter() {
        let mut hint = String::new();
        if let (Some(pos), Some(o)) = (&d.by, d.owner()) {
            if o.name == owner && unconditional(rs, pos) {
                hint = match o.sub.as_deref() {
                    Some("pre" | "log" | "deny") => format!(
                        "; that catch-all sits before the allowed services of {owner_text} (a \
                         rich rule with a negative priority?), so it turns them away"
                    ),
                    _ => format!(
                        "; that is the catch-all of {owner_text}, so {owner_text} lacks them"
                    ),
                };
            }
        }
        report.problems.push(format!(
            "{who}: guests cannot reach {} on the host: {}{hint}",
            render(probed, view),
            d.describe()
        ));
    }
    if !accepted.is_empty() {
        report.confirmed.push(format!(
            "{who}: guests reach {} on the host (accepted in {})",
            join(&accepted),
            join(&accepted_in)
        ));
    }

    // A port nothing lists, over TCP and UDP: the catch-all's job.
    let mut rejected_by: Vec<String> = Vec::new();
    let mut wrong = Groups::default();
    for f in &view.families {
        for proto in ["tcp", "udp"] {
            let port = rs.unused_port(proto);
            let label = format!("{proto}/{port}");
            match rs.evaluate(Hook::Input, &probe(*f, br, None, proto, Some(port))) {
                Ok(d) => match (&d.verdict, &d.by) {
                    (Final::Reject(_), Some(pos)) => {
                        let at = pos.to_string();
                        if !rejected_by.contains(&at) {
                            rejected_by.push(at);
                        }
                    }
                    _ => wrong.add(d, label, None, *f),
                },
                Err(e) => report
                    .problems
                    .push(format!("{who}: cannot follow {label}: {e}")),
            }
        }
    }
    for (d, probed) in wrong.iter() {
        let what = format!(
            "{}, which {owner_text} does not list, {} {}",
            render(probed, view),
            if probed.len() > 1 || probed.iter().any(|p| p.families.len() > 1) {
                "are"
            } else {
                "is"
            },
            d.describe()
        );
        report.problems.push(match d.verdict {
            Final::Accept if zone == LIBVIRT_ZONE => format!(
                "{who}: zone {zone} has no catch-all reject: {what}; the zone needs \
                 `<rule priority=\"32767\"><reject/></rule>` (firewalld before 2.3.0 drops a rich \
                 rule it cannot load with only a warning in its log)"
            ),
            Final::Accept => format!("{who}: {owner_text} does not reject other ports: {what}"),
            _ => format!(
                "{who}: {what}, not rejected: guests wait for a timeout instead of a quick refusal"
            ),
        });
    }
    if !rejected_by.is_empty() {
        let after = if refused.is_empty() && !accepted.is_empty() {
            ", after the allowed services"
        } else {
            ""
        };
        report.confirmed.push(format!(
            "{who}: anything else guests send to the host is rejected by {}{after}",
            join(&rejected_by)
        ));
    }
}

/// Forwarded traffic: out of the bridge for both zones, into it for `libvirt-routed`.
fn check_forward(report: &mut Report, view: &View, who: &str, br: &str, zone: &str) {
    let rs = &view.ruleset;
    let mut directions = vec![(
        "from the guests through the host",
        br.to_string(),
        OTHER_IFACE.to_string(),
    )];
    if zone == LIBVIRT_ROUTED_ZONE {
        directions.push((
            "routed to the guests",
            OTHER_IFACE.to_string(),
            br.to_string(),
        ));
    }
    for (what, iif, oif) in directions {
        let mut passed: Vec<String> = Vec::new();
        let mut stopped = Groups::default();
        for f in &view.families {
            match rs.evaluate(Hook::Forward, &probe(*f, &iif, Some(&oif), "tcp", Some(80))) {
                Ok(d) if d.verdict == Final::Accept => {
                    if let Some(pos) = d.by {
                        let at = pos.to_string();
                        if !passed.contains(&at) {
                            passed.push(at);
                        }
                    }
                }
                Ok(d) => stopped.add(d, String::new(), None, *f),
                Err(e) => report
                    .problems
                    .push(format!("{who}: cannot follow traffic {what}: {e}")),
            }
        }
        for (d, probed) in stopped.iter() {
            let need = if zone == LIBVIRT_ZONE {
                "zone libvirt lets it through with target ACCEPT"
            } else if iif == br {
                "policy libvirt-routed-out lets it through"
            } else {
                "policy libvirt-routed-in lets it through"
            };
            report.problems.push(format!(
                "{who}: traffic {what} ({}) is {}; {need}",
                family_list(
                    &probed
                        .iter()
                        .flat_map(|p| p.families.clone())
                        .collect::<Vec<_>>()
                ),
                d.describe()
            ));
        }
        if !passed.is_empty() && stopped.is_empty() {
            report.confirmed.push(format!(
                "{who}: traffic {what} is accepted by {}",
                join(&passed)
            ));
        }
    }
}
