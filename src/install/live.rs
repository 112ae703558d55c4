//! Installing into a running firewalld over D-Bus: its permanent configuration (which firewalld writes to
//! /etc/firewalld), then one reload to make it live. Snapshot → [`plan`] → executor.

use crate::change::executor::Live;
use crate::change::{ExecError, Executor, Step};
use crate::firewalld::{Firewalld, Scope, Snapshot};
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
    fw: &Firewalld,
    state: &StateDir,
    reload: bool,
) -> Result<Outcome, InstallError> {
    let _lock = state.lock().await?;
    let mut installed: Installed = state.read(INSTALLED_FILE)?;
    let snap = Snapshot::gather(fw, &Scope::shipped()).await?;
    let planned = plan::plan_live_install(&snap, &installed, reload)?;
    let live = Live::new(fw, snap.capabilities());
    let executor = Executor::new(&live);
    let applied = executor.run(&planned.plan).await.map_err(|e| failed(&e))?;
    let added: Vec<&Item> = planned
        .items
        .iter()
        .filter(|i| i.action == Action::Add)
        .collect();
    if added.is_empty() {
        return Ok(Outcome {
            items: planned.items,
            reloaded: false,
        });
    }
    for item in &added {
        installed.insert(item.kind, &item.name);
    }
    if let Err(e) = state.write(INSTALLED_FILE, &installed) {
        // Unrecorded objects would never be uninstalled: take them out again.
        executor.undo(applied).await;
        return Err(e.into());
    }
    Ok(Outcome {
        items: planned.items,
        reloaded: reload,
    })
}

/// Removes what virtzone installed and nobody changed since, then reloads. Refuses when a zone to
/// remove still holds bridges (unless `force`) or is named by a policy that stays.
pub async fn uninstall(
    fw: &Firewalld,
    state: &StateDir,
    force: bool,
) -> Result<Outcome, InstallError> {
    let _lock = state.lock().await?;
    let mut installed: Installed = state.read(INSTALLED_FILE)?;
    let recorded = installed.clone();
    let scope = Scope {
        shipped: true,
        policy_zones: true,
        ..Scope::default()
    };
    let snap = Snapshot::gather(fw, &scope).await?;
    let planned = plan::plan_live_uninstall(&snap, &installed, force)?;
    let live = Live::new(fw, snap.capabilities());
    let executor = Executor::new(&live);
    let applied = executor.run(&planned.plan).await.map_err(|e| failed(&e))?;
    for item in planned.items.iter().filter(|i| i.action == Action::Remove) {
        installed.remove(item.kind, &item.name);
    }
    // Objects virtzone recorded that are gone by now (an admin deleted them) are forgotten too.
    for (kind, name) in SHIPPED {
        if !snap.shipped.contains_key(&(kind, name.to_string())) {
            installed.remove(kind, name);
        }
    }
    if installed != recorded {
        if let Err(e) = state.write(INSTALLED_FILE, &installed) {
            executor.undo(applied).await;
            return Err(e.into());
        }
    }
    Ok(Outcome {
        reloaded: planned.plan.steps.contains(&Step::Reload),
        items: planned.items,
    })
}
