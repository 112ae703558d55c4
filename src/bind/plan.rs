//! Whether and how to bind or unbind a bridge, decided from facts alone: the bind, unbind and reconcile
//! planners.
//!
//! The admin's choice wins: a bridge that sits in a zone virtzone did not put it in is left alone
//! unless the caller forces the change.
//!
//! Two paths hold a binding. A bridge NetworkManager manages with an active profile is bound through
//! that profile's `connection.zone` (NetworkManager re-sends it to firewalld on every activation,
//! reload and restart, undoing any other binding): an empty `connection.zone` is NetworkManager's
//! default placement, not an admin's choice, so it may be set without `--force`; a zone someone set
//! there is. Every other bridge (no NetworkManager, unmanaged, or "connected (externally)" like
//! libvirt's `virbr*`) is bound over firewalld's API.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::change::snapshot::Snapshot;
use crate::change::{Plan, Reason, Refusal, Step, Warning, WarningReason};
use crate::names::{BridgeName, ZoneName};

use crate::networkmanager::Profile;

use super::record::{Binding, Bindings, NmBinding};

/// What the binding of a bridge looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The zone firewalld has the bridge in (runtime), `None` when unbound.
    pub actual: Option<&'a str>,
    /// The zone virtzone recorded binding the bridge to, `None` when virtzone did not bind it.
    pub recorded: Option<&'a str>,
    /// Whether the requested zone exists in firewalld's runtime configuration.
    pub zone_exists: bool,
}

/// What an attach does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Bind the bridge (it is unbound, or in a zone virtzone set, or the move is forced).
    Bind {
        /// The zone it leaves, if any.
        from: Option<String>,
    },
    /// It is in the requested zone already: only record it.
    AlreadyBound,
}

/// What a detach does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detach {
    /// Unbind it from `zone`.
    Unbind {
        /// The zone it is in.
        zone: String,
    },
    /// firewalld has no binding: only forget the record, if any.
    NotBound,
    /// Someone else moved it since virtzone bound it: leave firewalld alone, forget the record.
    MovedAway {
        /// Where it is now.
        zone: String,
    },
}

/// Decides the runtime side of an attach of `bridge` to `zone`. `Err` is the refusal, said in full.
pub fn attach(
    bridge: &BridgeName,
    zone: &ZoneName,
    facts: &Facts<'_>,
    force: bool,
) -> Result<Attach, Refusal> {
    if !facts.zone_exists {
        let hint = if zone.as_str().starts_with(crate::LIBVIRT_ZONE) {
            "run `virtzone install` to add libvirt's zones"
        } else {
            "create it first (firewall-cmd --permanent --new-zone) or name an existing zone"
        };
        return Err(Refusal::new(
            Reason::ZoneMissing,
            format!("zone {zone} does not exist in firewalld; {hint}"),
        ));
    }
    match facts.actual {
        Some(actual) if actual == zone.as_str() => Ok(Attach::AlreadyBound),
        None => Ok(Attach::Bind { from: None }),
        Some(actual) if force || facts.recorded == Some(actual) => Ok(Attach::Bind { from: Some(actual.to_string()) }),
        Some(actual) => Err(Refusal::new(Reason::AdminBinding, format!(
            "bridge {bridge} is in zone {actual}, which virtzone did not set, so the admin's choice stands; \
             pass --force to move it to zone {zone}"
        ))),
    }
}

/// Decides the runtime side of a detach of `bridge`. `Err` is the refusal, said in full.
pub fn detach(bridge: &BridgeName, facts: &Facts<'_>, force: bool) -> Result<Detach, Refusal> {
    match (facts.actual, facts.recorded) {
        (None, _) => Ok(Detach::NotBound),
        (Some(actual), Some(recorded)) if actual == recorded => Ok(Detach::Unbind { zone: actual.to_string() }),
        (Some(actual), _) if force => Ok(Detach::Unbind { zone: actual.to_string() }),
        (Some(actual), Some(_)) => Ok(Detach::MovedAway { zone: actual.to_string() }),
        (Some(actual), None) => Err(Refusal::new(Reason::AdminBinding, format!(
            "bridge {bridge} is in zone {actual}, which virtzone did not set; pass --force to unbind it anyway"
        ))),
    }
}

/// A zone name firewalld reported, as a validated name for a step.
fn observed(zone: &str) -> Result<ZoneName, Refusal> {
    ZoneName::new(zone).map_err(|e| {
        Refusal::new(
            Reason::UnusableName,
            format!("firewalld reports a zone virtzone cannot handle: {e}"),
        )
    })
}

fn not_running(what: &str) -> Refusal {
    Refusal::new(
        Reason::FirewalldNotRunning,
        format!("firewalld is not running, so there is nothing to {what}; start firewalld first"),
    )
}

/// An attach request.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    /// The bridge.
    pub bridge: &'a BridgeName,
    /// The zone.
    pub zone: &'a ZoneName,
    /// Also bind in the permanent configuration.
    pub permanent: bool,
    /// Move the bridge even out of a zone virtzone did not set.
    pub force: bool,
}

/// A planned attach.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachPlan {
    /// What to send to firewalld: the permanent side first, so a refusal there leaves the runtime
    /// untouched.
    pub plan: Plan,
    /// What to tell the user once the plan is applied.
    pub message: String,
    /// Whether the record says the binding is permanent too.
    pub permanent: bool,
    /// The NetworkManager profile that holds the binding (`None`: firewalld's path).
    pub networkmanager: Option<NmBinding>,
}

/// The refusal for a zone firewalld's permanent configuration lacks.
fn not_permanent(zone: &ZoneName) -> Refusal {
    Refusal::new(
        Reason::ZoneMissing,
        format!(
            "zone {zone} is not in firewalld's permanent configuration, so it cannot hold a permanent \
             binding; add it permanently first (virtzone install, or firewall-cmd --permanent --new-zone)"
        ),
    )
}

/// How a `connection.zone` reads in messages.
fn zone_text(zone: &str) -> &str {
    if zone.is_empty() {
        "empty (the default zone)"
    } else {
        zone
    }
}

/// Plans an attach of a bridge NetworkManager manages with the active `profile`: one
/// [`Step::SetConnectionZone`] (to disk with `--permanent`, else in memory); NetworkManager applies it
/// to firewalld itself. Volatile profiles, and in-memory-only ones with `--permanent`, are refused
/// rather than changed in a way that vanishes or that writes them to disk.
pub fn plan_attach_nm(
    req: &AttachRequest<'_>,
    snap: &Snapshot,
    recorded: Option<&Binding>,
    profile: &Profile,
) -> Result<AttachPlan, Refusal> {
    let Some(running) = snap.running() else {
        return Err(not_running("bind"));
    };
    let (bridge, zone) = (req.bridge, req.zone);
    let facts = Facts {
        actual: None,
        recorded: None,
        zone_exists: running.zones.contains(zone.as_str()),
    };
    attach(bridge, zone, &facts, req.force)?;
    if req.permanent && !snap.permanent_zones.contains(zone.as_str()) {
        return Err(not_permanent(zone));
    }
    let id = &profile.id;
    if profile.is_volatile() {
        return Err(Refusal::new(
            Reason::NmProfileUnusable,
            format!(
                "bridge {bridge} is managed by NetworkManager profile {id}, which is volatile (NetworkManager deletes it \
                 when it goes down), so a zone set there would vanish with it; bring the bridge up with a saved \
                 profile (nmcli connection add …) and attach again"
            ),
        ));
    }
    if req.permanent && profile.in_memory_only() {
        return Err(Refusal::new(
            Reason::NmProfileUnusable,
            format!(
                "bridge {bridge} is managed by NetworkManager profile {id}, which exists only in memory, and --permanent \
                 would write it to disk; drop --permanent, or save the profile first"
            ),
        ));
    }
    // virtzone's own earlier binding through this very profile.
    let ours = recorded
        .and_then(|b| b.networkmanager.as_ref().map(|n| (b, n)))
        .filter(|(_, n)| n.uuid == profile.uuid);
    let set_by_us = ours.is_some_and(|(b, _)| b.zone.as_str() == profile.zone);
    if profile.shared && profile.zone.is_empty() && !req.force {
        return Err(Refusal::new(
            Reason::AdminBinding,
            format!(
                "bridge {bridge} is shared by NetworkManager profile {id} (method shared), so NetworkManager keeps it \
                 in its own zone nm-shared; pass --force to set its connection.zone to {zone} anyway"
            ),
        ));
    }
    let current = profile.zone.as_str();
    if !(current.is_empty() || current == zone.as_str() || set_by_us || req.force) {
        return Err(Refusal::new(
            Reason::AdminBinding,
            format!(
                "bridge {bridge} is in zone {current} because NetworkManager profile {id} sets connection.zone={current}, \
                 which virtzone did not set, so the admin's choice stands; pass --force to set it to {zone}"
            ),
        ));
    }
    let mut plan = Plan::default();
    // An unsaved change (an earlier runtime attach) is written out too when --permanent asks.
    let unsaved = profile.flags & crate::networkmanager::FLAG_UNSAVED != 0;
    if current != zone.as_str() || (req.permanent && unsaved) {
        plan.steps.push(Step::SetConnectionZone {
            uuid: profile.uuid.clone(),
            profile: id.clone(),
            zone: zone.to_string(),
            previous: current.to_string(),
            to_disk: req.permanent,
        });
    }
    let place = if req.permanent {
        ""
    } else {
        ", in memory until NetworkManager reloads its profiles"
    };
    let message = if current == zone.as_str() && plan.is_empty() {
        format!("bridge {bridge} is already in zone {zone} (NetworkManager profile {id})")
    } else {
        format!(
            "bound bridge {bridge} to zone {zone} through NetworkManager profile {id} (connection.zone was {}{place})",
            zone_text(current)
        )
    };
    Ok(AttachPlan {
        plan,
        message,
        permanent: req.permanent || ours.is_some_and(|(b, _)| b.permanent && &b.zone == zone),
        networkmanager: Some(NmBinding {
            uuid: profile.uuid.clone(),
            profile: id.clone(),
            // What detach restores: the zone before virtzone first set it.
            previous: match ours {
                Some((_, n)) if set_by_us => n.previous.clone(),
                _ => current.to_string(),
            },
        }),
    })
}

/// Plans the detach of a binding virtzone holds through NetworkManager profile `nm`: restore the
/// `connection.zone` it found (in the place it wrote: disk when the binding is permanent), unless
/// someone changed it since (then leave it, unless `force`). `profile` is the profile now (`None`:
/// gone, or NetworkManager not running).
pub fn plan_detach_nm(
    bridge: &BridgeName,
    force: bool,
    recorded: &Binding,
    nm: &NmBinding,
    profile: Option<&Profile>,
) -> DetachPlan {
    let id = &nm.profile;
    let Some(profile) = profile else {
        return DetachPlan {
            plan: Plan::default(),
            message: format!(
                "NetworkManager profile {id} of bridge {bridge} is gone (or NetworkManager is not running); forgot \
                 virtzone's binding"
            ),
        };
    };
    if profile.zone != recorded.zone.as_str() && !force {
        return DetachPlan {
            plan: Plan::default(),
            message: format!(
                "connection.zone of NetworkManager profile {id} is {} now, set by someone else; left it there and \
                 forgot virtzone's binding of bridge {bridge}",
                zone_text(&profile.zone)
            ),
        };
    }
    let mut plan = Plan::default();
    if profile.zone != nm.previous {
        plan.steps.push(Step::SetConnectionZone {
            uuid: profile.uuid.clone(),
            profile: id.clone(),
            zone: nm.previous.clone(),
            previous: profile.zone.clone(),
            to_disk: recorded.permanent,
        });
    }
    DetachPlan {
        plan,
        message: format!(
            "unbound bridge {bridge}: connection.zone of NetworkManager profile {id} is {} again",
            zone_text(&nm.previous)
        ),
    }
}

/// Plans an attach from a snapshot (gathered with the bridge as
/// [`Scope::permanent_interface`](crate::change::snapshot::Scope) when `permanent`) and virtzone's record.
pub fn plan_attach(
    req: &AttachRequest<'_>,
    snap: &Snapshot,
    recorded: Option<&Binding>,
) -> Result<AttachPlan, Refusal> {
    let Some(running) = snap.running() else {
        return Err(not_running("bind"));
    };
    let (bridge, zone) = (req.bridge, req.zone);
    let actual = snap.zone_of_interface(bridge.as_str());
    let facts = Facts {
        actual,
        recorded: recorded.map(|b| b.zone.as_str()),
        zone_exists: running.zones.contains(zone.as_str()),
    };
    let decision = attach(bridge, zone, &facts, req.force)?;
    let mut plan = Plan::default();
    if req.permanent {
        if !snap.permanent_zones.contains(zone.as_str()) {
            return Err(not_permanent(zone));
        }
        match snap.permanent_zone_of_interface.as_deref() {
            Some(z) if z == zone.as_str() => {}
            Some(other)
                if !req.force
                    && !recorded.is_some_and(|b| b.permanent && b.zone.as_str() == other) =>
            {
                return Err(Refusal::new(
                    Reason::AdminPermanentBinding,
                    format!(
                        "bridge {bridge} is bound to zone {other} in the permanent configuration, which virtzone did \
                         not set; pass --force to move it to zone {zone}"
                    ),
                ));
            }
            Some(other) => {
                plan.steps.push(Step::RemovePermanentInterface {
                    zone: observed(other)?,
                    interface: bridge.clone(),
                });
                plan.steps.push(Step::AddPermanentInterface {
                    zone: zone.clone(),
                    interface: bridge.clone(),
                });
            }
            None => plan.steps.push(Step::AddPermanentInterface {
                zone: zone.clone(),
                interface: bridge.clone(),
            }),
        }
    }
    if let Attach::Bind { from } = &decision {
        plan.steps.push(Step::ChangeZoneOfInterface {
            zone: zone.clone(),
            interface: bridge.clone(),
            previous: from.as_deref().map(observed).transpose()?,
        });
    }
    let message = match &decision {
        Attach::AlreadyBound => format!("bridge {bridge} is already in zone {zone}"),
        Attach::Bind { from: None } => format!("bound bridge {bridge} to zone {zone}"),
        Attach::Bind { from: Some(from) } => {
            format!("moved bridge {bridge} from zone {from} to zone {zone}")
        }
    };
    Ok(AttachPlan {
        plan,
        message,
        permanent: req.permanent || recorded.is_some_and(|b| b.permanent && &b.zone == zone),
        networkmanager: None,
    })
}

/// A planned detach.
#[derive(Debug, Clone, PartialEq)]
pub struct DetachPlan {
    /// What to send to firewalld.
    pub plan: Plan,
    /// What to tell the user once the plan is applied.
    pub message: String,
}

/// Plans a detach of `bridge` (also from the permanent configuration when `permanent`).
pub fn plan_detach(
    bridge: &BridgeName,
    permanent: bool,
    force: bool,
    snap: &Snapshot,
    recorded: Option<&Binding>,
) -> Result<DetachPlan, Refusal> {
    if snap.running().is_none() {
        return Err(not_running("unbind"));
    }
    let facts = Facts {
        actual: snap.zone_of_interface(bridge.as_str()),
        recorded: recorded.map(|b| b.zone.as_str()),
        zone_exists: true,
    };
    let decision = detach(bridge, &facts, force)?;
    let mut plan = Plan::default();
    let mut notes = Vec::new();
    if permanent {
        if let Some(z) = snap.permanent_zone_of_interface.as_deref() {
            let ours = recorded.is_some_and(|b| b.permanent && b.zone.as_str() == z);
            if !(ours || force) {
                return Err(Refusal::new(
                    Reason::AdminPermanentBinding,
                    format!(
                        "bridge {bridge} is bound to zone {z} in the permanent configuration, which virtzone did not \
                         set; pass --force to remove that binding anyway"
                    ),
                ));
            }
            plan.steps.push(Step::RemovePermanentInterface {
                zone: observed(z)?,
                interface: bridge.clone(),
            });
            notes.push(format!(
                "removed it from zone {z} in the permanent configuration"
            ));
        }
    } else if recorded.is_some_and(|b| b.permanent) {
        let note = "it stays bound in the permanent configuration and returns on the next reload; use --permanent to \
                    remove that too";
        plan.warnings.push(Warning {
            reason: WarningReason::PermanentBindingStays,
            message: note.to_string(),
        });
        notes.push(note.to_string());
    }
    let mut message = match &decision {
        Detach::Unbind { zone } => {
            plan.steps.push(Step::RemoveInterface {
                zone: observed(zone.as_str())?,
                interface: bridge.clone(),
            });
            format!("unbound bridge {bridge} from zone {zone}")
        }
        Detach::NotBound if recorded.is_some() => {
            format!("bridge {bridge} is not bound to any zone now; forgot virtzone's binding")
        }
        Detach::NotBound => format!("bridge {bridge} is not bound to any zone; nothing to do"),
        Detach::MovedAway { zone } => format!(
            "bridge {bridge} was moved to zone {zone} by someone else; left it there and forgot virtzone's binding"
        ),
    };
    if !notes.is_empty() {
        message = format!("{message}; {}", notes.join("; "));
    }
    Ok(DetachPlan { plan, message })
}

/// A planned reconcile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcilePlan {
    /// Bindings firewalld lost (a reload or restart): independent
    /// [`Step::ChangeZoneOfInterface`]s, for [`Executor::apply_each`](crate::change::Executor::apply_each).
    pub plan: Plan,
    /// Bridges someone moved to another zone: reported (as warnings too), not fought over
    /// (bridge, wanted, actual).
    pub drift: Vec<(BridgeName, ZoneName, String)>,
    /// Bindings already in place.
    pub in_place: usize,
}

/// How a binding compares with firewalld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    /// As asked.
    Bound,
    /// Not bound at all.
    Missing,
    /// Bound to another zone.
    Moved,
    /// firewalld is not running.
    Unknown,
}

/// How a recorded binding to `zone` compares with the zone firewalld has its bridge in now
/// (`actual`; `None`: unbound). Pure; `list` and the reconcile both decide by it.
pub fn binding_state(zone: &ZoneName, actual: Option<&str>) -> RowState {
    match actual {
        None => RowState::Missing,
        Some(now) if now == zone.as_str() => RowState::Bound,
        Some(_) => RowState::Moved,
    }
}

/// Plans a reconcile: the desired bindings against firewalld's runtime interface → zone map
/// ([`Snapshot::interfaces`]). Bindings held by a NetworkManager profile are left to NetworkManager,
/// which re-sends the profile's zone after every firewalld reload and restart itself: sending it too
/// would race it (see [`plan_nm_reconcile`]).
pub fn plan_reconcile(desired: &Bindings, actual: &BTreeMap<String, String>) -> ReconcilePlan {
    let mut out = ReconcilePlan::default();
    for (bridge, binding) in &desired.bindings {
        if binding.networkmanager.is_some() {
            continue;
        }
        let now = actual.get(bridge.as_str()).map(String::as_str);
        match binding_state(&binding.zone, now) {
            RowState::Bound => out.in_place += 1,
            RowState::Moved => {
                let zone = now.unwrap_or_default();
                out.plan.warnings.push(Warning {
                    reason: WarningReason::MovedByOthers,
                    message: format!(
                        "bridge {bridge} is in zone {zone}, not {}: someone moved it; leaving it there",
                        binding.zone
                    ),
                });
                out.drift
                    .push((bridge.clone(), binding.zone.clone(), zone.to_string()));
            }
            RowState::Missing | RowState::Unknown => {
                out.plan.steps.push(Step::ChangeZoneOfInterface {
                    zone: binding.zone.clone(),
                    interface: bridge.clone(),
                    previous: None,
                })
            }
        }
    }
    out
}

/// Plans the NetworkManager side of a reconcile: `profiles` are the recorded profiles now, by uuid
/// (`None`: gone, or NetworkManager not running). An in-memory `connection.zone` NetworkManager lost
/// (a reboot, or its profiles reloaded from disk) is set again; a zone someone else set is reported
/// and left alone, like firewalld's drift.
pub fn plan_nm_reconcile(
    desired: &Bindings,
    profiles: &BTreeMap<String, Option<Profile>>,
) -> ReconcilePlan {
    let mut out = ReconcilePlan::default();
    for (bridge, binding) in &desired.bindings {
        let Some(nm) = &binding.networkmanager else {
            continue;
        };
        let Some(Some(profile)) = profiles.get(&nm.uuid) else {
            continue;
        };
        let (wanted, now) = (binding.zone.as_str(), profile.zone.as_str());
        if now == wanted {
            out.in_place += 1;
        } else if now == nm.previous && !binding.permanent {
            out.plan.steps.push(Step::SetConnectionZone {
                uuid: nm.uuid.clone(),
                profile: nm.profile.clone(),
                zone: wanted.to_string(),
                previous: now.to_string(),
                to_disk: false,
            });
        } else {
            out.plan.warnings.push(Warning {
                reason: WarningReason::MovedByOthers,
                message: format!(
                    "bridge {bridge}: connection.zone of NetworkManager profile {} is {}, not {wanted}: someone changed \
                     it; leaving it there",
                    nm.profile,
                    zone_text(now)
                ),
            });
            out.drift
                .push((bridge.clone(), binding.zone.clone(), now.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(actual: Option<&'a str>, recorded: Option<&'a str>) -> Facts<'a> {
        Facts {
            actual,
            recorded,
            zone_exists: true,
        }
    }

    /// (actual zone, recorded zone, --force) → decision, or a part of the refusal.
    type Row = (
        Option<&'static str>,
        Option<&'static str>,
        bool,
        Result<Attach, &'static str>,
    );

    #[test]
    fn attach_table() {
        let br = BridgeName::new("virbr0").unwrap();
        let z = ZoneName::libvirt();
        #[rustfmt::skip]
        let table: [Row; 8] = [
            (None, None, false, Ok(Attach::Bind { from: None })),
            (None, Some("libvirt"), false, Ok(Attach::Bind { from: None })),
            (Some("libvirt"), None, false, Ok(Attach::AlreadyBound)),
            (Some("libvirt"), Some("libvirt"), false, Ok(Attach::AlreadyBound)),
            (Some("trusted"), Some("trusted"), false, Ok(Attach::Bind { from: Some("trusted".into()) })),
            (Some("public"), None, false, Err("bridge virbr0 is in zone public, which virtzone did not set, so the admin's choice stands; pass --force to move it to zone libvirt")),
            (Some("public"), Some("trusted"), false, Err("which virtzone did not set")),
            (Some("public"), None, true, Ok(Attach::Bind { from: Some("public".into()) })),
        ];
        for (actual, recorded, force, want) in table {
            let got = attach(&br, &z, &facts(actual, recorded), force);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{actual:?} {recorded:?} {force}"),
                (Err(g), Err(w)) => assert!(g.message.contains(w), "{g}"),
                (g, w) => panic!("{actual:?} {recorded:?} {force}: got {g:?}, want {w:?}"),
            }
        }
        let missing = Facts {
            actual: None,
            recorded: None,
            zone_exists: false,
        };
        assert!(attach(&br, &z, &missing, true)
            .unwrap_err()
            .message
            .contains("virtzone install"));
        let other = ZoneName::new("dmz2").unwrap();
        assert!(attach(&br, &other, &missing, true)
            .unwrap_err()
            .message
            .contains("zone dmz2 does not exist"));
    }

    #[test]
    fn detach_table() {
        let br = BridgeName::new("virbr0").unwrap();
        assert_eq!(detach(&br, &facts(None, None), false), Ok(Detach::NotBound));
        assert_eq!(
            detach(&br, &facts(None, Some("libvirt")), false),
            Ok(Detach::NotBound)
        );
        assert_eq!(
            detach(&br, &facts(Some("libvirt"), Some("libvirt")), false),
            Ok(Detach::Unbind {
                zone: "libvirt".into()
            })
        );
        assert_eq!(
            detach(&br, &facts(Some("public"), Some("libvirt")), false),
            Ok(Detach::MovedAway {
                zone: "public".into()
            })
        );
        assert_eq!(
            detach(&br, &facts(Some("public"), Some("libvirt")), true),
            Ok(Detach::Unbind {
                zone: "public".into()
            })
        );
        assert!(detach(&br, &facts(Some("public"), None), false)
            .unwrap_err()
            .message
            .contains("--force"));
        assert_eq!(
            detach(&br, &facts(Some("public"), None), true),
            Ok(Detach::Unbind {
                zone: "public".into()
            })
        );
    }

    use crate::change::snapshot::fake;

    fn rec(zone: &str, permanent: bool) -> Binding {
        Binding {
            zone: ZoneName::new(zone).unwrap(),
            permanent,
            network: None,
            networkmanager: None,
            source: None,
        }
    }

    /// The steps of a plan, as text.
    fn steps(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn attach_plans() {
        let br = BridgeName::new("virbr0").unwrap();
        let z = ZoneName::libvirt();
        let req = |permanent, force| AttachRequest {
            bridge: &br,
            zone: &z,
            permanent,
            force,
        };
        let zones = ["libvirt", "public", "trusted"];
        // Unbound: one runtime step.
        let snap = fake::running("1.3.3", &zones, &[]);
        let p = plan_attach(&req(false, false), &snap, None).unwrap();
        assert_eq!(steps(&p.plan), ["bind bridge virbr0 to zone libvirt"]);
        assert_eq!(p.message, "bound bridge virbr0 to zone libvirt");
        assert!(!p.permanent);
        // Already there: nothing to send, only the record.
        let snap = fake::running("1.3.3", &zones, &[("virbr0", "libvirt")]);
        let p = plan_attach(&req(false, false), &snap, None).unwrap();
        assert!(p.plan.is_empty());
        // Permanent first, then runtime; the runtime step knows where the bridge was.
        let mut snap = fake::running("1.3.3", &zones, &[("virbr0", "trusted")]);
        snap.permanent_zone_of_interface = Some("trusted".into());
        let p = plan_attach(&req(true, true), &snap, None).unwrap();
        assert_eq!(
            steps(&p.plan),
            [
                "unbind bridge virbr0 from zone trusted in the permanent configuration",
                "bind bridge virbr0 to zone libvirt in the permanent configuration",
                "bind bridge virbr0 to zone libvirt",
            ]
        );
        assert_eq!(
            p.plan.steps[2],
            Step::ChangeZoneOfInterface {
                zone: z.clone(),
                interface: br.clone(),
                previous: Some(ZoneName::new("trusted").unwrap()),
            }
        );
        assert!(p.permanent);
        // The admin's permanent binding stands without --force, unless virtzone made it.
        let r = plan_attach(&req(true, false), &snap, Some(&rec("trusted", false))).unwrap_err();
        assert_eq!(r.reason, Reason::AdminPermanentBinding);
        assert!(plan_attach(&req(true, false), &snap, Some(&rec("trusted", true))).is_ok());
        // A zone only at runtime cannot hold a permanent binding.
        let mut snap = fake::running("1.3.3", &zones, &[]);
        snap.permanent_zones.remove("libvirt");
        let r = plan_attach(&req(true, false), &snap, None).unwrap_err();
        assert_eq!(r.reason, Reason::ZoneMissing);
        assert!(r.message.contains("permanent configuration"), "{r}");
        // Missing zone, firewalld not running.
        let snap = fake::running("1.3.3", &["public"], &[]);
        let r = plan_attach(&req(false, false), &snap, None).unwrap_err();
        assert_eq!(r.reason, Reason::ZoneMissing);
        let r = plan_attach(&req(false, false), &Snapshot::not_running(true), None).unwrap_err();
        assert_eq!(r.reason, Reason::FirewalldNotRunning);
        // A recorded permanent binding to the same zone stays permanent.
        let snap = fake::running("1.3.3", &zones, &[]);
        assert!(
            plan_attach(&req(false, false), &snap, Some(&rec("libvirt", true)))
                .unwrap()
                .permanent
        );
    }

    #[test]
    fn detach_plans() {
        let br = BridgeName::new("virbr0").unwrap();
        let zones = ["libvirt", "public"];
        let mut snap = fake::running("2.3.1", &zones, &[("virbr0", "libvirt")]);
        snap.permanent_zone_of_interface = Some("libvirt".into());
        let ours = rec("libvirt", true);
        let p = plan_detach(&br, true, false, &snap, Some(&ours)).unwrap();
        assert_eq!(
            steps(&p.plan),
            [
                "unbind bridge virbr0 from zone libvirt in the permanent configuration",
                "unbind bridge virbr0 from zone libvirt",
            ]
        );
        assert!(p
            .message
            .contains("removed it from zone libvirt in the permanent configuration"));
        // Runtime only: the permanent binding stays, and the user is told.
        let p = plan_detach(&br, false, false, &snap, Some(&ours)).unwrap();
        assert_eq!(steps(&p.plan), ["unbind bridge virbr0 from zone libvirt"]);
        assert_eq!(
            p.plan.warnings[0].reason,
            WarningReason::PermanentBindingStays
        );
        // Not virtzone's permanent binding.
        let r = plan_detach(&br, true, false, &snap, Some(&rec("libvirt", false))).unwrap_err();
        assert_eq!(r.reason, Reason::AdminPermanentBinding);
        // Nothing bound: nothing sent (an unbind of an unbound bridge is an ERROR in firewalld's log).
        let snap = fake::running("2.3.1", &zones, &[]);
        let p = plan_detach(&br, false, false, &snap, Some(&ours)).unwrap();
        assert!(p.plan.is_empty());
    }

    #[test]
    fn reconcile_sends_only_missing_bindings() {
        let mut desired = Bindings::default();
        for (b, z) in [
            ("virbr0", "libvirt"),
            ("virbr1", "libvirt-routed"),
            ("virbr2", "libvirt"),
        ] {
            desired
                .bindings
                .insert(BridgeName::new(b).unwrap(), rec(z, false));
        }
        let actual = BTreeMap::from([
            ("virbr0".to_string(), "libvirt".to_string()),
            ("virbr2".to_string(), "public".to_string()),
        ]);
        let p = plan_reconcile(&desired, &actual);
        assert_eq!(p.in_place, 1);
        assert_eq!(
            steps(&p.plan),
            ["bind bridge virbr1 to zone libvirt-routed"]
        );
        assert_eq!(p.drift.len(), 1);
        assert_eq!(p.plan.warnings[0].reason, WarningReason::MovedByOthers);
    }
    fn profile(zone: &str, flags: u32) -> Profile {
        Profile {
            uuid: "u-br0".into(),
            id: "br0".into(),
            zone: zone.into(),
            flags,
            filename: "/etc/NetworkManager/system-connections/br0.nmconnection".into(),
            shared: false,
        }
    }

    fn nm_rec(zone: &str, previous: &str, permanent: bool) -> Binding {
        Binding {
            networkmanager: Some(NmBinding {
                uuid: "u-br0".into(),
                profile: "br0".into(),
                previous: previous.into(),
            }),
            ..rec(zone, permanent)
        }
    }

    #[test]
    fn attach_through_networkmanager() {
        let br = BridgeName::new("br0").unwrap();
        let z = ZoneName::new("internal").unwrap();
        let req = |permanent, force| AttachRequest {
            bridge: &br,
            zone: &z,
            permanent,
            force,
        };
        // NetworkManager put it in the default zone: not an admin's choice, so no --force needed.
        let snap = fake::running(
            "1.3.3",
            &["public", "internal", "dmz"],
            &[("br0", "public")],
        );
        let p = plan_attach_nm(&req(false, false), &snap, None, &profile("", 0)).unwrap();
        assert_eq!(
            steps(&p.plan),
            ["set connection.zone of NetworkManager profile br0 to internal in memory"]
        );
        assert_eq!(
            p.networkmanager,
            Some(NmBinding {
                uuid: "u-br0".into(),
                profile: "br0".into(),
                previous: String::new()
            })
        );
        assert!(
            p.message.contains("through NetworkManager profile br0"),
            "{}",
            p.message
        );
        // --permanent writes the profile's file.
        let p = plan_attach_nm(&req(true, false), &snap, None, &profile("", 0)).unwrap();
        assert!(matches!(
            &p.plan.steps[..],
            [Step::SetConnectionZone { to_disk: true, .. }]
        ));
        assert!(p.permanent);
        // A zone an admin set in the profile stands without --force; with it, detach restores it.
        let r = plan_attach_nm(&req(false, false), &snap, None, &profile("dmz", 0)).unwrap_err();
        assert_eq!(r.reason, Reason::AdminBinding);
        assert!(r.message.contains("connection.zone=dmz"), "{r}");
        let p = plan_attach_nm(&req(false, true), &snap, None, &profile("dmz", 0)).unwrap();
        assert_eq!(p.networkmanager.unwrap().previous, "dmz");
        // virtzone's own earlier zone may be changed, and keeps the original to restore.
        let ours = nm_rec("dmz", "", false);
        let p = plan_attach_nm(&req(false, false), &snap, Some(&ours), &profile("dmz", 0)).unwrap();
        assert_eq!(p.networkmanager.unwrap().previous, "");
        // Already there: nothing to send; a later --permanent writes an unsaved change out.
        let p = plan_attach_nm(&req(false, false), &snap, None, &profile("internal", 0)).unwrap();
        assert!(p.plan.is_empty());
        let p = plan_attach_nm(
            &req(true, false),
            &snap,
            Some(&nm_rec("internal", "", false)),
            &profile("internal", crate::networkmanager::FLAG_UNSAVED),
        )
        .unwrap();
        assert!(matches!(
            &p.plan.steps[..],
            [Step::SetConnectionZone { to_disk: true, .. }]
        ));
        // Volatile profiles are refused; in-memory-only ones only with --permanent.
        let vol = profile("", crate::networkmanager::FLAG_VOLATILE);
        let r = plan_attach_nm(&req(false, true), &snap, None, &vol).unwrap_err();
        assert_eq!(r.reason, Reason::NmProfileUnusable);
        let mut mem = profile("", crate::networkmanager::FLAG_UNSAVED);
        mem.filename.clear();
        assert!(plan_attach_nm(&req(false, false), &snap, None, &mem).is_ok());
        let r = plan_attach_nm(&req(true, false), &snap, None, &mem).unwrap_err();
        assert_eq!(r.reason, Reason::NmProfileUnusable);
        // A shared connection sits in NetworkManager's nm-shared: refused without --force.
        let mut shared = profile("", 0);
        shared.shared = true;
        let r = plan_attach_nm(&req(false, false), &snap, None, &shared).unwrap_err();
        assert!(r.message.contains("nm-shared"), "{r}");
        // The zone must exist, as on firewalld's path.
        let snap = fake::running("1.3.3", &["public"], &[]);
        let r = plan_attach_nm(&req(false, false), &snap, None, &profile("", 0)).unwrap_err();
        assert_eq!(r.reason, Reason::ZoneMissing);
    }

    #[test]
    fn detach_through_networkmanager() {
        let br = BridgeName::new("br0").unwrap();
        let ours = nm_rec("internal", "", false);
        let nm = ours.networkmanager.clone().unwrap();
        // Restores what virtzone found, in the place it wrote.
        let p = plan_detach_nm(&br, false, &ours, &nm, Some(&profile("internal", 0)));
        assert_eq!(
            steps(&p.plan),
            ["set connection.zone of NetworkManager profile br0 to empty (the default zone) in memory"]
        );
        let perm = nm_rec("internal", "dmz", true);
        let p = plan_detach_nm(
            &br,
            false,
            &perm,
            perm.networkmanager.as_ref().unwrap(),
            Some(&profile("internal", 0)),
        );
        assert!(
            matches!(&p.plan.steps[..], [Step::SetConnectionZone { zone, to_disk: true, .. }] if zone == "dmz")
        );
        // Someone changed it since: left alone unless forced.
        let p = plan_detach_nm(&br, false, &ours, &nm, Some(&profile("dmz", 0)));
        assert!(p.plan.is_empty());
        assert!(p.message.contains("set by someone else"), "{}", p.message);
        assert_eq!(
            plan_detach_nm(&br, true, &ours, &nm, Some(&profile("dmz", 0)))
                .plan
                .steps
                .len(),
            1
        );
        // Gone: only the record goes.
        assert!(plan_detach_nm(&br, false, &ours, &nm, None).plan.is_empty());
    }

    #[test]
    fn reconcile_leaves_networkmanager_bindings_to_networkmanager() {
        let mut desired = Bindings::default();
        desired.bindings.insert(
            BridgeName::new("br0").unwrap(),
            nm_rec("internal", "", false),
        );
        desired.bindings.insert(
            BridgeName::new("br1").unwrap(),
            nm_rec("internal", "", true),
        );
        // firewalld lost them (a reload): NetworkManager re-sends them itself, the daemon sends nothing.
        let p = plan_reconcile(&desired, &BTreeMap::new());
        assert!(p.plan.is_empty() && p.drift.is_empty());
        // NetworkManager lost the in-memory zone (a boot): set it again; a permanent one that differs
        // was changed by someone, and is left.
        let mut back = profile("", 0);
        back.uuid = "u-br0".into();
        let profiles = BTreeMap::from([("u-br0".to_string(), Some(back))]);
        let p = plan_nm_reconcile(&desired, &profiles);
        assert_eq!(
            steps(&p.plan),
            ["set connection.zone of NetworkManager profile br0 to internal in memory",]
        );
        assert_eq!(p.drift.len(), 1);
        let profiles = BTreeMap::from([("u-br0".to_string(), Some(profile("internal", 0)))]);
        let p = plan_nm_reconcile(&desired, &profiles);
        assert!(p.plan.is_empty());
        assert_eq!(p.in_place, 2);
        let profiles = BTreeMap::from([("u-br0".to_string(), Some(profile("dmz", 0)))]);
        let p = plan_nm_reconcile(&desired, &profiles);
        assert!(p.plan.is_empty());
        assert_eq!(p.plan.warnings[0].reason, WarningReason::MovedByOthers);
    }
}
