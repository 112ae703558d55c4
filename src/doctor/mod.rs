//! `virtzone doctor`: why guests are blocked, from evidence.
//!
//! Each check is a pure function of [`Facts`] (gathered once by [`facts`]) that returns one
//! [`Check`]: ok, warning, problem, or skipped with the reason a fact could not be had. A check
//! never guesses: a fact that could not be read makes it `skipped`, and a packet verdict the evaluator
//! cannot reach makes it `skipped` too. The ids are stable (docs/json.md); new checks come with an id,
//! evidence, a fix (or none) and a lab test.

pub mod docker;
pub mod domains;
pub mod facts;
pub mod fix;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::firewalld::{FirewalldFacts, State};
use crate::libvirt::network::Bridged;
use crate::libvirt::ForwardMode;
use crate::precheck::{self, Request};

pub use facts::{gather, Facts, NetworkFacts};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong.
    Ok,
    /// Works, but deserves attention (exit status stays 0).
    Warning,
    /// Guests are or will be blocked (exit status 1).
    Problem,
    /// Could not run; the summary says why.
    Skipped,
}

impl Status {
    /// The word the text output shows.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Problem => "PROBLEM",
            Status::Skipped => "skipped",
        }
    }
}

/// What fixes a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// The exact command an admin would run.
    pub command: String,
    /// Whether `doctor --fix` applies it itself.
    pub safe: bool,
    /// What `--fix` does, when safe.
    #[serde(skip)]
    pub action: Option<Action>,
}

/// The changes `doctor --fix` knows how to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `virtzone install`.
    Install,
    /// Bind these bridges to these zones at runtime and record them (bridge, zone, network).
    Bind(Vec<(String, String, String)>),
    /// Set these sysctls to 0 now and in `/etc/sysctl.d/`.
    DisableBridgeNetfilter(Vec<String>),
    /// Accept, in Docker's `DOCKER-USER` chain, exactly the path the check proved dropped: new
    /// connections from each bridge to the uplink, and their replies back (bridge, uplink) — never
    /// the bridge's traffic as a whole, which would open Docker's containers to guests.
    AcceptInDockerUser(Vec<(String, String)>),
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The stable id.
    pub id: &'static str,
    /// ok, warning, problem or skipped.
    pub status: Status,
    /// One sentence.
    pub summary: String,
    /// What proves it: rules, sysctls, files, bindings.
    pub evidence: Vec<String>,
    /// What fixes it, when something does.
    pub fix: Option<Fix>,
}

impl Check {
    fn new(id: &'static str, status: Status, summary: impl Into<String>) -> Check {
        Check {
            id,
            status,
            summary: summary.into(),
            evidence: Vec::new(),
            fix: None,
        }
    }

    fn ok(id: &'static str, summary: impl Into<String>) -> Check {
        Check::new(id, Status::Ok, summary)
    }

    fn skipped(id: &'static str, why: impl Into<String>) -> Check {
        Check::new(id, Status::Skipped, why)
    }

    fn with_evidence(mut self, evidence: Vec<String>) -> Check {
        self.evidence = evidence;
        self
    }

    fn with_fix(mut self, command: impl Into<String>, action: Option<Action>) -> Check {
        self.fix = Some(Fix {
            command: command.into(),
            safe: action.is_some(),
            action,
        });
        self
    }
}

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per check, in a stable order.
    pub checks: Vec<Check>,
    /// How many are problems.
    pub problems: usize,
    /// How many are warnings.
    pub warnings: usize,
}

impl Report {
    fn new(checks: Vec<Check>) -> Report {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        Report {
            problems: count(Status::Problem),
            warnings: count(Status::Warning),
            checks,
        }
    }
}

/// The check ids, in the order they run and print.
pub const CHECK_IDS: [&str; 13] = [
    "firewalld",
    "libvirt-zones",
    "stale-zone-copy",
    "bridge-zones",
    "nm-zone-override",
    "forward-drop",
    "ip-forward",
    "br-netfilter",
    "foreign-firewall",
    "strict-forward-ports",
    "hook",
    "mac",
    "daemon",
];

/// Runs every check on the facts (pure).
pub fn diagnose(f: &Facts) -> Report {
    Report::new(vec![
        firewalld(f),
        libvirt_zones(f),
        stale_zone_copy(f),
        bridge_zones(f),
        nm_zone_override(f),
        forward_drop(f),
        ip_forward(f),
        br_netfilter(f),
        foreign_firewall(f),
        strict_forward_ports(f),
        hook(f),
        mac(f),
        daemon(f),
    ])
}

fn running(f: &Facts) -> Option<&crate::firewalld::Running> {
    match &f.firewalld {
        Ok(FirewalldFacts::Running(r)) => Some(r),
        _ => None,
    }
}

fn firewalld(f: &Facts) -> Check {
    const ID: &str = "firewalld";
    let r = match &f.firewalld {
        Err(e @ facts::FirewalldError::NotAuthorized(_)) => {
            return Check::skipped(ID, e.to_string())
        }
        Err(e) => return Check::new(ID, Status::Problem, e.to_string()),
        Ok(FirewalldFacts::NotRunning { no_bus }) => {
            let what = if *no_bus {
                "there is no system bus"
            } else {
                "nobody owns org.fedoraproject.FirewallD1"
            };
            return Check::new(
                ID,
                Status::Warning,
                "firewalld is not running: nothing filters the guests' bridges, and no zone applies",
            )
            .with_evidence(vec![what.into()]);
        }
        Ok(FirewalldFacts::Running(r)) => r,
    };
    let evidence = vec![
        format!("version {}", r.version_text),
        format!("state {}", r.state.as_str()),
        format!("backend {}", r.backend.as_str()),
    ];
    if r.state == State::Failed {
        return Check::new(
            ID,
            Status::Problem,
            "firewalld is in state FAILED: it runs its fallback configuration, without your zones",
        )
        .with_evidence(evidence)
        .with_fix("journalctl -u firewalld; firewall-cmd --check-config", None);
    }
    let routed = f
        .networks
        .iter()
        .any(|n| n.network.forward == ForwardMode::Route);
    if r.capabilities.egress_any_misses_runtime_interfaces && routed {
        return Check::new(
            ID,
            Status::Problem,
            format!(
                "firewalld {} does not apply policies with egress zone ANY to interfaces added at runtime: \
                 routed networks lose their outbound policy (fixed in 2.0.2)",
                r.version_text
            ),
        )
        .with_evidence(evidence)
        .with_fix("upgrade firewalld to 2.0.2 or later", None);
    }
    Check::ok(
        ID,
        format!(
            "firewalld {} is running ({})",
            r.version_text,
            r.backend.as_str()
        ),
    )
    .with_evidence(evidence)
}

fn libvirt_zones(f: &Facts) -> Check {
    const ID: &str = "libvirt-zones";
    let Some(r) = running(f) else {
        return Check::skipped(ID, "firewalld is not running");
    };
    let Some(status) = &f.status else {
        return Check::skipped(ID, "firewalld's zones could not be read");
    };
    let routed_needed = r.capabilities.policies;
    let mut missing = Vec::new();
    let mut evidence = Vec::new();
    for o in status.zones.iter().chain(&status.policies) {
        let is_policy = status.policies.iter().any(|p| p.name == o.name);
        if is_policy && !routed_needed {
            continue;
        }
        if !o.runtime {
            missing.push(o.name.clone());
        }
        if o.matches_shipped == Some(false) {
            for d in &o.differences {
                evidence.push(format!("{}: {d}", o.name));
            }
        }
    }
    if !missing.is_empty() {
        let mut ev = vec![format!("not loaded: {}", missing.join(", "))];
        ev.extend(evidence);
        return Check::new(
            ID,
            Status::Problem,
            format!(
                "firewalld lacks {}: on the nftables backend guests then lose DHCP, DNS and forwarded traffic",
                missing.join(", ")
            ),
        )
        .with_evidence(ev)
        .with_fix("virtzone install", Some(Action::Install));
    }
    // firewalld before 2.3.0 drops an invalid rich rule with a warning only: the catch-all reject
    // can be missing from a zone that loaded.
    let reject_lost = status.zones.iter().any(|z| {
        z.differences
            .iter()
            .any(|d| d.contains("rule") && d.contains("reject"))
    });
    if reject_lost {
        return Check::new(
            ID,
            Status::Problem,
            "a libvirt zone is loaded without its catch-all reject rule: guests reach every host port",
        )
        .with_evidence(evidence)
        .with_fix(
            "firewall-cmd --permanent --zone=libvirt --add-rich-rule='rule priority=\"32767\" reject' && firewall-cmd --reload",
            None,
        );
    }
    if !evidence.is_empty() {
        // Admins open more host services to guests this way: that is the zones' purpose, not a fault.
        return Check::ok(
            ID,
            "libvirt's zones and policies are loaded, with changes to virtzone's definition",
        )
        .with_evidence(evidence);
    }
    Check::ok(ID, "libvirt's zones and policies are loaded as shipped")
}

fn stale_zone_copy(f: &Facts) -> Check {
    const ID: &str = "stale-zone-copy";
    let Some(copies) = &f.zone_copies else {
        return Check::skipped(
            ID,
            "firewalld's configuration directories could not be read",
        );
    };
    let stale: Vec<_> = copies
        .iter()
        .filter(|c| !c.differences.is_empty())
        .collect();
    if stale.is_empty() {
        return Check::ok(
            ID,
            "no /etc/firewalld copy of a libvirt zone or policy differs from the packaged one",
        );
    }
    let mut evidence = Vec::new();
    for c in &stale {
        evidence.push(format!(
            "{} shadows {}",
            c.admin.display(),
            c.package.display()
        ));
        evidence.extend(c.differences.iter().map(|d| format!("  {d}")));
    }
    Check::new(
        ID,
        Status::Warning,
        format!(
            "{} in /etc/firewalld shadow{} a different packaged definition; firewalld uses the /etc copy",
            stale.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
            if stale.len() == 1 { "s" } else { "" }
        ),
    )
    .with_evidence(evidence)
    .with_fix(
        "compare the two files; remove the /etc copy (firewall-cmd --permanent --load-zone-defaults=NAME) if your changes are not needed",
        None,
    )
}

fn bridge_zones(f: &Facts) -> Check {
    const ID: &str = "bridge-zones";
    let Ok(fw_facts) = &f.firewalld else {
        return Check::skipped(ID, "firewalld's facts could not be read");
    };
    if running(f).is_none() {
        return Check::skipped(ID, "firewalld is not running");
    }
    let Some(status) = &f.status else {
        return Check::skipped(ID, "firewalld's bindings could not be read");
    };
    let actual: BTreeMap<&str, Option<&str>> = status
        .bridges
        .iter()
        .map(|b| (b.name.as_str(), b.zone.as_deref()))
        .collect();
    let mut evidence = Vec::new();
    let mut rebind = Vec::new();
    let mut moved = false;
    for n in &f.networks {
        let Some(bridge) = &n.network.bridge else {
            continue;
        };
        let verdict = precheck::decide(
            &Request {
                network: &n.network,
                zone: None,
            },
            fw_facts,
        );
        let Some(want) = verdict.zone else { continue };
        let have = actual.get(bridge.as_str()).copied().flatten();
        match have {
            Some(z) if z == want.as_str() => {}
            Some(z) => {
                moved = true;
                evidence.push(format!(
                    "network {}: bridge {bridge} is in zone {z}, libvirt's rules give it {want}",
                    n.network.name
                ));
            }
            None => {
                evidence.push(format!(
                    "network {}: bridge {bridge} is in no zone (the default zone applies), expected {want}",
                    n.network.name
                ));
                rebind.push((
                    bridge.to_string(),
                    want.to_string(),
                    n.network.name.to_string(),
                ));
            }
        }
    }
    if let Some(recorded) = &f.recorded {
        for (bridge, binding) in &recorded.bindings {
            if f.networks
                .iter()
                .any(|n| n.network.bridge.as_ref() == Some(bridge))
            {
                continue;
            }
            if actual.contains_key(bridge.as_str())
                && actual.get(bridge.as_str()).copied().flatten().is_none()
            {
                evidence.push(format!(
                    "bridge {bridge}: virtzone recorded zone {}, firewalld lost the binding",
                    binding.zone
                ));
                rebind.push((bridge.to_string(), binding.zone.to_string(), String::new()));
            }
        }
    }
    // What decides the traffic of guests on host bridges: named, not judged here (forward-drop and
    // br-netfilter evaluate it).
    let mut info = Vec::new();
    for n in &f.networks {
        match n.network.bridged() {
            Some(Bridged::HostBridge(br)) => info.push(format!(
                "network {}: guests on host bridge {br} (forward mode bridge), {}; virtzone sets \
                 no zone for it",
                n.network.name,
                bridge_words(f, br.as_str())
            )),
            Some(Bridged::Macvtap(devs)) => info.push(format!(
                "network {}: guests on macvtap devices of {}: their traffic never crosses a host \
                 bridge or its netfilter path, no zone applies",
                n.network.name,
                devs.join(", ")
            )),
            None => {}
        }
    }
    for (br, zone) in bound_bridges(f) {
        info.push(format!(
            "bridge {br}: bound by virtzone to zone {zone}, {}",
            bridge_words(f, br)
        ));
    }
    if evidence.is_empty() {
        return Check::ok(
            ID,
            format!(
                "{} running libvirt network{} in {} expected zone{}",
                f.networks.len(),
                if f.networks.len() == 1 {
                    " is"
                } else {
                    "s are"
                },
                if f.networks.len() == 1 {
                    "its"
                } else {
                    "their"
                },
                if f.networks.len() == 1 { "" } else { "s" },
            ),
        )
        .with_evidence(info);
    }
    evidence.extend(info);
    let check = Check::new(
        ID,
        Status::Problem,
        "bridges of running networks are not in the zones their guests need",
    )
    .with_evidence(evidence);
    if !rebind.is_empty() && !moved {
        let command = rebind
            .iter()
            .map(|(b, z, _)| format!("virtzone attach {b} --zone {z}"))
            .collect::<Vec<_>>()
            .join("; ");
        return check.with_fix(command, Some(Action::Bind(rebind)));
    }
    check.with_fix(
        "virtzone attach BRIDGE --zone ZONE --force (moves a bridge someone else put in another zone)",
        None,
    )
}

fn nm_zone_override(f: &Facts) -> Check {
    const ID: &str = "nm-zone-override";
    match f.nm_running {
        None => {
            return Check::skipped(
                ID,
                "the system bus could not be asked whether NetworkManager runs",
            )
        }
        Some(false) => {
            return Check::ok(
                ID,
                "NetworkManager is not on the system bus (nobody owns org.freedesktop.NetworkManager): \
                 no profile sends a bridge's zone",
            )
        }
        Some(true) => {}
    }
    let Some(status) = &f.status else {
        return Check::skipped(ID, "the bridges' zones could not be read");
    };
    let libvirt: Vec<&str> = f
        .networks
        .iter()
        .filter(|n| n.network.forward.has_libvirt_bridge())
        .filter_map(|n| n.network.bridge.as_ref().map(|b| b.as_str()))
        .collect();
    let mut evidence = Vec::new();
    let mut hits = Vec::new();
    for b in &status.bridges {
        let Some(p) = &b.networkmanager else { continue };
        let profile = nm_profile_words(p);
        evidence.push(format!("bridge {}: {profile}", b.name));
        let bound = f
            .recorded
            .as_ref()
            .and_then(|r| r.bindings.iter().find(|(br, _)| br.as_str() == b.name));
        if libvirt.contains(&b.name.as_str()) {
            // libvirt's bridges are "connected (externally)": a profile managing one re-sends its
            // own zone (or the default zone) over libvirt's on every firewalld reload.
            hits.push(format!(
                "libvirt bridge {} is managed by {profile}, which NetworkManager re-sends on every \
                 firewalld reload, over libvirt's zone",
                b.name
            ));
        } else if let Some((_, binding)) = bound {
            let want = binding.zone.as_str();
            if binding.networkmanager.is_none() {
                hits.push(format!(
                    "virtzone bound bridge {} to zone {want} over firewalld's API, but {profile} \
                     manages it: NetworkManager puts it back on the next reload or activation; \
                     virtzone attach {} --zone {want} binds it through the profile",
                    b.name, b.name
                ));
            } else if p.zone != want {
                hits.push(format!(
                    "virtzone keeps bridge {} in zone {want}, but {profile} says otherwise",
                    b.name
                ));
            }
        }
    }
    if hits.is_empty() {
        return Check::ok(
            ID,
            "no NetworkManager profile overrides the zone of a libvirt bridge or of a bridge \
             virtzone binds",
        )
        .with_evidence(evidence);
    }
    Check::new(
        ID,
        Status::Problem,
        "NetworkManager sends a zone of its own for a bridge whose zone libvirt or virtzone sets",
    )
    .with_evidence(hits.into_iter().chain(evidence).collect())
    .with_fix(
        "virtzone attach BRIDGE --zone ZONE (binds through the profile), or nmcli connection modify PROFILE connection.zone ZONE",
        None,
    )
}

/// "NetworkManager profile br0 (uuid …, connection.zone internal)".
fn nm_profile_words(p: &crate::status::NmOwner) -> String {
    let zone = if p.zone.is_empty() {
        "connection.zone empty: the default zone".to_string()
    } else {
        format!("connection.zone {}", p.zone)
    };
    format!(
        "NetworkManager profile {} (uuid {}, {zone})",
        p.profile, p.uuid
    )
}

/// How a bridge stands: its zone, and the NetworkManager profile that sends it when there is one.
fn bridge_words(f: &Facts, bridge: &str) -> String {
    let b = f
        .status
        .as_ref()
        .and_then(|s| s.bridges.iter().find(|b| b.name == bridge));
    let zone = match b.map(|b| b.zone.as_deref()) {
        Some(Some(z)) => format!("in zone {z}"),
        Some(None) => "in no zone (firewalld's default zone applies)".to_string(),
        None => "in a zone firewalld did not tell".to_string(),
    };
    match (b.and_then(|b| b.networkmanager.as_ref()), f.nm_running) {
        (Some(p), _) => format!("{zone}, {}", nm_profile_words(p)),
        (None, Some(true)) => format!("{zone}, no NetworkManager profile sends its zone"),
        _ => zone,
    }
}

/// The bridges virtzone binds by hand (`virtzone attach`), not a running network's, that exist here.
fn bound_bridges(f: &Facts) -> Vec<(&str, &str)> {
    let Some(recorded) = &f.recorded else {
        return Vec::new();
    };
    recorded
        .bindings
        .iter()
        .filter(|(b, _)| {
            f.bridge_ports.contains_key(b.as_str())
                && !f
                    .networks
                    .iter()
                    .any(|n| n.network.bridge.as_ref() == Some(*b))
        })
        .map(|(b, binding)| (b.as_str(), binding.zone.as_str()))
        .collect()
}

/// Follows a guest's new outbound connection from each NAT or routed network through every table:
/// a packet goes out only if every base chain on its path accepts it.
fn forward_drop(f: &Facts) -> Check {
    use crate::verify::check::{ends, probe};
    use crate::verify::eval::{evaluate, Proto, Verdict};
    const ID: &str = "forward-drop";
    let forwarding: Vec<&NetworkFacts> = f
        .networks
        .iter()
        .filter(|n| {
            matches!(
                n.network.forward,
                ForwardMode::Nat | ForwardMode::Route | ForwardMode::Open
            )
        })
        .collect();
    // Bridges bound by hand that the host routes for (it has an address on them) are examined too.
    let bound: Vec<(&str, &str)> = bound_bridges(f)
        .into_iter()
        .filter(|(b, _)| f.bridge_addresses.get(*b).is_some_and(|a| !a.is_empty()))
        .collect();
    if forwarding.is_empty() && bound.is_empty() {
        return Check::ok(
            ID,
            "no NAT, routed or open network runs, and virtzone binds no other bridge the host routes for",
        );
    }
    let rs = match &f.evaluable {
        Ok(rs) => rs,
        Err(e) => return Check::skipped(ID, format!("the ruleset could not be read: {e}")),
    };
    let Some(uplink) = &f.uplink else {
        return Check::skipped(
            ID,
            "the host has no default route, so there is no upstream to forward to",
        );
    };
    let mut evidence = Vec::new();
    let mut unknown = Vec::new();
    let mut docker_user = Vec::new();
    // (who, bridge, whether firewalld has it in the zone it should be in)
    let mut targets: Vec<(String, &str, bool)> = forwarding
        .iter()
        .filter_map(|n| {
            let bridge = n.network.bridge.as_ref()?;
            Some((
                format!("network {}", n.network.name),
                bridge.as_str(),
                in_expected_zone(f, n),
            ))
        })
        .collect();
    for (bridge, zone) in bound {
        let have = f
            .status
            .as_ref()
            .and_then(|s| s.bridges.iter().find(|b| b.name == bridge))
            .and_then(|b| b.zone.as_deref());
        targets.push((
            format!(
                "bridge {bridge} (bound by virtzone, {})",
                bridge_words(f, bridge)
            ),
            bridge,
            have == Some(zone),
        ));
    }
    for (who, bridge, expected) in targets {
        let addrs = f.bridge_addresses.get(bridge).cloned().unwrap_or_default();
        let Some(e) = ends(&addrs).into_iter().next() else {
            continue;
        };
        let packet = probe::forward(bridge, uplink, &e, e.upstream, Proto::Tcp, 443);
        let trace = evaluate(rs, &packet);
        match &trace.verdict {
            Verdict::Accept => {}
            Verdict::Unknown(why) => unknown.push(format!("{packet}: {why}")),
            Verdict::Drop | Verdict::Reject => {
                let by = trace.by.as_ref();
                // firewalld's own verdict on a bridge outside its zone is bridge-zones' finding.
                if by.is_some_and(|r| r.table == "firewalld") && !expected {
                    continue;
                }
                evidence.push(format!("{who}: {packet} is {}", trace.describe()));
                for step in &trace.steps {
                    evidence.push(format!(
                        "  {} {} chain {} (hook {}, priority {}): {}",
                        step.family,
                        step.table,
                        step.chain,
                        step.hook,
                        step.prio,
                        step.verdict.word()
                    ));
                }
                if by.is_some_and(|r| r.family == "ip" && r.table == "filter")
                    && rs
                        .chains
                        .iter()
                        .any(|c| c.family == "ip" && c.table == "filter" && c.name == "DOCKER-USER")
                {
                    docker_user.push((bridge.to_string(), uplink.clone()));
                }
            }
        }
    }
    if !evidence.is_empty() {
        let check = Check::new(
            ID,
            Status::Problem,
            "a table on the forward path drops the guests' outbound traffic",
        )
        .with_evidence(evidence);
        return if docker_user.is_empty() {
            check.with_fix(
                "let the bridges' traffic through in the table that drops it (the evidence names the rule)",
                None,
            )
        } else {
            let command = docker_user
                .iter()
                .map(|(b, up)| {
                    docker_user_rules(b, up)
                        .map(|r| format!("iptables -I DOCKER-USER {}", r.join(" ")))
                        .join("; ")
                })
                .collect::<Vec<_>>()
                .join("; ");
            check.with_fix(command, Some(Action::AcceptInDockerUser(docker_user)))
        };
    }
    if !unknown.is_empty() {
        return Check::skipped(
            ID,
            "a rule on the forward path is outside the evaluator's model, so the verdict is unknown",
        )
        .with_evidence(unknown);
    }
    Check::ok(
        ID,
        "every table on the forward path accepts the guests' outbound traffic",
    )
}

/// The `DOCKER-USER` rules (arguments after the chain) that open what `forward-drop` proved
/// dropped for `bridge`: new connections to `uplink`, and only replies back.
pub fn docker_user_rules(bridge: &str, uplink: &str) -> [Vec<String>; 2] {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    [
        words(&["-i", bridge, "-o", uplink, "-j", "ACCEPT"]),
        words(&[
            "-i",
            uplink,
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]),
    ]
}

/// Whether a network's bridge sits in the zone libvirt's rules give it.
fn in_expected_zone(f: &Facts, n: &NetworkFacts) -> bool {
    let (Ok(fw), Some(status), Some(bridge)) = (&f.firewalld, &f.status, &n.network.bridge) else {
        return false;
    };
    let want = precheck::decide(
        &Request {
            network: &n.network,
            zone: None,
        },
        fw,
    )
    .zone;
    let have = status
        .bridges
        .iter()
        .find(|b| b.name == bridge.as_str())
        .and_then(|b| b.zone.as_deref());
    want.as_ref().map(|z| z.as_str()) == have
}

fn ip_forward(f: &Facts) -> Check {
    const ID: &str = "ip-forward";
    let forwarding: Vec<&NetworkFacts> = f
        .networks
        .iter()
        .filter(|n| matches!(n.network.forward, ForwardMode::Nat | ForwardMode::Route))
        .collect();
    if forwarding.is_empty() {
        return Check::ok(ID, "no NAT or routed network runs");
    }
    let mut evidence = Vec::new();
    match f.sysctl.get("net/ipv4/ip_forward").map(String::as_str) {
        None => return Check::skipped(ID, "net.ipv4.ip_forward could not be read"),
        Some("0") => evidence.push("net.ipv4.ip_forward = 0".to_string()),
        Some(_) => {}
    }
    if forwarding.iter().any(|n| n.ipv6)
        && f.sysctl
            .get("net/ipv6/conf/all/forwarding")
            .map(String::as_str)
            == Some("0")
    {
        evidence.push("net.ipv6.conf.all.forwarding = 0".to_string());
    }
    if evidence.is_empty() {
        return Check::ok(ID, "forwarding is on for the NAT and routed networks");
    }
    evidence.extend(f.sysctl_sources.iter().cloned());
    if f.sysctl_sources.is_empty() {
        evidence.push(
            "no sysctl.d file turns it off: something changed it after libvirt set it at network start".into(),
        );
    }
    Check::new(
        ID,
        Status::Problem,
        format!(
            "forwarding is off while {} run{}: guests reach nothing beyond the host",
            forwarding
                .iter()
                .map(|n| n.network.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if forwarding.len() == 1 { "s" } else { "" }
        ),
    )
    .with_evidence(evidence)
    .with_fix(
        "sysctl -w net.ipv4.ip_forward=1 (and remove what turned it off; libvirt sets it at network start)",
        None,
    )
}

fn br_netfilter(f: &Facts) -> Check {
    const ID: &str = "br-netfilter";
    let keys = [
        "net/bridge/bridge-nf-call-iptables",
        "net/bridge/bridge-nf-call-ip6tables",
    ];
    let on: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| f.sysctl.get(*k).map(String::as_str) == Some("1"))
        .collect();
    if on.is_empty() {
        return Check::ok(
            ID,
            "bridged traffic does not cross the IP firewall (br_netfilter off or not loaded)",
        );
    }
    // Bridges carrying guests directly: libvirt bridge-mode networks and host bridges with vnet ports.
    let mut direct: Vec<String> = f
        .networks
        .iter()
        .filter(|n| matches!(&n.network.forward, ForwardMode::Unmanaged(m) if m == "bridge"))
        .filter_map(|n| n.network.bridge.as_ref().map(|b| b.to_string()))
        .collect();
    for (bridge, ports) in &f.bridge_ports {
        let libvirt_owned = f.networks.iter().any(|n| {
            n.network
                .bridge
                .as_ref()
                .is_some_and(|b| b.as_str() == bridge)
        });
        if !libvirt_owned && ports.iter().any(|p| p.starts_with("vnet")) {
            direct.push(bridge.clone());
        }
    }
    // A bridge bound by hand carries its guests directly too.
    direct.extend(bound_bridges(f).into_iter().map(|(b, _)| b.to_string()));
    direct.sort();
    direct.dedup();
    let evidence: Vec<String> = on
        .iter()
        .map(|k| format!("{} = 1", k.replace('/', ".")))
        .chain(
            direct
                .iter()
                .map(|b| format!("bridge {b} carries guests directly")),
        )
        .collect();
    if direct.is_empty() {
        return Check::new(
            ID,
            Status::Ok,
            "br_netfilter is on, but no bridge carries guests directly",
        )
        .with_evidence(evidence);
    }
    // What the IP tables do to the bridged guests' traffic, evaluated: the bridge's zone decides
    // (its intra-zone forwarding). Only a proven accept everywhere makes br_netfilter harmless.
    let (judged, all_accepted) = bridged_verdicts(f, &direct, &on);
    let mut evidence = evidence;
    evidence.extend(judged);
    if all_accepted {
        return Check::ok(
            ID,
            "br_netfilter is on, and the IP firewall accepts the bridged guests' traffic (the \
             bridges' zones forward within themselves)",
        )
        .with_evidence(evidence);
    }
    let names: Vec<String> = on.iter().map(|k| k.replace('/', ".")).collect();
    let command = format!(
        "{}; and the same in /etc/sysctl.d/90-virtzone-bridge.conf",
        names
            .iter()
            .map(|n| format!("sysctl -w {n}=0"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let users = bridge_filter_users(f);
    if !users.is_empty() {
        // Bridge filtering is host-wide: turning it off would silently disable their rules.
        return Check::new(
            ID,
            Status::Problem,
            "br_netfilter sends bridged guest traffic through firewalld's forward rules, whose zones              drop it; but other rules rely on bridge filtering, so turning it off is not safe and              doctor --fix leaves it on",
        )
        .with_evidence(
            evidence
                .into_iter()
                .chain(users.into_iter().map(|u| format!("relies on bridge filtering: {u}")))
                .collect(),
        )
        .with_fix(
            format!(
                "let the bridged guests' traffic through firewalld instead (e.g. firewall-cmd                  --permanent --zone=libvirt --add-interface=BRIDGE, or a policy for it), or, once                  those rules are not needed: {command}"
            ),
            None,
        );
    }
    Check::new(
        ID,
        Status::Problem,
        "br_netfilter sends bridged guest traffic through firewalld's forward rules, whose zones drop it",
    )
    .with_evidence(evidence)
    .with_fix(command, Some(Action::DisableBridgeNetfilter(names)))
}

/// Guest-to-guest traffic across each of `bridges`, for each family whose br_netfilter key is
/// `on`, through the live ruleset: one evidence line per packet, and whether every one is accepted
/// (false when the ruleset could not be read or a verdict is unknown).
fn bridged_verdicts(f: &Facts, bridges: &[String], on: &[&str]) -> (Vec<String>, bool) {
    use crate::verify::check::{ends, probe};
    use crate::verify::eval::{evaluate, Verdict};
    let rs = match &f.evaluable {
        Ok(rs) => rs,
        Err(e) => return (vec![format!("the ruleset could not be read: {e}")], false),
    };
    let mut lines = Vec::new();
    let mut all = true;
    for br in bridges {
        let addrs = f.bridge_addresses.get(br).cloned().unwrap_or_default();
        for (v6, e) in ends(&addrs).iter().enumerate() {
            let key = if v6 == 1 { "ip6tables" } else { "iptables" };
            if !on.iter().any(|k| k.ends_with(key)) {
                continue;
            }
            let t = evaluate(rs, &probe::bridged(br, e, 80, true));
            all &= t.verdict == Verdict::Accept;
            lines.push(format!(
                "bridge {br} ({}): {} is {}",
                bridge_words(f, br),
                t.packet,
                t.describe()
            ));
        }
    }
    (lines, all)
}

/// The header of the sysctl.d file `doctor --fix` keeps br_netfilter off with.
const SYSCTL_HEADER: &str =
    "# Written by virtzone doctor --fix: bridged guest traffic must not cross the IP firewall,\n\
     # whose zones would drop it (docs/troubleshooting.md, br-netfilter).\n";

/// The sysctl.d file after turning `keys` (dotted names) off: every line of `existing` kept but
/// those setting one of `keys` (in either spelling, `a.b` or `a/b`), then `KEY = 0` for each. A
/// second fix for another key never loses the first one's line.
pub fn merge_sysctl_conf(existing: Option<&str>, keys: &[String]) -> String {
    let normal = |k: &str| k.trim().trim_start_matches('-').replace('/', ".");
    let mut out = String::new();
    match existing {
        Some(text) => {
            for line in text.lines() {
                let key = line.split_once('=').map(|(k, _)| normal(k));
                let ours = !line.trim_start().starts_with(['#', ';'])
                    && key.is_some_and(|k| keys.iter().any(|want| normal(want) == k));
                if !ours {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        None => out.push_str(SYSCTL_HEADER),
    }
    for key in keys {
        out.push_str(&format!("{} = 0\n", normal(key)));
    }
    out
}

/// Rules of other software that rely on bridge filtering (br_netfilter passing bridged packets
/// to the IP hooks), from the live ruleset: physdev matches (libvirt's
/// nwfilter, Docker), nft's bridge-port meta keys, kube-proxy's chains, and drops of traffic
/// inside one bridge (Docker's `icc=false`: `-i docker0 -o docker0 -j DROP`).
pub fn bridge_filter_users(f: &Facts) -> Vec<String> {
    let mut users = Vec::new();
    let mut kube = false;
    let judge = |line: &str| -> Option<&'static str> {
        if line.contains("physdev") {
            return Some("a physdev match (libvirt's nwfilter, Docker or another bridge filter)");
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |flag: &str| {
            words
                .windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1].trim_matches('"'))
        };
        match (arg("-i").or(arg("iifname")), arg("-o").or(arg("oifname"))) {
            (Some(i), Some(o))
                if i == o && (line.contains("-j DROP") || line.contains("-j REJECT")) =>
            {
                Some("drops traffic inside one bridge (Docker's icc=false)")
            }
            _ => None,
        }
    };
    if let Ok(rs) = &f.evaluable {
        for c in &rs.chains {
            if !matches!(c.family.as_str(), "ip" | "ip6" | "inet") {
                continue;
            }
            kube |= c.name.starts_with("KUBE-");
            for r in &c.rules {
                let expr = serde_json::Value::from(r.expr.clone()).to_string();
                let why = match &r.saved {
                    Some(saved) => judge(saved),
                    None if expr.contains("\"name\":\"physdev\"") => judge("physdev"),
                    None => None,
                }
                .or_else(|| {
                    ["ibrname", "obrname", "ibrport", "obrport"]
                        .iter()
                        .any(|k| expr.contains(&format!("\"key\":\"{k}\"")))
                        .then_some("a bridge port match (meta ibrname/obrname)")
                });
                if let Some(why) = why {
                    let rule = r.saved.clone().unwrap_or(expr);
                    users.push(format!(
                        "{} {} chain {}: {rule} ({why})",
                        c.family, c.table, c.name
                    ));
                }
            }
        }
    }
    if kube {
        users.push("kube-proxy's chains (KUBE-*): Kubernetes needs bridge filtering".into());
    }
    users
}

fn foreign_firewall(f: &Facts) -> Check {
    const ID: &str = "foreign-firewall";
    let Some(tables) = &f.foreign_tables else {
        return Check::skipped(
            ID,
            "the ruleset could not be read (nft is missing or refused)",
        );
    };
    let mut evidence: Vec<String> = tables.clone();
    evidence.extend(f.legacy_rules.iter().cloned());
    if evidence.is_empty() {
        return Check::ok(ID, "no other firewall hooks the same hooks");
    }
    Check::new(
        ID,
        Status::Warning,
        "other firewalls hook the same packets as firewalld; their rules can drop guest traffic firewalld accepts",
    )
    .with_evidence(evidence)
}

fn strict_forward_ports(f: &Facts) -> Check {
    const ID: &str = "strict-forward-ports";
    let Some(r) = running(f) else {
        return Check::skipped(ID, "firewalld is not running");
    };
    if !r.capabilities.strict_forward_ports {
        return Check::ok(ID, "this firewalld has no StrictForwardPorts");
    }
    match f.strict_forward_ports {
        None => Check::skipped(ID, "firewalld.conf could not be read"),
        Some(false) => Check::ok(ID, "StrictForwardPorts is off"),
        Some(true) if f.foreign_dnat.is_empty() => {
            Check::ok(ID, "StrictForwardPorts=yes, and no DNAT rule lives outside firewalld")
        }
        Some(true) => Check::new(
            ID,
            Status::Warning,
            "StrictForwardPorts=yes blocks these DNAT rules made outside firewalld (hook-script forwards)",
        )
        .with_evidence(f.foreign_dnat.clone())
        .with_fix(
            "virtzone forward add --network NET --guest ADDR PROTO/PORT for each",
            None,
        ),
    }
}

fn hook(f: &Facts) -> Check {
    let network = network_hook(f);
    if network.status != Status::Ok || f.domain_forwards == 0 {
        return network;
    }
    qemu_hook(f).unwrap_or(network)
}

/// The qemu hook, which forwards to domains by name need; `None` when it is in place.
fn qemu_hook(f: &Facts) -> Option<Check> {
    const ID: &str = "hook";
    let h = &f.qemu_hook;
    let n = f.domain_forwards;
    if !h.exists || !h.executable {
        let why = if h.exists {
            format!("{} mode lacks x", h.path.display())
        } else {
            format!("{} does not exist", h.path.display())
        };
        return Some(
            Check::new(
                ID,
                Status::Problem,
                format!(
                    "{n} forward(s) to domains by name need virtzone's libvirt qemu hook, which libvirt \
                     cannot run: they never come up when their domains start"
                ),
            )
            .with_evidence(vec![why])
            .with_fix(
                format!(
                    "{REINSTALL_HOOKS}, or chmod 0755 {} if it exists; then systemctl restart libvirtd \
                     (or virtqemud)",
                    h.path.display()
                ),
                None,
            ),
        );
    }
    match (h.installed_at, h.libvirtd_started) {
        (Some(installed), Some(started)) if started + Duration::from_secs(1) < installed => Some(
            Check::new(
                ID,
                Status::Warning,
                "libvirtd started before the qemu hook was installed; it runs qemu hooks only if one \
                 existed at its start",
            )
            .with_evidence(vec![format!(
                "qemu hook changed {} s after libvirtd started",
                installed.duration_since(started).map_or(0, |d| d.as_secs())
            )])
            .with_fix("systemctl restart libvirtd (or virtqemud)", None),
        ),
        _ => None,
    }
}

/// How a missing hook comes back: the package puts both hooks in /etc (and keeps an admin's
/// edit), as does the source tree's `make install-hook`.
const REINSTALL_HOOKS: &str =
    "reinstall virtzone's package (apt install --reinstall virtzone, or dnf \
     reinstall virtzone), or run make install-hook in its source tree";

fn network_hook(f: &Facts) -> Check {
    const ID: &str = "hook";
    let h = &f.hook;
    if !h.exists {
        return Check::new(
            ID,
            Status::Warning,
            "virtzone's libvirt network hook is not installed: networks start unchecked and bridges are not recorded",
        )
        .with_evidence(vec![format!("{} does not exist", h.path.display())])
        .with_fix(
            format!("{REINSTALL_HOOKS}; then systemctl restart libvirtd (or virtnetworkd)"),
            None,
        );
    }
    if !h.executable {
        return Check::new(
            ID,
            Status::Problem,
            "virtzone's libvirt network hook is not executable, so libvirt skips it",
        )
        .with_evidence(vec![format!("{} mode lacks x", h.path.display())])
        .with_fix(format!("chmod 0755 {}", h.path.display()), None);
    }
    match (h.installed_at, h.libvirtd_started) {
        // libvirtd's start is known to a second at best (the boot time is whole seconds).
        (Some(installed), Some(started)) if started + Duration::from_secs(1) < installed => Check::new(
            ID,
            Status::Warning,
            "libvirtd started before the hook was installed; it runs network hooks only if one existed at its start",
        )
        .with_evidence(vec![format!(
            "hook changed {} s after libvirtd started",
            installed.duration_since(started).map_or(0, |d| d.as_secs())
        )])
        .with_fix("systemctl restart libvirtd (or virtnetworkd)", None),
        (_, None) => Check::ok(ID, "the hook is installed (libvirtd is not running)"),
        _ => Check::ok(ID, "the hook is installed and libvirtd started after it"),
    }
}

/// The SELinux type of a label `user:role:type:level`.
fn label_type(label: &str) -> Option<&str> {
    label.split(':').nth(2)
}

/// The type Fedora's and RHEL's policy gives libvirt's hook scripts, the one its rules let the
/// virt daemons execute.
const HOOK_TYPE: &str = "virt_hook_t";

/// Directories whose programs Debian's and Ubuntu's libvirtd AppArmor profile lets hooks execute
/// (`/{usr/,}{s,}bin/* PUx`); a hook running anything elsewhere is denied under `enforce`.
const APPARMOR_EXEC_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// Mandatory access control against libvirt running virtzone's hooks: with SELinux enforcing,
/// libvirt's daemons run hooks only when `virt_hooks_unconfined` is on and the hook file has its
/// label; under AppArmor, libvirtd's profile decides which programs a hook may execute.
fn mac(f: &Facts) -> Check {
    const ID: &str = "mac";
    let m = &f.mac;
    let mut evidence = Vec::new();
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut warnings: Vec<(String, String)> = Vec::new();
    match m.selinux_enforce.as_deref() {
        None => {}
        Some(mode) => {
            let enforcing = mode == "1";
            evidence.push(format!(
                "SELinux is {} (/sys/fs/selinux/enforce = {mode})",
                if enforcing { "enforcing" } else { "permissive" }
            ));
            let boolean_on = m
                .virt_hooks_unconfined
                .as_deref()
                .and_then(|v| v.split_whitespace().next())
                == Some("1");
            evidence.push(match &m.virt_hooks_unconfined {
                Some(v) => format!("virt_hooks_unconfined = {v} (current pending)"),
                None => "the policy has no virt_hooks_unconfined boolean".into(),
            });
            for (path, label) in &m.hook_labels {
                evidence.push(format!(
                    "{} is labelled {}",
                    path.display(),
                    label.as_deref().unwrap_or("(nothing)")
                ));
            }
            if enforcing && !boolean_on {
                problems.push((
                    "SELinux is enforcing and virt_hooks_unconfined is off: libvirt may not run                      virtzone's hooks (they exit 126 and networks do not start)"
                        .into(),
                    "setsebool -P virt_hooks_unconfined on".into(),
                ));
            }
            let mislabelled: Vec<String> = m
                .hook_labels
                .iter()
                .filter(|(_, l)| l.as_deref().and_then(label_type) != Some(HOOK_TYPE))
                .map(|(p, _)| p.display().to_string())
                .collect();
            if enforcing && !mislabelled.is_empty() {
                problems.push((
                    format!(
                        "the hook file {} is not labelled {HOOK_TYPE}, so libvirt's daemons may not                          execute it",
                        mislabelled.join(", ")
                    ),
                    format!("restorecon -v {}", mislabelled.join(" ")),
                ));
            }
            if enforcing
                && boolean_on
                && f.domain_forwards > 0
                && m.hook_labels
                    .iter()
                    .any(|(p, _)| p.starts_with("/etc/libvirt/hooks/qemu.d"))
            {
                warnings.push((
                    "with SELinux enforcing, the modular virtqemud may not execute hooks even with                      virt_hooks_unconfined on (the boolean's rules name virtnetworkd): forwards to                      domains by name need the monolithic libvirtd or a local policy module"
                        .into(),
                    "see docs/packaging.md, mandatory access control".into(),
                ));
            }
        }
    }
    if let Some(lines) = &m.apparmor_libvirtd {
        let enforced = lines.iter().any(|l| l.ends_with("(enforce)"));
        evidence.extend(lines.iter().map(|l| format!("AppArmor profile {l}")));
        if lines.is_empty() {
            evidence.push("AppArmor has no libvirtd profile loaded".into());
        }
        if let Some(bin) = &m.hook_binary {
            evidence.push(format!("the network hook executes {}", bin.display()));
            let dir_ok = bin.parent().is_some_and(|d| {
                APPARMOR_EXEC_DIRS
                    .iter()
                    .any(|a| d == std::path::Path::new(a))
            });
            if enforced && !dir_ok {
                warnings.push((
                    format!(
                        "libvirtd's AppArmor profile is enforced, and it lets hooks execute programs                          in {} only: the hook's {} is likely denied",
                        APPARMOR_EXEC_DIRS.join(", "),
                        bin.display()
                    ),
                    "install virtzone as /usr/bin/virtzone (the package does), or allow the                      program in /etc/apparmor.d/local/usr.sbin.libvirtd"
                        .into(),
                ));
            }
        }
    }
    if m.selinux_enforce.is_none() && m.apparmor_libvirtd.is_none() {
        return Check::ok(
            ID,
            "neither SELinux nor AppArmor is active: nothing confines libvirt's hooks",
        );
    }
    let (status, found) = if !problems.is_empty() {
        (Status::Problem, problems)
    } else if !warnings.is_empty() {
        (Status::Warning, warnings)
    } else {
        return Check::ok(
            ID,
            "mandatory access control lets libvirt run virtzone's hooks",
        )
        .with_evidence(evidence);
    };
    let summary = found
        .iter()
        .map(|(s, _)| s.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let fix = found
        .iter()
        .map(|(_, f)| f.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Check::new(ID, status, summary)
        .with_evidence(evidence)
        .with_fix(fix, None)
}

fn daemon(f: &Facts) -> Check {
    const ID: &str = "daemon";
    // Bindings the hook made are libvirt's networks' bridges, which libvirt itself re-binds after a
    // firewalld reload; only bindings made by hand need the daemon.
    let bindings = f.recorded.as_ref().map_or(0, |r| {
        r.bindings
            .values()
            .filter(|b| b.network.is_none() && !b.permanent)
            .count()
    });
    if bindings == 0 {
        return Check::ok(
            ID,
            "virtzone records no runtime binding made by hand, so no daemon is needed",
        );
    }
    match (f.daemon_running, f.daemon_enabled) {
        (Some(true), _) => Check::ok(ID, "virtzone serve runs and keeps the bindings across reloads"),
        (None, _) => Check::skipped(ID, "the bus could not be asked who owns org.virtzone.VirtZone1"),
        (Some(false), true) => Check::new(
            ID,
            Status::Warning,
            "virtzone.service is enabled but not running: bindings are not restored after a firewalld reload",
        )
        .with_evidence(vec!["nobody owns org.virtzone.VirtZone1".into()])
        .with_fix("systemctl start virtzone", None),
        (Some(false), false) => Check::new(
            ID,
            Status::Warning,
            format!(
                "{bindings} runtime binding{} recorded, but virtzone serve is not running: a firewalld reload drops them for good",
                if bindings == 1 { " is" } else { "s are" }
            ),
        )
        .with_evidence(vec!["nobody owns org.virtzone.VirtZone1".into()])
        .with_fix("systemctl enable --now virtzone", None),
    }
}

#[cfg(test)]
mod tests;
