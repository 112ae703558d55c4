//! The seam every change to firewalld goes through: a [`Plan`] of ordered [`Step`]s, made by a pure
//! planner from a [`Snapshot`](crate::firewalld::snapshot::Snapshot), applied by the
//! [`executor`] (the only code that calls firewalld's mutating methods).
//!
//! Planners refuse with a typed [`Refusal`] and warn with typed [`Warning`]s: each carries a stable
//! reason name (for JSON and scripts) and the one sentence people read.

pub mod executor;

use std::fmt;

use serde::Serialize;

use crate::names::{BridgeName, ZoneName};
use crate::zone::{Policy, Zone};

pub use executor::{ExecError, Executor, Mutations};

/// One change to firewalld. Every step but [`Step::Reload`] has an inverse (see [`Step::inverse`]),
/// which is what the executor applies to roll back.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Binds `interface` to `zone` at runtime, moving it out of `previous` (`None`: it was unbound).
    ChangeZoneOfInterface {
        /// The zone.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
        /// Where it was before, for the inverse.
        previous: Option<ZoneName>,
    },
    /// Unbinds `interface` from `zone` at runtime.
    RemoveInterface {
        /// The zone it is in.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
    },
    /// Binds `interface` to `zone` in the permanent configuration.
    AddPermanentInterface {
        /// The zone.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
    },
    /// Unbinds `interface` from `zone` in the permanent configuration.
    RemovePermanentInterface {
        /// The zone.
        zone: ZoneName,
        /// The interface.
        interface: BridgeName,
    },
    /// Adds a permanent zone.
    AddZone(Zone),
    /// Adds a permanent policy.
    AddPolicy(Policy),
    /// Replaces a permanent zone's definition (its bindings stay).
    UpdateZone {
        /// The new definition.
        zone: Box<Zone>,
        /// The definition before, for the inverse.
        previous: Box<Zone>,
    },
    /// Removes a permanent zone; `previous` is its definition, for the inverse.
    RemoveZone(Zone),
    /// Removes a permanent policy; `previous` is its definition, for the inverse.
    RemovePolicy(Policy),
    /// Reloads firewalld so the permanent configuration becomes live. A failed reload keeps the rules
    /// that ran before, so it needs no inverse.
    Reload,
}

impl Step {
    /// The step that undoes this one, `None` for [`Step::Reload`].
    pub fn inverse(&self) -> Option<Step> {
        Some(match self {
            Step::ChangeZoneOfInterface {
                zone,
                interface,
                previous: Some(previous),
            } => Step::ChangeZoneOfInterface {
                zone: previous.clone(),
                interface: interface.clone(),
                previous: Some(zone.clone()),
            },
            Step::ChangeZoneOfInterface {
                zone,
                interface,
                previous: None,
            } => Step::RemoveInterface {
                zone: zone.clone(),
                interface: interface.clone(),
            },
            Step::RemoveInterface { zone, interface } => Step::ChangeZoneOfInterface {
                zone: zone.clone(),
                interface: interface.clone(),
                previous: None,
            },
            Step::AddPermanentInterface { zone, interface } => Step::RemovePermanentInterface {
                zone: zone.clone(),
                interface: interface.clone(),
            },
            Step::RemovePermanentInterface { zone, interface } => Step::AddPermanentInterface {
                zone: zone.clone(),
                interface: interface.clone(),
            },
            Step::AddZone(z) => Step::RemoveZone(z.clone()),
            Step::AddPolicy(p) => Step::RemovePolicy(p.clone()),
            Step::UpdateZone { zone, previous } => Step::UpdateZone {
                zone: previous.clone(),
                previous: zone.clone(),
            },
            Step::RemoveZone(z) => Step::AddZone(z.clone()),
            Step::RemovePolicy(p) => Step::AddPolicy(p.clone()),
            Step::Reload => return None,
        })
    }

    /// Whether the step changes the permanent configuration (which a reload makes live).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Step::AddPermanentInterface { .. }
                | Step::RemovePermanentInterface { .. }
                | Step::AddZone(_)
                | Step::AddPolicy(_)
                | Step::UpdateZone { .. }
                | Step::RemoveZone(_)
                | Step::RemovePolicy(_)
        )
    }
}

impl fmt::Display for Step {
    /// What the step does, as the object of "firewalld refused to …".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ChangeZoneOfInterface {
                zone, interface, ..
            } => write!(f, "bind bridge {interface} to zone {zone}"),
            Step::RemoveInterface { zone, interface } => {
                write!(f, "unbind bridge {interface} from zone {zone}")
            }
            Step::AddPermanentInterface { zone, interface } => write!(
                f,
                "bind bridge {interface} to zone {zone} in the permanent configuration"
            ),
            Step::RemovePermanentInterface { zone, interface } => write!(
                f,
                "unbind bridge {interface} from zone {zone} in the permanent configuration"
            ),
            Step::AddZone(z) => write!(f, "add zone {}", z.name),
            Step::AddPolicy(p) => write!(f, "add policy {}", p.name),
            Step::UpdateZone { zone, .. } => write!(f, "update zone {}", zone.name),
            Step::RemoveZone(z) => write!(f, "remove zone {}", z.name),
            Step::RemovePolicy(p) => write!(f, "remove policy {}", p.name),
            Step::Reload => f.write_str("reload"),
        }
    }
}

/// What a planner decided: the steps, in order, and what the user should know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The steps, applied in order.
    pub steps: Vec<Step>,
    /// Things the user should know that do not stop the plan.
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Why a planner refused, by stable name (the JSON's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The zone asked for does not exist.
    ZoneMissing,
    /// The bridge sits in a zone virtzone did not put it in (runtime).
    AdminBinding,
    /// The bridge sits in a zone virtzone did not put it in (permanent configuration).
    AdminPermanentBinding,
    /// A zone reported by firewalld has a name virtzone cannot handle.
    UnusableName,
    /// firewalld is too old for what is asked.
    FirewalldTooOld,
    /// firewalld is in FAILED state.
    FirewalldFailed,
    /// firewalld is not running.
    FirewalldNotRunning,
    /// A zone to remove still holds bridges.
    ZoneInUse,
    /// A zone to remove is named by a policy that stays: firewalld would not start.
    ZoneReferenced,
}

impl Reason {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ZoneMissing => "zone-missing",
            Reason::AdminBinding => "admin-binding",
            Reason::AdminPermanentBinding => "admin-permanent-binding",
            Reason::UnusableName => "unusable-name",
            Reason::FirewalldTooOld => "firewalld-too-old",
            Reason::FirewalldFailed => "firewalld-failed",
            Reason::FirewalldNotRunning => "firewalld-not-running",
            Reason::ZoneInUse => "zone-in-use",
            Reason::ZoneReferenced => "zone-referenced",
        }
    }
}

/// A planner's refusal: nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The stable reason.
    pub reason: Reason,
    /// One sentence naming the thing, the reason and the fix.
    pub message: String,
}

impl Refusal {
    /// A refusal for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// Why a planner warns, by stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningReason {
    /// The bridge stays bound in the permanent configuration and comes back on reload.
    PermanentBindingStays,
    /// Someone moved a managed bridge to another zone; it is left there.
    MovedByOthers,
}

/// Something the user should know that does not stop the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The stable reason.
    pub reason: WarningReason,
    /// One sentence.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_but_reload_is_undone_by_its_inverse() {
        let br = BridgeName::new("virbr0").unwrap();
        let z = ZoneName::libvirt();
        let trusted = ZoneName::new("trusted").unwrap();
        let zone = crate::zone::shipped_zone("libvirt");
        let policy = crate::zone::shipped_policy("libvirt-to-host");
        let steps = [
            Step::ChangeZoneOfInterface {
                zone: z.clone(),
                interface: br.clone(),
                previous: None,
            },
            Step::ChangeZoneOfInterface {
                zone: z.clone(),
                interface: br.clone(),
                previous: Some(trusted.clone()),
            },
            Step::RemoveInterface {
                zone: z.clone(),
                interface: br.clone(),
            },
            Step::AddPermanentInterface {
                zone: z.clone(),
                interface: br.clone(),
            },
            Step::RemovePermanentInterface {
                zone: z.clone(),
                interface: br.clone(),
            },
            Step::AddZone(zone.clone()),
            Step::AddPolicy(policy.clone()),
            Step::RemoveZone(zone),
            Step::RemovePolicy(policy),
        ];
        for step in steps {
            let inverse = step.inverse().unwrap();
            // Undoing the undo is the step again, except that an unbind restores the binding without
            // knowing where the bridge was before it.
            let back = inverse.inverse().unwrap();
            match (&step, &back) {
                (Step::ChangeZoneOfInterface { previous: None, .. }, _) => assert_eq!(back, step),
                (Step::RemoveInterface { .. }, Step::RemoveInterface { .. }) => {}
                _ => assert_eq!(back.to_string(), step.to_string()),
            }
        }
        assert_eq!(Step::Reload.inverse(), None);
    }
}
