//! Installing into a running firewalld over D-Bus: its permanent configuration (which firewalld writes to
//! /etc/firewalld), then one reload to make it live. Snapshot → [`plan`] → executor, as two domains of
//! [`converge`].

use crate::change::converge::{converge, Decision, Domain, Seam};
use crate::change::reads::Reads;
use crate::change::snapshot::{Scope, Snapshot};
use crate::change::{ExecError, Plan, Step};
use crate::firewalld::Capabilities;
use crate::state::StateDir;

use super::plan::{self, Action, Item, SHIPPED};
use super::{InstallError, Installed, INSTALLED_FILE};

/// What an install or uninstall did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One item per shipped object.
    pub items: Vec<Item>,
    /// Whether firewalld was reloaded.
    pub reloaded: bool,
}

/// A failed plan, said as install/uninstall says it.
fn failed(e: &ExecError) -> InstallError {
    InstallError::Refused(match e.step {
        Step::Reload => format!(
            "firewalld failed to reload with the new zones ({}); {}, and firewalld keeps running its previous \
             configuration",
            e.error,
            e.rollback_summary()
        ),
        _ => e.to_string(),
    })
}

/// Installs the shipped zones and policies into a running firewalld. Existing objects are kept as they
/// are; what is added is recorded in the state directory so that `uninstall` removes only that.
pub async fn install(
    seam: &impl Seam,
    state: &StateDir,
    reload: bool,
) -> Result<Outcome, InstallError> {
    let domain = Objects::Install { reload };
    Ok(converge(seam, state, &domain).await?.outcome)
}

/// Removes what virtzone installed and nobody changed since, then reloads. Refuses when a zone to
/// remove still holds bridges (unless `force`) or is named by a policy that stays.
pub async fn uninstall(
    seam: &impl Seam,
    state: &StateDir,
    force: bool,
) -> Result<Outcome, InstallError> {
    let domain = Objects::Uninstall { force };
    Ok(converge(seam, state, &domain).await?.outcome)
}

/// The shipped objects as a domain of [`converge`]: `installed.json` as its record, a snapshot of
/// the shipped objects (and, to uninstall, the zones every policy names) as its facts.
enum Objects {
    /// Add what is missing; `reload`: then reload firewalld, which makes the objects live.
    Install { reload: bool },
    /// Remove what virtzone added and nobody changed; `force`: even zones that hold bridges.
    Uninstall { force: bool },
}

impl Domain for Objects {
    type Record = Installed;
    type Facts = Snapshot;
    type Outcome = Outcome;
    type Error = InstallError;

    fn load(&self, state: &StateDir) -> Result<Installed, InstallError> {
        Ok(state.read(INSTALLED_FILE)?)
    }

    async fn gather(&self, reads: &impl Reads, _: &Installed) -> Result<Snapshot, InstallError> {
        let scope = Scope {
            shipped: true,
            // A zone removed under a policy that names it keeps firewalld from starting.
            policy_zones: matches!(self, Objects::Uninstall { .. }),
            ..Scope::default()
        };
        Ok(Snapshot::gather(reads, &scope).await?)
    }

    fn plan(
        &self,
        snap: &Snapshot,
        installed: &Installed,
    ) -> Result<Decision<Installed, Outcome>, InstallError> {
        let mut record = installed.clone();
        match *self {
            Objects::Install { reload } => {
                let planned = plan::plan_live_install(snap, installed, reload)?;
                let mut added = false;
                for item in planned.items.iter().filter(|i| i.action == Action::Add) {
                    record.insert(item.kind, &item.name);
                    added = true;
                }
                Ok(Decision {
                    plan: planned.plan,
                    // Unrecorded objects would never be uninstalled: the runner undoes them if
                    // this cannot be written.
                    record: added.then_some(record),
                    outcome: Outcome {
                        items: planned.items,
                        reloaded: added && reload,
                    },
                })
            }
            Objects::Uninstall { force } => {
                let planned = plan::plan_live_uninstall(snap, installed, force)?;
                for item in planned.items.iter().filter(|i| i.action == Action::Remove) {
                    record.remove(item.kind, &item.name);
                }
                // Objects virtzone recorded that are gone by now (an admin deleted them) are
                // forgotten too.
                for (kind, name) in SHIPPED {
                    if !snap.shipped.contains_key(&(kind, name.to_string())) {
                        record.remove(kind, name);
                    }
                }
                Ok(Decision {
                    record: (record != *installed).then_some(record),
                    outcome: Outcome {
                        reloaded: planned.plan.steps.contains(&Step::Reload),
                        items: planned.items,
                    },
                    plan: planned.plan,
                })
            }
        }
    }

    fn store(&self, state: &StateDir, installed: &Installed) -> Result<(), InstallError> {
        Ok(state.write(INSTALLED_FILE, installed)?)
    }

    fn failed(&self, error: ExecError) -> InstallError {
        failed(&error)
    }

    fn capabilities(&self, snap: &Snapshot) -> Option<Capabilities> {
        snap.capabilities()
    }

    fn again(&self, _: &Plan) -> bool {
        // The reload is the plan's last step, not a reason to plan again.
        false
    }
}
