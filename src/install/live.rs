//! Installing into a running firewalld over D-Bus: its permanent configuration (which firewalld writes to
//! /etc/firewalld), then one reload to make it live.

use std::collections::{BTreeMap, BTreeSet};

use crate::firewalld::proxy::ZoneTuple;
use crate::firewalld::{self, Capabilities, Firewalld, FirewalldFacts, Running, State};
use crate::state::StateDir;
use crate::zone::{self, Settings};

use super::plan::{self, Action, Existing, Item, Kind, Origin, Present, SHIPPED};
use super::{InstallError, Installed, INSTALLED_FILE};

/// What an install or uninstall did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One item per shipped object.
    pub items: Vec<Item>,
    /// Whether firewalld was reloaded.
    pub reloaded: bool,
}

/// The facts of a running firewalld that can take changes, or why it cannot.
async fn running(fw: &Firewalld) -> Result<Running, InstallError> {
    match fw.facts().await? {
        FirewalldFacts::NotRunning { .. } => Err(InstallError::Refused("firewalld is not running".into())),
        FirewalldFacts::Running(r) if r.state == State::Failed => Err(InstallError::Refused(format!(
            "firewalld {} is in FAILED state: fix its configuration first (see `journalctl -u firewalld`), \
             then run `firewall-cmd --reload`; nothing was changed",
            r.version_text
        ))),
        FirewalldFacts::Running(r) => Ok(r),
    }
}

/// Differences between virtzone's definition of an object and what firewalld holds. Interfaces bound
/// permanently are bindings, not part of the definition, so they do not count.
async fn differences(
    fw: &Firewalld,
    kind: Kind,
    name: &str,
    caps: Capabilities,
) -> firewalld::Result<Option<(bool, Vec<String>)>> {
    let not_comparable = |e: zone::ZoneError| vec![format!("cannot compare it: {e}")];
    match kind {
        Kind::Zone => {
            let Some(proxy) = fw.config_zone(name).await? else {
                return Ok(None);
            };
            let builtin = proxy
                .builtin()
                .await
                .map_err(|e| firewalld::Error::from_call("property builtin", e))?;
            if !caps.dict_api {
                return Ok(Some((
                    builtin,
                    vec!["cannot compare it on firewalld before 0.9.0".into()],
                )));
            }
            let settings = proxy
                .get_settings2()
                .await
                .map_err(|e| firewalld::Error::from_call("getSettings2", e))?;
            let diff = match zone::Zone::from_settings(name, &settings) {
                Ok(mut actual) => {
                    actual.interfaces.clear();
                    zone::shipped_zone(name).diff(&actual)
                }
                Err(e) => not_comparable(e),
            };
            Ok(Some((builtin, diff)))
        }
        Kind::Policy => {
            let Some(proxy) = fw.config_policy(name).await? else {
                return Ok(None);
            };
            let builtin = proxy
                .builtin()
                .await
                .map_err(|e| firewalld::Error::from_call("property builtin", e))?;
            let settings = proxy
                .get_settings()
                .await
                .map_err(|e| firewalld::Error::from_call("getSettings", e))?;
            let diff = match zone::Policy::from_settings(name, &settings) {
                Ok(actual) => zone::shipped_policy(name).diff(&actual),
                Err(e) => not_comparable(e),
            };
            Ok(Some((builtin, diff)))
        }
    }
}

/// The shipped objects firewalld has in its permanent configuration, with their origin.
pub async fn inspect(
    fw: &Firewalld,
    installed: &Installed,
    caps: Capabilities,
) -> firewalld::Result<Existing> {
    let mut existing = Existing::new();
    for (kind, name) in SHIPPED {
        if kind == Kind::Policy && !caps.policies {
            continue;
        }
        if let Some((builtin, differences)) = differences(fw, kind, name, caps).await? {
            let origin = if builtin {
                Origin::Package
            } else if installed.contains(kind, name) {
                Origin::Virtzone
            } else {
                Origin::Admin
            };
            existing.insert(
                (kind, name.to_string()),
                Present {
                    origin,
                    differences,
                },
            );
        }
    }
    Ok(existing)
}

/// The pre-0.9.0 `addZone` tuple, from a settings dict.
fn zone_tuple(settings: &Settings) -> Result<ZoneTuple, InstallError> {
    fn get<T: TryFrom<zbus::OwnedVariant> + Default>(
        s: &Settings,
        key: &str,
    ) -> Result<T, InstallError> {
        match s.get(key) {
            None => Ok(T::default()),
            Some(v) => v
                .try_clone()
                .ok()
                .and_then(|v| T::try_from(v).ok())
                .ok_or_else(|| {
                    InstallError::Refused(format!(
                        "internal error: settings key {key} has an unexpected type"
                    ))
                }),
        }
    }
    Ok((
        get(settings, "version")?,
        get(settings, "short")?,
        get(settings, "description")?,
        false,
        get(settings, "target")?,
        get(settings, "services")?,
        get(settings, "ports")?,
        get(settings, "icmp_blocks")?,
        get(settings, "masquerade")?,
        get(settings, "forward_ports")?,
        get(settings, "interfaces")?,
        get(settings, "sources")?,
        get(settings, "rules_str")?,
        get(settings, "protocols")?,
        get(settings, "source_ports")?,
        get(settings, "icmp_block_inversion")?,
    ))
}

async fn add(
    fw: &Firewalld,
    kind: Kind,
    name: &str,
    caps: Capabilities,
) -> Result<(), InstallError> {
    match kind {
        Kind::Zone if caps.dict_api => {
            fw.add_zone2(name, &zone::shipped_zone(name).to_settings())
                .await?
        }
        Kind::Zone => {
            fw.add_zone_tuple(name, &zone_tuple(&zone::shipped_zone(name).to_settings())?)
                .await?
        }
        Kind::Policy => {
            fw.add_policy(name, &zone::shipped_policy(name).to_settings())
                .await?
        }
    }
    Ok(())
}

async fn remove(fw: &Firewalld, kind: Kind, name: &str) -> firewalld::Result<()> {
    let removed = match kind {
        Kind::Zone => match fw.config_zone(name).await? {
            Some(p) => p.remove().await,
            None => return Ok(()),
        },
        Kind::Policy => match fw.config_policy(name).await? {
            Some(p) => p.remove().await,
            None => return Ok(()),
        },
    };
    removed.map_err(|e| firewalld::Error::from_call("remove", e))
}

/// Removes what this run added, newest first; failures are collected, not hidden.
async fn roll_back(fw: &Firewalld, added: &[(Kind, String)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (kind, name) in added.iter().rev() {
        if let Err(e) = remove(fw, *kind, name).await {
            failures.push(format!("could not remove {kind} {name} again: {e}"));
        }
    }
    failures
}

/// Installs the shipped zones and policies into a running firewalld. Existing objects are kept as they
/// are; what is added is recorded in the state directory so that `uninstall` removes only that.
pub async fn install(
    fw: &Firewalld,
    state: &StateDir,
    reload: bool,
) -> Result<Outcome, InstallError> {
    let _lock = state.lock().await?;
    let fwd = running(fw).await?;
    let mut installed: Installed = state.read(INSTALLED_FILE)?;
    let existing = inspect(fw, &installed, fwd.capabilities).await?;
    let items = plan::plan_install(Some((&fwd.version_text, fwd.capabilities)), &existing)
        .map_err(InstallError::Refused)?;
    let mut added: Vec<(Kind, String)> = Vec::new();
    for item in items.iter().filter(|i| i.action == Action::Add) {
        if let Err(e) = add(fw, item.kind, &item.name, fwd.capabilities).await {
            let failures = roll_back(fw, &added).await;
            return Err(InstallError::Refused(format!(
                "firewalld refused to add {} {}: {e}; {}",
                item.kind,
                item.name,
                rolled_back(&failures)
            )));
        }
        added.push((item.kind, item.name.clone()));
    }
    if added.is_empty() {
        return Ok(Outcome {
            items,
            reloaded: false,
        });
    }
    if reload {
        if let Err(e) = fw.reload().await {
            let failures = roll_back(fw, &added).await;
            return Err(InstallError::Refused(format!(
                "firewalld failed to reload with the new zones ({e}); {}, and firewalld keeps running its \
                 previous configuration",
                rolled_back(&failures)
            )));
        }
    }
    for (kind, name) in &added {
        installed.insert(*kind, name);
    }
    state.write(INSTALLED_FILE, &installed)?;
    Ok(Outcome {
        items,
        reloaded: reload,
    })
}

fn rolled_back(failures: &[String]) -> String {
    if failures.is_empty() {
        "removed what this run had added".to_string()
    } else {
        format!("rolling back failed too: {}", failures.join("; "))
    }
}

/// Removes what virtzone installed and nobody changed since, then reloads.
pub async fn uninstall(
    fw: &Firewalld,
    state: &StateDir,
    force: bool,
) -> Result<Outcome, InstallError> {
    let _lock = state.lock().await?;
    let fwd = running(fw).await?;
    let mut installed: Installed = state.read(INSTALLED_FILE)?;
    let existing = inspect(fw, &installed, fwd.capabilities).await?;
    let mut bound: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (zone, parts) in fw.active_zones().await? {
        bound
            .entry(zone)
            .or_default()
            .extend(parts.get("interfaces").into_iter().flatten().cloned());
    }
    for (kind, name) in SHIPPED {
        if kind != Kind::Zone
            || !existing.contains_key(&(kind, name.to_string()))
            || !fwd.capabilities.dict_api
        {
            continue;
        }
        if let Some(proxy) = fw.config_zone(name).await? {
            let settings = proxy
                .get_settings2()
                .await
                .map_err(|e| firewalld::Error::from_call("getSettings2", e))?;
            if let Ok(z) = zone::Zone::from_settings(name, &settings) {
                bound
                    .entry(name.to_string())
                    .or_default()
                    .extend(z.interfaces);
            }
        }
    }
    for ifaces in bound.values_mut() {
        let unique: BTreeSet<String> = ifaces.drain(..).collect();
        ifaces.extend(unique);
    }
    let items = plan::plan_uninstall(&existing, &bound, force).map_err(InstallError::Refused)?;
    let mut removed = 0;
    for item in items.iter().filter(|i| i.action == Action::Remove) {
        remove(fw, item.kind, &item.name).await.map_err(|e| {
            InstallError::Refused(format!(
                "firewalld refused to remove {} {}: {e}",
                item.kind, item.name
            ))
        })?;
        installed.remove(item.kind, &item.name);
        state.write(INSTALLED_FILE, &installed)?;
        removed += 1;
    }
    // Objects virtzone recorded that are gone by now (an admin deleted them) are forgotten too.
    for (kind, name) in SHIPPED {
        if !existing.contains_key(&(kind, name.to_string())) && installed.contains(kind, name) {
            installed.remove(kind, name);
            state.write(INSTALLED_FILE, &installed)?;
        }
    }
    if removed > 0 {
        fw.reload().await?;
    }
    Ok(Outcome {
        items,
        reloaded: removed > 0,
    })
}
