//! The planner: facts in (what firewalld and the kernel hold now, what was declared), a
//! [`change::Plan`](crate::change::Plan) of shared steps out, which `change::Executor` applies. Pure: no I/O, table-driven tests below. See docs/forwards.md for why each piece exists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use semver::Version;

use super::accept::{accepts, accepts6, Accept};
use super::iptables::{self, masquerade, split_line, CHAIN, HAIRPIN_CHAIN, LOCALNET_CHAIN};
use super::model::{is_localnet, Declared, Forward, Opening};
use super::network::Networks;
use crate::change::{Plan, Reason, Refusal, Step, Warning, WarningReason};
use crate::firewalld::{Entries, ForwardPortEntry, OwnPolicy};
use crate::libvirt::ForwardMode;

/// The policy holding forwards on firewalld versions where an ANY→HOST policy may forward to
/// another address (see [`Shape::of`]). Shown by `firewall-cmd --info-policy=virtzone-forward`.
pub const FORWARD_POLICY: &str = "virtzone-forward";
/// The policy (ingress HOST, egress ANY) holding the `--from-host` part of forwards: a rich rule with
/// the host address as destination, because a plain `forward-port` there would capture the host's
/// connections to that port on *every* server (measured on 1.3.3: no local-address match).
pub const FROM_HOST_POLICY: &str = "virtzone-from-host";
/// The policy holding per-network host access (`allow`).
pub const ALLOW_POLICY: &str = "virtzone-allow";
/// Both policies run before every zone (negative priority), so the libvirt zone's catch-all reject
/// cannot win over an allow.
pub const POLICY_PRIORITY: i32 = -100;

/// Where forwards live in firewalld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Entries of the zone that receives upstream traffic (firewalld's default zone): works on every
    /// firewalld with policies or not.
    Zone(String),
    /// Entries of virtzone's own ANY→HOST policy [`FORWARD_POLICY`].
    Policy,
}

impl Shape {
    /// The policy where firewalld can hold it
    /// ([`Capabilities::policy_forward_to_addr`](crate::firewalld::Capabilities)), else the default
    /// zone.
    pub fn of(version: &Version, default_zone: &str) -> Shape {
        if crate::firewalld::Capabilities::of(version).policy_forward_to_addr {
            Shape::Policy
        } else {
            Shape::Zone(default_zone.to_string())
        }
    }
}

/// Runtime and permanent view of one firewalld object; `None` where it does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    /// The runtime object.
    pub runtime: Option<Entries>,
    /// The permanent object.
    pub permanent: Option<Entries>,
}

/// Everything the planner needs, gathered once.
#[derive(Debug, Clone)]
pub struct Facts {
    /// firewalld's version.
    pub version: Version,
    /// firewalld's default zone.
    pub default_zone: String,
    /// Every zone's entries (zone shape only; empty otherwise): forwards go into the uplink zones
    /// and are taken out of every other zone.
    pub zones: BTreeMap<String, Layers>,
    /// Zones with interfaces or sources bound at runtime (zone shape only).
    pub active_zones: BTreeSet<String>,
    /// [`FORWARD_POLICY`] (policy shape).
    pub forward_policy: Layers,
    /// [`ALLOW_POLICY`].
    pub allow_policy: Layers,
    /// [`FROM_HOST_POLICY`].
    pub from_host_policy: Layers,
    /// Whether this firewalld has policies at all (0.9.0).
    pub policies: bool,
    /// The recorded libvirt networks.
    pub networks: Networks,
    /// bridge → zone firewalld has it in at runtime.
    pub bridge_zones: BTreeMap<String, String>,
    /// `iptables -t filter -S` (IPv4), `None` when it could not be read.
    pub iptables: Option<String>,
    /// `iptables -t nat -S` (IPv4), as read (the planner looks at it only when hairpin or loopback
    /// forwards exist or a chain of ours is there).
    pub iptables_nat: Option<String>,
    /// libvirt's `guest_input` chain of `table ip libvirt_network` (its nftables firewall
    /// backend), `None` when that table does not exist or cannot be read.
    pub libvirt_nft: Option<super::nft::GuestInput>,
    /// The same chain of `table ip6 libvirt_network` (IPv6 guests).
    pub libvirt_nft6: Option<super::nft::GuestInput>,
    /// Whether virtzone's localnet guard is in place (`None`: nft could not be run).
    pub localnet_guard: Option<bool>,
    /// bridge → its `route_localnet` (`true` for 1), for the bridges of running networks.
    pub route_localnet: BTreeMap<String, bool>,
    /// Whether `route_localnet` is on for an interface other than those bridges (or `all`): the
    /// guard stays while it is, as the daemon's guard watch ([`super::guard`]) would put it back.
    pub route_localnet_elsewhere: bool,
    /// Whether this process may write kernel settings (not under `ProtectKernelTunables=`).
    pub sysctl_writable: bool,
}

/// Which layer of firewalld a step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// The running firewall (lost on reload; firewalld rebuilds it from the permanent layer).
    Runtime,
    /// The configuration on disk.
    Permanent,
}

/// What the description of virtzone's policies tells admins.
const POLICY_DESCRIPTION: &str =
    "Managed by virtzone (virtzone forward/allow); changes here are overwritten.";

/// What virtzone puts in firewalld for one forward: a `forward-port`, or a rich rule when it is
/// limited to one host address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FirewalldEntry {
    /// A plain `forward-port`.
    Port(ForwardPortEntry),
    /// A rich rule with `destination address` and `forward-port`.
    Rule(String),
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// The key of a bridge's `route_localnet` below `/proc/sys`.
pub fn route_localnet_key(bridge: &str) -> String {
    format!("net/ipv4/conf/{bridge}/route_localnet")
}

/// The firewalld entry of a forward, spelled the way firewalld reports it back.
pub fn firewalld_entry(f: &Forward) -> FirewalldEntry {
    match f.host_address {
        None => FirewalldEntry::Port((
            f.host_port.to_string(),
            f.proto.as_str().to_string(),
            f.guest_port.to_string(),
            f.guest.to_string(),
        )),
        Some(host) => FirewalldEntry::Rule(format!(
            "rule family=\"{}\" destination address=\"{host}\" forward-port port=\"{}\" protocol=\"{}\" \
             to-port=\"{}\" to-addr=\"{}\"",
            family(f.guest),
            f.host_port,
            f.proto,
            f.guest_port,
            f.guest
        )),
    }
}

/// The rich rules of one allow: one per subnet of its network, each limited to that subnet as
/// source, so other networks in the same zone stay refused.
pub fn allow_rules(opening: &Opening, subnets: &[super::network::Subnet]) -> Vec<String> {
    subnets
        .iter()
        .map(|s| {
            let what = match opening {
                Opening::Service(name) => format!("service name=\"{name}\""),
                Opening::Port { port, proto } => {
                    format!("port port=\"{port}\" protocol=\"{proto}\"")
                }
            };
            format!(
                "rule family=\"{}\" source address=\"{s}\" {what} accept",
                s.family()
            )
        })
        .collect()
}

/// The zone a network's guests arrive in: where firewalld has its bridge, else libvirt's choice.
fn zone_of_network(facts: &Facts, name: &str) -> Option<String> {
    let rec = facts.networks.networks.get(name)?;
    if let Some(z) = facts.bridge_zones.get(rec.bridge.as_str()) {
        return Some(z.clone());
    }
    Some(match rec.forward.as_str() {
        "route" => crate::LIBVIRT_ROUTED_ZONE.to_string(),
        _ => crate::LIBVIRT_ZONE.to_string(),
    })
}

/// The zones upstream connections arrive in, which hold forwards where no ANY→HOST policy can:
/// the default zone (interfaces bound nowhere else) and every zone with interfaces or sources,
/// except the zones of virtual networks (libvirt's, and wherever a recorded network's bridge is),
/// whose guests reach forwards only by `--hairpin`.
pub fn uplink_zones(facts: &Facts) -> BTreeSet<String> {
    let guests: BTreeSet<&str> = facts
        .bridge_zones
        .values()
        .map(String::as_str)
        .chain([crate::LIBVIRT_ZONE, crate::LIBVIRT_ROUTED_ZONE])
        .collect();
    facts
        .active_zones
        .iter()
        .filter(|z| !guests.contains(z.as_str()))
        .cloned()
        .chain([facts.default_zone.clone()])
        .collect()
}

/// What a forward check reads beyond firewalld's version, default zone and policy names: decided
/// here from those and the declaration, so that the reader (`apply::facts`) only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadScope {
    /// Forwards are zone entries ([`Shape::Zone`]): the zones' entries and the active zones.
    pub zones: bool,
    /// The runtime zone of every recorded network's bridge.
    pub bridge_zones: bool,
    /// A forward of the host's loopback address is declared.
    pub localnet: bool,
    /// A `--hairpin` forward is declared.
    pub hairpin: bool,
}

impl ReadScope {
    /// The scope for `declared` on firewalld `version` with default zone `default_zone`.
    pub fn of(declared: &Declared, version: &Version, default_zone: &str) -> ReadScope {
        let zones = matches!(Shape::of(version, default_zone), Shape::Zone(_));
        let localnet = declared.forwards.iter().any(is_localnet);
        ReadScope {
            zones,
            bridge_zones: !declared.allows.is_empty() || zones || localnet,
            localnet,
            hairpin: declared.forwards.iter().any(|f| f.hairpin),
        }
    }

    /// Whether the localnet guard's presence matters: a loopback forward exists, or
    /// `route_localnet` is on somewhere (the guard must stay while it is).
    pub fn guard(&self, route_localnet: &BTreeMap<String, bool>, elsewhere: bool) -> bool {
        self.localnet || elsewhere || route_localnet.values().any(|&on| on)
    }
}

/// The zones that may hold forwards' zone entries: the default zone and every active zone except
/// libvirt's (whose interfaces are guests' bridges, see [`uplink_zones`]).
pub fn uplink_candidates(default_zone: &str, active: &BTreeSet<String>) -> BTreeSet<String> {
    active
        .iter()
        .filter(|z| ![crate::LIBVIRT_ZONE, crate::LIBVIRT_ROUTED_ZONE].contains(&z.as_str()))
        .cloned()
        .chain([default_zone.to_string()])
        .collect()
}

/// The uplink candidates at the last read of every zone, kept by whoever runs the checks (the
/// daemon's forward watch for its life, a command for its run) and passed in.
///
/// Forwards are entries of the uplink zones (before firewalld 2.2), taken out of zones no uplink is
/// bound to any more; only a change of the uplink zones (the default zone and the active zones but
/// libvirt's own) can leave such entries behind. So a check reads every zone (three firewalld calls
/// each, a dozen zones or more) only when those changed since the last full read, or when forwards
/// are removed, and otherwise just them. Guests' zones are left out of the comparison: a firewalld
/// reload drops the virtual networks' runtime bindings until the daemon puts them back, which
/// changed the active zones twice per reload and cost two full reads (72 calls on 1.3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastFullRead(Option<BTreeSet<String>>);

impl LastFullRead {
    /// Whether this check must read every zone (`None`) or only `uplinks` (`Some`); records a
    /// full read.
    pub fn zones_to_read(
        &mut self,
        uplinks: BTreeSet<String>,
        removing: bool,
    ) -> Option<BTreeSet<String>> {
        if removing || self.0.as_ref() != Some(&uplinks) {
            self.0 = Some(uplinks);
            None
        } else {
            Some(uplinks)
        }
    }
}

/// `iptables -t nat -S` as the planner looks at it: without hairpin or loopback forwards there is
/// nothing to plan there unless a chain of ours is left over.
fn nat_listing<'a>(listing: Option<&'a str>, declared: &Declared) -> Option<&'a str> {
    let needed = declared
        .forwards
        .iter()
        .any(|f| f.hairpin || is_localnet(f));
    listing.filter(|l| {
        needed
            || l.lines()
                .any(|l| l == format!("-N {HAIRPIN_CHAIN}") || l == format!("-N {LOCALNET_CHAIN}"))
    })
}

/// Whether `steps` change only the ruleset side of the facts (iptables, libvirt's nftables table,
/// the localnet guard, kernel settings), never firewalld's zones or policies: after such a plan,
/// what the gather read of firewalld still holds.
pub fn ruleset_only(steps: &[Step]) -> bool {
    steps.iter().all(|s| {
        matches!(
            s,
            Step::Iptables { .. }
                | Step::NftInsertRules { .. }
                | Step::NftDeleteRules { .. }
                | Step::LocalnetGuard { .. }
                | Step::Sysctl { .. }
        )
    })
}

/// The masquerade rules (arguments after `-A VIRTZONE_HAIRPIN`) of `--hairpin` forwards to IPv4
/// guests of running NAT networks: one per forward and subnet of its network.
pub fn hairpin_rules(declared: &Declared, networks: &Networks) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for f in declared
        .forwards
        .iter()
        .filter(|f| f.hairpin && f.guest.is_ipv4())
    {
        let Some(rec) = networks.networks.get(&f.network) else {
            continue;
        };
        if !(rec.active && rec.forward == ForwardMode::Nat) {
            continue;
        }
        for subnet in rec.subnets.iter().filter(|s| s.addr.is_ipv4()) {
            let rule = masquerade(&subnet.to_string(), f, rec.bridge.as_str());
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
    }
    out
}

/// The masquerade rules (arguments after `-A VIRTZONE_LOCALNET`) of loopback forwards to guests
/// of running networks: the host's connection leaves from 127.0.0.0/8 and must reach the guest from
/// the bridge's address instead.
pub fn localnet_rules(declared: &Declared, networks: &Networks) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for f in declared.forwards.iter().filter(|f| is_localnet(f)) {
        let Some(rec) = networks.networks.get(&f.network).filter(|r| r.active) else {
            continue;
        };
        let rule = masquerade("127.0.0.0/8", f, rec.bridge.as_str());
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    out
}

/// The bridges whose `route_localnet` loopback forwards need on: those of running networks.
fn localnet_bridges(declared: &Declared, networks: &Networks) -> BTreeSet<String> {
    declared
        .forwards
        .iter()
        .filter(|f| is_localnet(f))
        .filter_map(|f| networks.networks.get(&f.network))
        .filter(|r| r.active)
        .map(|r| r.bridge.to_string())
        .collect()
}

/// Splits `wanted` between libvirt's two firewall backends, decided per bridge from the live
/// ruleset (never from libvirt's configuration files, which may have changed since the network
/// started): an accept goes into libvirt's nftables chain `guest_input` when libvirt's rules there
/// name the bridge, into [`CHAIN`] when `LIBVIRT_FWI` rejects it. When neither shows the bridge
/// (e.g. in the middle of libvirt's rebuild, which runs its commands one by one) nothing that is
/// in place is taken away: the nftables accept stays (if libvirt's table exists at all), and the
/// iptables one is planned as before libvirt had this backend unless libvirt's nftables table
/// exists and [`CHAIN`] does not (then adding it would only be undone at the next check).
/// Returns `(iptables, nftables)`.
pub fn split_by_backend(wanted: Vec<Accept>, facts: &Facts) -> (Vec<Accept>, Vec<Accept>) {
    let nft = facts
        .libvirt_nft
        .as_ref()
        .map(super::nft::GuestInput::bridges)
        .unwrap_or_default();
    let ipt = facts
        .iptables
        .as_deref()
        .map(iptables::bridges)
        .unwrap_or_default();
    let chain_exists = facts
        .iptables
        .as_deref()
        .is_some_and(|l| l.lines().any(|l| split_line(l) == ["-N", CHAIN]));
    let iptables_in_doubt = facts.libvirt_nft.is_none() || chain_exists;
    let (mut to_ipt, mut to_nft) = (Vec::new(), Vec::new());
    for a in wanted {
        let (in_nft, in_ipt) = (nft.contains(&a.bridge), ipt.contains(&a.bridge));
        if in_nft || !in_ipt {
            to_nft.push(a.clone());
        }
        if in_ipt || (!in_nft && iptables_in_doubt) {
            to_ipt.push(a);
        }
    }
    (to_ipt, to_nft)
}

/// What the declared allows need in [`ALLOW_POLICY`].
fn allow_entries(declared: &Declared, facts: &Facts) -> Entries {
    let mut e = Entries::default();
    for a in &declared.allows {
        let Some(rec) = facts.networks.networks.get(&a.network) else {
            continue;
        };
        if let Some(zone) = zone_of_network(facts, a.network.as_str()) {
            e.ingress_zones.insert(zone);
        }
        e.rich_rules.extend(allow_rules(&a.opening, &rec.subnets));
    }
    e
}

/// Steps making one of virtzone's policies hold `want`, creating it (then reloading) when missing.
fn policy_steps(
    name: &str,
    ingress_default: &[&str],
    egress: &str,
    layers: &Layers,
    want: Entries,
    steps: &mut Vec<Step>,
) {
    let Some(permanent) = &layers.permanent else {
        let mut ingress: Vec<String> = want.ingress_zones.iter().cloned().collect();
        if ingress.is_empty() {
            ingress = ingress_default.iter().map(|s| s.to_string()).collect();
        }
        steps.push(Step::AddOwnPolicy(OwnPolicy {
            name: name.to_string(),
            ingress,
            egress: vec![egress.to_string()],
            priority: POLICY_PRIORITY,
            target: "CONTINUE".to_string(),
            description: POLICY_DESCRIPTION.to_string(),
            entries: want,
        }));
        steps.push(Step::Reload);
        return;
    };
    let mut want = want;
    if want.ingress_zones.is_empty() {
        // A policy needs an ingress zone; keep whatever it has rather than emptying it.
        want.ingress_zones = permanent.ingress_zones.clone();
    }
    for (layer, have) in [
        (Layer::Permanent, Some(permanent)),
        (Layer::Runtime, layers.runtime.as_ref()),
    ] {
        match have {
            Some(have) if *have == want => {}
            Some(have) => steps.push(match layer {
                Layer::Permanent => Step::SetPermanentPolicyEntries {
                    name: name.to_string(),
                    entries: want.clone(),
                    previous: have.clone(),
                },
                Layer::Runtime => Step::SetPolicyEntries {
                    name: name.to_string(),
                    entries: want.clone(),
                    previous: have.clone(),
                },
            }),
            // Permanent but not yet runtime: a reload brings it.
            None => {
                if !steps.contains(&Step::Reload) {
                    steps.push(Step::Reload);
                }
            }
        }
    }
}

/// Plans everything: `declared` is what should exist, `gone` the forwards just removed (their
/// firewalld entries are taken out; nothing else virtzone did not declare is ever removed).
///
/// The order keeps every intermediate state safe: accepts in libvirt's path first, then firewalld's
/// DNAT, and on removal the DNAT goes first and the accepts after.
pub fn plan(declared: &Declared, gone: &[Forward], facts: &Facts) -> Result<Plan, Refusal> {
    let mut steps = Vec::new();
    let (wanted, nft_wanted) = split_by_backend(accepts(declared, &facts.networks), facts);
    let (mut before, mut after) =
        match &facts.iptables {
            Some(listing) => iptables::steps(listing, &wanted),
            None if wanted.is_empty() => (Vec::new(), Vec::new()),
            // Without the accept, libvirt's reject wins: better refused than silently dead.
            None => return Err(Refusal::new(
                Reason::IptablesUnreadable,
                "cannot read iptables' filter table through firewalld's direct interface, so the \
                 forward could not get past libvirt's reject for NAT networks; check that iptables \
                 is installed and firewalld's direct interface works (firewall-cmd --direct \
                 --passthrough ipv4 -t filter -S)",
            )),
        };
    if let Some(chain) = &facts.libvirt_nft {
        let (nft_before, nft_after) = super::nft::steps(chain, super::nft::FAMILY, &nft_wanted);
        before.extend(nft_before);
        after.extend(nft_after);
    }
    if let Some(chain) = &facts.libvirt_nft6 {
        let (nft_before, nft_after) = super::nft::steps(
            chain,
            super::nft::FAMILY6,
            &accepts6(declared, &facts.networks, &chain.bridges()),
        );
        before.extend(nft_before);
        after.extend(nft_after);
    }
    steps.extend(before);
    let hairpins = hairpin_rules(declared, &facts.networks);
    if !hairpins.is_empty()
        && matches!(
            Shape::of(&facts.version, &facts.default_zone),
            Shape::Zone(_)
        )
    {
        return Err(Refusal::new(Reason::FirewalldTooOld,
            "--hairpin needs firewalld 2.2.0 (or 2.1.2, 2.0.4) or later: before that no firewalld object \
             can forward the guests' own connections without editing the libvirt zone; leave it out",
        ));
    }
    let nat = nat_listing(facts.iptables_nat.as_deref(), declared);
    let (nat_before, nat_after) = match nat {
        Some(listing) => {
            iptables::chain_steps("nat", listing, HAIRPIN_CHAIN, "POSTROUTING", &hairpins)
        }
        None if hairpins.is_empty() => (Vec::new(), Vec::new()),
        None => {
            return Err(Refusal::new(
                Reason::IptablesUnreadable,
                "cannot read iptables' nat table through firewalld's direct interface, which \
                 --hairpin needs; check firewall-cmd --direct --passthrough ipv4 -t nat -S",
            ))
        }
    };
    steps.extend(nat_before);
    let localnet = localnet_rules(declared, &facts.networks);
    let (local_before, local_after) = match nat {
        Some(listing) => iptables::chain_steps("nat", listing, LOCALNET_CHAIN, "POSTROUTING", &localnet),
        None if localnet.is_empty() => (Vec::new(), Vec::new()),
        None => {
            return Err(Refusal::new(Reason::IptablesUnreadable,
                "cannot read iptables' nat table through firewalld's direct interface, which \
                 forwards of a loopback address need; check firewall-cmd --direct --passthrough ipv4 -t nat -S",
            ))
        }
    };
    let mut warnings = Vec::new();
    let localnet_wanted = localnet_bridges(declared, &facts.networks);
    let any_localnet = declared.forwards.iter().any(is_localnet);
    // Needed while a loopback forward exists or a bridge keeps route_localnet on after this plan.
    let guard_needed = any_localnet
        || facts.route_localnet_elsewhere
        || (!facts.sysctl_writable
            && facts
                .route_localnet
                .iter()
                .any(|(b, &on)| on && !localnet_wanted.contains(b)));
    match facts.localnet_guard {
        // The guard comes first: route_localnet is never on without it.
        Some(false) if any_localnet => steps.push(Step::LocalnetGuard { present: true }),
        None if any_localnet => {
            return Err(Refusal::new(
                Reason::NftMissing,
                "cannot run nft, which guards the host's loopback addresses from guests while a \
                 forward of a loopback address exists; install nftables",
            ))
        }
        _ => {}
    }
    for (bridge, &on) in &facts.route_localnet {
        let want = localnet_wanted.contains(bridge);
        if on == want {
            continue;
        }
        let (value, previous) = if want { ("1", "0") } else { ("0", "1") };
        if facts.sysctl_writable {
            steps.push(Step::Sysctl {
                key: route_localnet_key(bridge),
                value: value.into(),
                previous: previous.into(),
            });
        } else {
            warnings.push(Warning {
                reason: WarningReason::KernelSettingReadOnly,
                message: format!(
                    "route_localnet of bridge {bridge} should be {value} for forwards of a loopback \
                     address, but this process may not change kernel settings; the network hook or \
                     virtzone forward sets it"
                ),
            });
        }
    }
    steps.extend(local_before);
    // And it goes last, once route_localnet is off everywhere.
    let guard_off = facts.localnet_guard == Some(true) && !guard_needed;

    match Shape::of(&facts.version, &facts.default_zone) {
        Shape::Zone(default_zone) => {
            // Loopback forwards serve the host's own connections only (the from-host policy).
            let want: BTreeSet<FirewalldEntry> = declared
                .forwards
                .iter()
                .filter(|f| !is_localnet(f))
                .map(firewalld_entry)
                .collect();
            // Entries of forwards virtzone declared or is removing: the only ones it touches.
            let ours: BTreeSet<FirewalldEntry> = gone
                .iter()
                .map(firewalld_entry)
                .chain(want.iter().cloned())
                .collect();
            let uplinks = uplink_zones(facts);
            for layer in [Layer::Permanent, Layer::Runtime] {
                let have_of = |zone: &str| {
                    facts.zones.get(zone).and_then(|l| match layer {
                        Layer::Permanent => l.permanent.as_ref(),
                        Layer::Runtime => l.runtime.as_ref(),
                    })
                };
                if have_of(&default_zone).is_none() {
                    return Err(Refusal::new(Reason::DefaultZoneUnreadable, format!(
                        "firewalld's default zone {default_zone} cannot be read; check firewall-cmd --get-default-zone"
                    )));
                }
                for zone in facts.zones.keys() {
                    let Some(have) = have_of(zone) else { continue };
                    let here: &BTreeSet<FirewalldEntry> = if uplinks.contains(zone) {
                        &want
                    } else {
                        &BTreeSet::new()
                    };
                    for e in ours.difference(here) {
                        steps.extend(zone_entry_step(layer, zone, e, have, false));
                    }
                    for e in here {
                        steps.extend(zone_entry_step(layer, zone, e, have, true));
                    }
                }
            }
        }
        Shape::Policy => {
            let mut want = Entries::default();
            for f in declared.forwards.iter().filter(|f| !is_localnet(f)) {
                match firewalld_entry(f) {
                    FirewalldEntry::Port(p) => {
                        want.forward_ports.insert(p);
                    }
                    FirewalldEntry::Rule(r) => {
                        want.rich_rules.insert(r);
                    }
                }
            }
            want.ingress_zones.insert("ANY".into());
            // Domain forwards not resolved yet count too: the policy is created now, not by the
            // qemu hook at the domain's start (a reload there would eat its time budget).
            let untouched = facts.forward_policy.permanent.is_none()
                && declared.forwards.is_empty()
                && declared.domain_forwards.is_empty();
            if !untouched {
                policy_steps(
                    FORWARD_POLICY,
                    &["ANY"],
                    "HOST",
                    &facts.forward_policy,
                    want,
                    &mut steps,
                );
            }
        }
    }

    let allows = allow_entries(declared, facts);
    let allow_untouched = facts.allow_policy.permanent.is_none() && declared.allows.is_empty();
    if !allow_untouched {
        if !facts.policies {
            return Err(Refusal::new(Reason::FirewalldTooOld,
                "this firewalld has no policies (they came with 0.9.0), which `virtzone allow` needs; \
                 open the port in the network's zone instead (firewall-cmd --zone=libvirt --add-service=…)",
            ));
        }
        policy_steps(
            ALLOW_POLICY,
            &[crate::LIBVIRT_ZONE],
            "HOST",
            &facts.allow_policy,
            allows,
            &mut steps,
        );
    }

    let from_host: Vec<&Forward> = declared.forwards.iter().filter(|f| f.from_host).collect();
    let from_host_pending = declared.domain_forwards.iter().any(|f| f.from_host);
    if !(facts.from_host_policy.permanent.is_none() && from_host.is_empty() && !from_host_pending) {
        if !crate::firewalld::Capabilities::of(&facts.version).host_forward_ports {
            return Err(Refusal::new(Reason::FirewalldTooOld,
                "--from-host needs firewalld 1.1 or later (forwards of host-originated connections); \
                 leave it out",
            ));
        }
        let want = Entries {
            rich_rules: from_host
                .iter()
                .filter_map(|f| match firewalld_entry(f) {
                    FirewalldEntry::Rule(r) => Some(r),
                    FirewalldEntry::Port(_) => None,
                })
                .collect(),
            ingress_zones: BTreeSet::from(["HOST".to_string()]),
            ..Entries::default()
        };
        policy_steps(
            FROM_HOST_POLICY,
            &["HOST"],
            "ANY",
            &facts.from_host_policy,
            want,
            &mut steps,
        );
    }
    // A reload rebuilds everything from the permanent layer: runtime steps planned now would be
    // planned against a state that no longer exists, so they wait for the next round.
    if steps.contains(&Step::Reload) {
        let mut kept: Vec<Step> = steps
            .into_iter()
            .filter(|s| !s.is_runtime() && *s != Step::Reload)
            .collect();
        kept.push(Step::Reload);
        return Ok(plan_of(kept, warnings));
    }
    steps.extend(after);
    steps.extend(nat_after);
    steps.extend(local_after);
    if guard_off {
        steps.push(Step::LocalnetGuard { present: false });
    }
    Ok(plan_of(steps, warnings))
}

/// The package's removal, once nothing is declared any more (the forwards' and allows' entries
/// already taken out): virtzone's own policies leave firewalld's permanent configuration too, each
/// that exists, then a reload makes that live. Nothing of virtzone's is left behind.
pub fn purge_policies(facts: &Facts) -> Plan {
    let mut steps = Vec::new();
    for (name, default_ingress, egress, layers) in [
        (FORWARD_POLICY, "ANY", "HOST", &facts.forward_policy),
        (
            ALLOW_POLICY,
            crate::LIBVIRT_ZONE,
            "HOST",
            &facts.allow_policy,
        ),
        (FROM_HOST_POLICY, "HOST", "ANY", &facts.from_host_policy),
    ] {
        let Some(entries) = &layers.permanent else {
            continue;
        };
        let mut ingress: Vec<String> = entries.ingress_zones.iter().cloned().collect();
        if ingress.is_empty() {
            ingress.push(default_ingress.to_string());
        }
        steps.push(Step::RemoveOwnPolicy(OwnPolicy {
            name: name.to_string(),
            ingress,
            egress: vec![egress.to_string()],
            priority: POLICY_PRIORITY,
            target: "CONTINUE".to_string(),
            description: POLICY_DESCRIPTION.to_string(),
            entries: entries.clone(),
        }));
    }
    if !steps.is_empty() {
        steps.push(Step::Reload);
    }
    plan_of(steps, Vec::new())
}

fn plan_of(steps: Vec<Step>, warnings: Vec<Warning>) -> Plan {
    Plan { steps, warnings }
}

fn zone_entry_step(
    layer: Layer,
    zone: &str,
    entry: &FirewalldEntry,
    have: &Entries,
    add: bool,
) -> Option<Step> {
    let present = match entry {
        FirewalldEntry::Port(p) => have.forward_ports.contains(p),
        FirewalldEntry::Rule(r) => have.rich_rules.contains(r),
    };
    if present == add {
        return None;
    }
    let zone = zone.to_string();
    Some(match (entry, layer, add) {
        (FirewalldEntry::Port(p), Layer::Runtime, true) => Step::AddForwardPort {
            zone,
            entry: p.clone(),
        },
        (FirewalldEntry::Port(p), Layer::Runtime, false) => Step::RemoveForwardPort {
            zone,
            entry: p.clone(),
        },
        (FirewalldEntry::Port(p), Layer::Permanent, true) => Step::AddPermanentForwardPort {
            zone,
            entry: p.clone(),
        },
        (FirewalldEntry::Port(p), Layer::Permanent, false) => Step::RemovePermanentForwardPort {
            zone,
            entry: p.clone(),
        },
        (FirewalldEntry::Rule(r), Layer::Runtime, true) => Step::AddRichRule {
            zone,
            rule: r.clone(),
        },
        (FirewalldEntry::Rule(r), Layer::Runtime, false) => Step::RemoveRichRule {
            zone,
            rule: r.clone(),
        },
        (FirewalldEntry::Rule(r), Layer::Permanent, true) => Step::AddPermanentRichRule {
            zone,
            rule: r.clone(),
        },
        (FirewalldEntry::Rule(r), Layer::Permanent, false) => Step::RemovePermanentRichRule {
            zone,
            rule: r.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::model::{Allow, Ports, Proto};
    use crate::forward::network::{NetworkRecord, Subnet};
    use crate::names::BridgeName;

    fn v(t: &str) -> Version {
        crate::firewalld::parse_version(t).unwrap()
    }

    fn fwd(id: u32, guest: &str, host: u16, to: u16) -> Forward {
        Forward {
            id,
            network: "net1".parse().unwrap(),
            guest: guest.parse().unwrap(),
            rule: crate::forward::model::ForwardRule {
                proto: Proto::Tcp,
                host_port: Ports { lo: host, hi: host },
                guest_port: Ports { lo: to, hi: to },
                host_address: None,
                from_host: false,
                hairpin: false,
            },
        }
    }

    fn networks(active: bool) -> Networks {
        let mut n = Networks::default();
        n.networks.insert(
            "net1".parse().unwrap(),
            NetworkRecord {
                bridge: BridgeName::new("virbr1").unwrap(),
                forward: ForwardMode::Nat,
                subnets: vec!["192.0.2.0/24".parse::<Subnet>().unwrap()],
                host: vec!["192.0.2.1".parse().unwrap()],
                active,
                hosts: Vec::new(),
                nat: None,
            },
        );
        n
    }

    fn facts(version: &str, listing: &str) -> Facts {
        Facts {
            version: v(version),
            default_zone: "public".into(),
            zones: ["public", "libvirt", "work"]
                .into_iter()
                .map(|z| {
                    let layers = Layers {
                        runtime: Some(Entries::default()),
                        permanent: Some(Entries::default()),
                    };
                    (z.to_string(), layers)
                })
                .collect(),
            active_zones: BTreeSet::from(["libvirt".to_string()]),
            forward_policy: Layers::default(),
            allow_policy: Layers::default(),
            from_host_policy: Layers::default(),
            policies: true,
            networks: networks(true),
            bridge_zones: BTreeMap::from([("virbr1".into(), "libvirt".into())]),
            iptables: Some(listing.into()),
            iptables_nat: Some(String::new()),
            libvirt_nft: None,
            libvirt_nft6: None,
            localnet_guard: Some(false),
            route_localnet: BTreeMap::from([("virbr1".into(), false)]),
            route_localnet_elsewhere: false,
            sysctl_writable: true,
        }
    }

    const LIBVIRT_ONLY: &str = "-P FORWARD ACCEPT\n-N LIBVIRT_FWI\n-A FORWARD -j LIBVIRT_FWX\n\
                                -A FORWARD -j LIBVIRT_FWI\n-A FORWARD -j LIBVIRT_FWO\n";

    #[test]
    fn the_nat_listing_is_planned_only_for_hairpin_loopback_or_our_left_over_chain() {
        // Nothing declared any more (a plan that adds a policy reloads, and defers the rest).
        let d = Declared::default();
        let nat_steps = |listing: &str| {
            let mut f = facts("2.3.1", LIBVIRT_ONLY);
            f.iptables_nat = Some(listing.into());
            plan(&d, &[], &f)
                .unwrap()
                .steps
                .into_iter()
                .filter(|s| matches!(s, Step::Iptables { table, .. } if table == "nat"))
                .count()
        };
        // Other programs' nat rules: nothing to plan (the reader no longer filters the listing).
        assert_eq!(nat_steps("-P POSTROUTING ACCEPT\n-N LIBVIRT_PRT\n"), 0);
        // A chain of ours left over without hairpin forwards: taken out.
        let left_over = format!(
            "-P POSTROUTING ACCEPT\n-N {HAIRPIN_CHAIN}\n-A POSTROUTING -j {HAIRPIN_CHAIN}\n"
        );
        assert!(nat_steps(&left_over) > 0);
    }

    #[test]
    fn only_ruleset_steps_keep_the_gather_for_the_next_check() {
        let ipt = Step::Iptables {
            table: "filter".into(),
            args: vec!["-N".into(), "VIRTZONE_FWD".into()],
        };
        assert!(ruleset_only(&[
            ipt.clone(),
            Step::LocalnetGuard { present: true }
        ]));
        assert!(!ruleset_only(&[ipt, Step::Reload]));
        let d = Declared {
            forwards: vec![fwd(1, "192.0.2.5", 8080, 80)],
            ..Declared::default()
        };
        // The first forward on 1.3.3 adds zone entries too: the next check gathers in full.
        let steps = plan(&d, &[], &facts("1.3.3", LIBVIRT_ONLY)).unwrap().steps;
        assert!(!ruleset_only(&steps));
    }

    #[test]
    fn a_full_zone_read_is_owned_by_its_caller_and_repeated_when_uplinks_change() {
        let uplinks = |z: &[&str]| z.iter().map(|z| z.to_string()).collect::<BTreeSet<_>>();
        let mut daemon = LastFullRead::default();
        assert_eq!(daemon.zones_to_read(uplinks(&["public"]), false), None);
        assert_eq!(
            daemon.zones_to_read(uplinks(&["public"]), false),
            Some(uplinks(&["public"]))
        );
        // Another caller (a command in the same process, a test) has read nothing yet.
        let mut other = LastFullRead::default();
        assert_eq!(other.zones_to_read(uplinks(&["public"]), false), None);
        assert_eq!(
            daemon.zones_to_read(uplinks(&["public", "work"]), false),
            None
        );
        assert_eq!(
            daemon.zones_to_read(uplinks(&["public", "work"]), true),
            None
        );
        // libvirt's zones are never uplinks.
        let active = uplinks(&["libvirt", "work"]);
        assert_eq!(
            uplink_candidates("public", &active),
            uplinks(&["public", "work"])
        );
    }

    #[test]
    fn shape_follows_the_measured_versions() {
        for (ver, policy) in [
            ("0.9.3", false),
            ("1.3.3", false),
            ("2.0.3", false),
            ("2.0.4", true),
            ("2.1.1", false),
            ("2.1.2", true),
            ("2.2.0", true),
            ("2.3.1", true),
        ] {
            assert_eq!(
                Shape::of(&v(ver), "public") == Shape::Policy,
                policy,
                "{ver}"
            );
        }
    }

    #[test]
    fn first_forward_on_1_3_3_adds_accept_jump_and_zone_entries() {
        let d = Declared {
            forwards: vec![fwd(1, "192.0.2.5", 8080, 80)],
            ..Declared::default()
        };
        let steps = plan(&d, &[], &facts("1.3.3", LIBVIRT_ONLY)).unwrap().steps;
        let ipt: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Iptables { args, .. } => Some(args.join(" ")),
                _ => None,
            })
            .collect();
        assert_eq!(ipt[0], "-N VIRTZONE_FWD");
        assert!(ipt[1]
            .starts_with("-A VIRTZONE_FWD -d 192.0.2.5/32 -o virbr1 -p tcp -m tcp --dport 80 "));
        assert!(ipt[1].ends_with("--comment virtzone-fwd -j ACCEPT"));
        assert_eq!(ipt[2], "-I FORWARD 1 -j VIRTZONE_FWD");
        let entry = ("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into());
        assert!(steps.contains(&Step::AddPermanentForwardPort {
            zone: "public".into(),
            entry: entry.clone(),
        }));
        assert!(steps.contains(&Step::AddForwardPort {
            zone: "public".into(),
            entry,
        }));
        // Accepts come before the DNAT.
        assert!(matches!(steps.last(), Some(Step::AddForwardPort { .. })));
    }

    #[test]
    fn before_2_2_forwards_follow_the_uplink_zones() {
        let f = fwd(1, "192.0.2.5", 8080, 80);
        let entry: ForwardPortEntry =
            ("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into());
        let d = Declared {
            forwards: vec![f],
            ..Declared::default()
        };
        let zones_with = |steps: &[Step], permanent: bool| -> BTreeSet<String> {
            steps
                .iter()
                .filter_map(|s| match s {
                    Step::AddForwardPort { zone, .. } if !permanent => Some(zone.clone()),
                    Step::AddPermanentForwardPort { zone, .. } if permanent => Some(zone.clone()),
                    _ => None,
                })
                .collect()
        };
        // An uplink bound to `work`: the forward goes there as well as into the default zone,
        // never into the guests' zone.
        let mut facts = facts("1.3.3", LIBVIRT_ONLY);
        facts.active_zones.insert("work".into());
        let steps = plan(&d, &[], &facts).unwrap().steps;
        let both = BTreeSet::from(["public".to_string(), "work".to_string()]);
        assert_eq!(zones_with(&steps, false), both);
        assert_eq!(zones_with(&steps, true), both);
        assert_eq!(uplink_zones(&facts), both);
        // The uplink leaves `work`: its entries go, in both layers; the default zone keeps its own.
        facts.active_zones.remove("work");
        for (zone, layers) in facts.zones.iter_mut() {
            if zone != "libvirt" {
                for l in [&mut layers.runtime, &mut layers.permanent] {
                    l.as_mut().unwrap().forward_ports.insert(entry.clone());
                }
            }
        }
        let steps: Vec<Step> = plan(&d, &[], &facts)
            .unwrap()
            .steps
            .into_iter()
            .filter(|s| !matches!(s, Step::Iptables { .. }))
            .collect();
        assert_eq!(
            steps,
            [
                Step::RemovePermanentForwardPort {
                    zone: "work".into(),
                    entry: entry.clone()
                },
                Step::RemoveForwardPort {
                    zone: "work".into(),
                    entry
                },
            ]
        );
    }

    #[test]
    fn a_loopback_forward_puts_the_guard_before_route_localnet_and_serves_the_host_only() {
        let mut f = fwd(1, "192.0.2.5", 8080, 80);
        f.host_address = Some("127.0.0.1".parse().unwrap());
        f.from_host = true;
        let d = Declared {
            forwards: vec![f.clone()],
            ..Declared::default()
        };
        let mut facts = facts("2.3.1", LIBVIRT_ONLY);
        let empty = Layers {
            runtime: Some(Entries::default()),
            permanent: Some(Entries::default()),
        };
        facts.from_host_policy = empty.clone();
        facts.forward_policy = empty;
        let steps = plan(&d, &[], &facts).unwrap().steps;
        let guard = steps
            .iter()
            .position(|s| *s == Step::LocalnetGuard { present: true })
            .unwrap();
        let on = Step::Sysctl {
            key: "net/ipv4/conf/virbr1/route_localnet".into(),
            value: "1".into(),
            previous: "0".into(),
        };
        assert!(guard < steps.iter().position(|s| *s == on).unwrap());
        let ipt: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Iptables { table, args } => Some(format!("{table} {}", args.join(" "))),
                _ => None,
            })
            .collect();
        assert!(ipt.iter().any(|l| l.starts_with(
            "nat -A VIRTZONE_LOCALNET -s 127.0.0.0/8 -d 192.0.2.5/32 -o virbr1 -p tcp"
        )));
        // The host's own connections only: no accept in FORWARD, no upstream forward-port.
        assert!(!ipt.iter().any(|l| l.starts_with("filter")), "{ipt:?}");
        assert!(!steps.iter().any(|s| matches!(s,
            Step::SetPolicyEntries { name, entries, .. } if name == FORWARD_POLICY
                && !entries.rich_rules.is_empty())));
        assert!(steps.iter().any(|s| matches!(s,
            Step::SetPolicyEntries { name, entries, .. } if name == FROM_HOST_POLICY
                && entries.rich_rules.iter().any(|r| r.contains("destination address=\"127.0.0.1\"")))));
        // Nft cannot be run: refused rather than route_localnet without its guard.
        facts.localnet_guard = None;
        assert!(plan(&d, &[], &facts).is_err());
        // The forward goes: route_localnet off first, then the guard.
        facts.localnet_guard = Some(true);
        facts.route_localnet.insert("virbr1".into(), true);
        let steps = plan(&Declared::default(), &[f.clone()], &facts)
            .unwrap()
            .steps;
        let off = steps
            .iter()
            .position(|s| matches!(s, Step::Sysctl { value, .. } if value == "0"))
            .unwrap();
        assert_eq!(
            steps
                .iter()
                .position(|s| *s == Step::LocalnetGuard { present: false }),
            Some(steps.len() - 1)
        );
        assert!(off < steps.len() - 1);
        // Another interface keeps route_localnet on: the guard stays.
        facts.route_localnet_elsewhere = true;
        let steps = plan(&Declared::default(), &[f.clone()], &facts)
            .unwrap()
            .steps;
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Sysctl { value, .. } if value == "0")));
        assert!(!steps.contains(&Step::LocalnetGuard { present: false }));
        facts.route_localnet_elsewhere = false;
        // Where kernel settings are read-only (the daemon's sandbox): a warning, no step, and the
        // guard stays while route_localnet stays on.
        facts.sysctl_writable = false;
        let p = plan(&Declared::default(), &[], &facts).unwrap();
        assert!(
            !p.steps
                .iter()
                .any(|s| matches!(s, Step::Sysctl { .. } | Step::LocalnetGuard { .. })),
            "{:?}",
            p.steps
        );
        assert_eq!(p.warnings[0].reason, WarningReason::KernelSettingReadOnly);
    }

    #[test]
    fn purge_removes_virtzones_own_policies_then_reloads() {
        let mut facts = facts("2.3.1", LIBVIRT_ONLY);
        assert!(purge_policies(&facts).is_empty());
        facts.forward_policy = Layers {
            runtime: Some(Entries::default()),
            permanent: Some(Entries {
                ingress_zones: BTreeSet::from(["ANY".to_string()]),
                ..Entries::default()
            }),
        };
        facts.from_host_policy = Layers {
            runtime: None,
            permanent: Some(Entries::default()),
        };
        let steps = purge_policies(&facts).steps;
        let names: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                format!("remove policy {FORWARD_POLICY}"),
                format!("remove policy {FROM_HOST_POLICY}"),
                "reload".to_string()
            ]
            .map(|s| s.to_string()),
        );
        // Undone, each comes back as it was (the rollback recreates it with its ingress zone).
        let Some(Step::AddOwnPolicy(p)) = steps[1].inverse() else {
            panic!("{:?}", steps[1].inverse());
        };
        assert_eq!(
            (p.ingress, p.egress),
            (vec!["HOST".to_string()], vec!["ANY".to_string()])
        );
    }

    #[test]
    fn a_domain_forward_not_resolved_yet_creates_the_policy_ahead_of_the_hook() {
        use crate::forward::model::DomainForward;
        let d = Declared {
            domain_forwards: vec![DomainForward {
                id: 1,
                domain: "vm1".into(),
                network: None,
                rule: crate::forward::model::ForwardRule {
                    proto: Proto::Tcp,
                    host_port: "8080".parse().unwrap(),
                    guest_port: "80".parse().unwrap(),
                    host_address: None,
                    from_host: false,
                    hairpin: false,
                },
            }],
            ..Declared::default()
        };
        let steps = plan(&d, &[], &facts("2.3.1", LIBVIRT_ONLY)).unwrap().steps;
        assert!(
            matches!(&steps[..], [Step::AddOwnPolicy(p), Step::Reload] if p.name == FORWARD_POLICY),
            "{steps:?}"
        );
    }

    #[test]
    fn rebuilt_libvirt_jumps_in_front_move_ours_back_to_the_top() {
        let d = Declared {
            forwards: vec![fwd(1, "192.0.2.5", 8080, 80)],
            ..Declared::default()
        };
        let rule = Accept {
            guest: "192.0.2.5".parse().unwrap(),
            bridge: "virbr1".into(),
            proto: Proto::Tcp,
            ports: vec![Ports { lo: 80, hi: 80 }],
        };
        let rule_line = format!("-A VIRTZONE_FWD {}", iptables::accept_rule(&rule).join(" "));
        let behind = format!(
            "-N VIRTZONE_FWD\n-A FORWARD -j LIBVIRT_FWX\n-A FORWARD -j LIBVIRT_FWI\n\
             -A FORWARD -j VIRTZONE_FWD\n{rule_line}\n"
        );
        let (before, after) = iptables::steps(&behind, &accepts(&d, &networks(true)));
        let text: Vec<String> = before
            .iter()
            .map(|s| match s {
                Step::Iptables { args, .. } => args.join(" "),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            text,
            ["-D FORWARD -j VIRTZONE_FWD", "-I FORWARD 1 -j VIRTZONE_FWD"]
        );
        assert!(after.is_empty());
        // In place: nothing to do. A quoted comment (older iptables) parses the same.
        let good = format!(
            "-N VIRTZONE_FWD\n-A FORWARD -j VIRTZONE_FWD\n-A FORWARD -j LIBVIRT_FWI\n{}\n",
            rule_line.replace("virtzone-fwd", "\"virtzone-fwd\"")
        );
        let (b, a) = iptables::steps(&good, &accepts(&d, &networks(true)));
        assert!(b.is_empty() && a.is_empty(), "{b:?} {a:?}");
        // Network stopped: the accept goes, and so do jump and chain.
        let (b, a) = iptables::steps(&good, &accepts(&d, &networks(false)));
        assert!(b.is_empty());
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(
            matches!(&a[2], Step::Iptables { args, .. } if args.join(" ") == "-X VIRTZONE_FWD")
        );
    }

    #[test]
    fn removal_takes_out_only_what_was_declared() {
        let f = fwd(1, "192.0.2.5", 8080, 80);
        let mut facts = facts("1.3.3", "");
        let entry: ForwardPortEntry =
            ("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into());
        let admins: ForwardPortEntry =
            ("9090".into(), "tcp".into(), "90".into(), "192.0.2.9".into());
        let public = facts.zones.get_mut("public").unwrap();
        for l in [&mut public.runtime, &mut public.permanent] {
            let e = l.as_mut().unwrap();
            e.forward_ports.insert(entry.clone());
            e.forward_ports.insert(admins.clone());
        }
        let steps = plan(&Declared::default(), &[f], &facts).unwrap().steps;
        assert_eq!(
            steps,
            [
                Step::RemovePermanentForwardPort {
                    zone: "public".into(),
                    entry: entry.clone()
                },
                Step::RemoveForwardPort {
                    zone: "public".into(),
                    entry
                }
            ]
        );
    }

    #[test]
    fn policy_shape_creates_the_policy_then_reloads() {
        let d = Declared {
            forwards: vec![fwd(1, "192.0.2.5", 8080, 80)],
            ..Declared::default()
        };
        let steps = plan(&d, &[], &facts("2.3.1", "")).unwrap().steps;
        assert!(
            matches!(&steps[..], [
            Step::AddOwnPolicy(p), Step::Reload
        ] if p.name == FORWARD_POLICY && p.priority == POLICY_PRIORITY && p.target == "CONTINUE"),
            "{steps:?}"
        );
        // Once it exists with the entries, nothing is left to do.
        let mut f = facts("2.3.1", "");
        let mut e = Entries::default();
        e.forward_ports
            .insert(("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into()));
        e.ingress_zones.insert("ANY".into());
        f.forward_policy = Layers {
            runtime: Some(e.clone()),
            permanent: Some(e),
        };
        f.iptables = None;
        f.networks = networks(false);
        assert!(plan(&d, &[], &f).unwrap().is_empty());
    }

    #[test]
    fn allows_are_limited_to_the_network_subnets() {
        let d = Declared {
            allows: vec![Allow {
                network: "net1".parse().unwrap(),
                opening: Opening::Service("nfs".into()),
            }],
            ..Declared::default()
        };
        let mut f = facts("1.3.3", "");
        let empty = Entries {
            ingress_zones: BTreeSet::from(["libvirt".to_string()]),
            ..Entries::default()
        };
        f.allow_policy = Layers {
            runtime: Some(empty.clone()),
            permanent: Some(empty),
        };
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert_eq!(steps.len(), 2);
        let Step::SetPermanentPolicyEntries { entries, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert!(matches!(&steps[1], Step::SetPolicyEntries { entries: e, .. } if e == entries));
        assert_eq!(
            entries.rich_rules.iter().collect::<Vec<_>>(),
            ["rule family=\"ipv4\" source address=\"192.0.2.0/24\" service name=\"nfs\" accept"]
        );
        f.policies = false;
        assert!(plan(&d, &[], &f).unwrap_err().message.contains("0.9.0"));
    }

    #[test]
    fn from_host_goes_into_its_own_policy_as_a_rule_with_the_host_address() {
        let mut f = fwd(1, "192.0.2.5", 8080, 80);
        f.host_address = Some("198.51.100.1".parse().unwrap());
        f.from_host = true;
        let d = Declared {
            forwards: vec![f],
            ..Declared::default()
        };
        let steps = plan(&d, &[], &facts("1.3.3", "")).unwrap().steps;
        let created = steps.iter().find_map(|s| match s {
            Step::AddOwnPolicy(p) if p.name == FROM_HOST_POLICY => Some((
                p.egress.clone(),
                p.ingress.clone(),
                p.entries.rich_rules.clone(),
            )),
            _ => None,
        });
        let (egress, ingress, rules) = created.expect("the from-host policy");
        assert_eq!(
            (egress, ingress),
            (vec!["ANY".to_string()], vec!["HOST".to_string()])
        );
        assert_eq!(
            rules.into_iter().collect::<Vec<_>>(),
            ["rule family=\"ipv4\" destination address=\"198.51.100.1\" forward-port port=\"8080\" \
              protocol=\"tcp\" to-port=\"80\" to-addr=\"192.0.2.5\""]
        );
        assert!(plan(&d, &[], &facts("1.0.3", ""))
            .unwrap_err()
            .message
            .contains("1.1"));
    }

    #[test]
    fn accepts_share_rules_per_guest_within_multiport_limits() {
        let mut forwards: Vec<Forward> = (0..20)
            .map(|i| fwd(i + 1, "192.0.2.5", 9000 + i as u16, 100 + i as u16))
            .collect();
        forwards.push(fwd(30, "192.0.2.5", 9500, 100)); // same guest port as forward 1: no new slot
        forwards.push(fwd(31, "192.0.2.6", 9501, 80));
        let mut range = fwd(32, "192.0.2.6", 9600, 2000);
        range.host_port = Ports { lo: 9600, hi: 9610 };
        range.guest_port = Ports { lo: 2000, hi: 2010 };
        forwards.push(range);
        let d = Declared {
            forwards,
            ..Declared::default()
        };
        let a = accepts(&d, &networks(true));
        let shapes: Vec<(String, usize)> = a
            .iter()
            .map(|r| (r.guest.to_string(), r.ports.len()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("192.0.2.5".to_string(), 15),
                ("192.0.2.5".to_string(), 5),
                ("192.0.2.6".to_string(), 2)
            ]
        );
        assert!(iptables::accept_rule(&a[2])
            .join(" ")
            .contains("-p tcp -m multiport --dports 80,2000:2010 -m conntrack"));
        assert!(accepts(&d, &networks(false)).is_empty());
    }

    #[test]
    fn no_iptables_view_refuses_nat_forwards_only() {
        let d = Declared {
            forwards: vec![fwd(1, "192.0.2.5", 8080, 80)],
            ..Declared::default()
        };
        let mut f = facts("1.3.3", "");
        f.iptables = None;
        let refusal = plan(&d, &[], &f).unwrap_err();
        assert_eq!(refusal.reason, Reason::IptablesUnreadable);
        assert_eq!(refusal.reason.as_str(), "iptables-unreadable");
        assert!(refusal.message.contains("direct interface"));
        f.networks = networks(false);
        assert!(plan(&d, &[], &f).is_ok());
    }

    #[test]
    fn nftables_backend_bridges_get_their_accept_in_guest_input_not_iptables() {
        let d = Declared {
            forwards: vec![fwd(1, "192.0.2.5", 8080, 80)],
            ..Declared::default()
        };
        let libvirt = r#"{"nftables": [{"rule": {"family": "ip", "table": "libvirt_network",
            "chain": "guest_input", "handle": 7, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr1"}},
            {"counter": null}, {"reject": null}]}}]}"#;
        let mut f = facts("1.3.3", "-P FORWARD ACCEPT\n");
        f.libvirt_nft = Some(crate::forward::nft::GuestInput::parse(libvirt, "ip").unwrap());
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(
            !steps.iter().any(|s| matches!(s, Step::Iptables { .. })),
            "{steps:?}"
        );
        assert!(matches!(&steps[0], Step::NftInsertRules { chain, .. } if chain == "guest_input"));
        // Accepts come before the DNAT here too.
        assert!(matches!(steps.last(), Some(Step::AddForwardPort { .. })));
        // Unreadable iptables does not matter for such a network.
        f.iptables = None;
        assert!(plan(&d, &[], &f).is_ok());
        // A bridge in LIBVIRT_FWI only keeps the iptables path.
        let mut f = facts(
            "1.3.3",
            &format!("{LIBVIRT_ONLY}-A LIBVIRT_FWI -o virbr1 -j REJECT\n"),
        );
        f.libvirt_nft = Some(crate::forward::nft::GuestInput::default());
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(matches!(&steps[0], Step::Iptables { .. }), "{steps:?}");
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::NftInsertRules { .. })));
        // In neither (libvirt half-way through a rebuild of its nftables rules): the nftables
        // accept is kept, and no iptables one is added just to be removed again.
        let mut f = facts("1.3.3", LIBVIRT_ONLY);
        f.libvirt_nft = Some(crate::forward::nft::GuestInput::default());
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(!steps.iter().any(|s| matches!(s, Step::Iptables { .. })));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::NftInsertRules { .. })));
        // ... but an iptables accept in place is not taken away either.
        f.iptables = Some(format!("{LIBVIRT_ONLY}-N VIRTZONE_FWD\n"));
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(steps.iter().any(|s| matches!(s, Step::Iptables { .. })));
        // Without libvirt's nftables table: today's behaviour, iptables only.
        f.libvirt_nft = None;
        f.iptables = Some(LIBVIRT_ONLY.into());
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(steps.iter().any(|s| matches!(s, Step::Iptables { .. })));
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::NftInsertRules { .. })));
    }

    #[test]
    fn ipv6_guests_get_an_accept_only_where_libvirts_ip6_table_names_the_bridge() {
        let d = Declared {
            forwards: vec![fwd(1, "2001:db8::5", 8080, 80)],
            ..Declared::default()
        };
        let libvirt6 = r#"{"nftables": [{"rule": {"family": "ip6", "table": "libvirt_network",
            "chain": "guest_input", "handle": 9, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr1"}},
            {"counter": null}, {"reject": null}]}}]}"#;
        let mut f = facts("1.3.3", "");
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::NftInsertRules { .. } | Step::Iptables { .. })),
            "{steps:?}"
        );
        f.libvirt_nft6 = Some(crate::forward::nft::GuestInput::parse(libvirt6, "ip6").unwrap());
        let steps = plan(&d, &[], &f).unwrap().steps;
        assert!(
            matches!(&steps[0], Step::NftInsertRules { family, rules, .. }
                if family == "ip6" && rules[0].text.contains("ip6 daddr 2001:db8::5 tcp dport 80")),
            "{steps:?}"
        );
    }

    #[test]
    fn splits_iptables_lines() {
        assert_eq!(
            split_line(r#"-A X -m comment --comment "a b\"c" -j ACCEPT"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a b\"c",
                "-j",
                "ACCEPT"
            ]
        );
    }
}
