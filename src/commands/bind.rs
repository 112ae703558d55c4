//! `virtzone attach`, `detach` and `list`.

use std::path::Path;
use std::process::ExitCode;

use super::output::{print_json, Failure};
use crate::bind::{self, Attach, Bindings, RowState, BINDINGS_FILE};
use crate::daemon::client::{describe, VirtZone1Proxy};
use crate::firewalld::Firewalld;
use crate::names::BridgeName;
use crate::state::StateDir;

/// Connects to a running firewalld, or says that binding needs one.
pub(crate) async fn firewalld_for(what: &str) -> Result<Firewalld, Failure> {
    Firewalld::connect_running()
        .await?
        .ok_or_else(|| not_running(what))
}

fn not_running(what: &str) -> Failure {
    Failure::Refused(format!(
        "firewalld is not running, so there is nothing to {what}; start firewalld first"
    ))
}

/// The daemon, when it runs and the request is one it takes (no --permanent, --force or --state-dir:
/// those are done directly, on the same state the daemon reads).
async fn daemon(plain: bool) -> Result<Option<VirtZone1Proxy<'static>>, Failure> {
    if !plain {
        return Ok(None);
    }
    let conn = match zbus::Connection::system().await {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let owned = crate::firewalld::bus::name_has_owner(&conn, crate::daemon::BUS_NAME).await;
    if !owned.unwrap_or(false) {
        return Ok(None);
    }
    let proxy = VirtZone1Proxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    Ok(Some(proxy))
}

/// The state directory, checked (owner, mode, no planted links) before anything asks firewalld.
fn local_state(state_dir: Option<&Path>) -> Result<StateDir, Failure> {
    let state = StateDir::locate(state_dir)?;
    state.check()?;
    Ok(state)
}

fn daemon_failure(e: &zbus::Error) -> Failure {
    match describe(e) {
        (true, m) => Failure::Usage(m),
        (false, m) => Failure::Refused(m),
    }
}

pub async fn attach(req: &Attach, state_dir: Option<&Path>) -> Result<ExitCode, Failure> {
    if let Some(d) = daemon(!req.permanent && !req.force && state_dir.is_none()).await? {
        let message = d
            .attach(req.bridge.as_str(), req.zone.as_str())
            .await
            .map_err(|e| daemon_failure(&e))?;
        out!("{message}");
        return Ok(ExitCode::SUCCESS);
    }
    // What virtzone can judge alone comes first: a state directory it must refuse is refused
    // whatever firewalld does (absent, hung or healthy).
    let state = local_state(state_dir)?;
    let fw = firewalld_for("bind").await?;
    out!("{}", bind::attach(&fw, &state, req).await?);
    if !req.permanent {
        eprintln!(
            "virtzone: note: this runtime binding does not survive a firewalld reload unless `virtzone serve` runs; \
             use --permanent to keep it in firewalld's permanent configuration"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn detach(
    bridge: &BridgeName,
    permanent: bool,
    force: bool,
    state_dir: Option<&Path>,
) -> Result<ExitCode, Failure> {
    if let Some(d) = daemon(!permanent && !force && state_dir.is_none()).await? {
        out!(
            "{}",
            d.detach(bridge.as_str())
                .await
                .map_err(|e| daemon_failure(&e))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let state = local_state(state_dir)?;
    let fw = firewalld_for("unbind").await?;
    out!(
        "{}",
        bind::detach(&fw, &state, bridge, permanent, force).await?
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list(json: bool, state_dir: Option<&Path>) -> Result<ExitCode, Failure> {
    let bindings: Bindings = StateDir::locate(state_dir)?.read(BINDINGS_FILE)?;
    let (actual, profiles) = match Firewalld::connect().await {
        Ok(fw) => {
            let actual = if fw.is_running().await? {
                Some(fw.interface_zones().await?)
            } else {
                None
            };
            let profiles = bind::profiles(&fw, &bindings)
                .await
                .map_err(|e| Failure::Refused(e.to_string()))?;
            (actual, profiles)
        }
        Err(crate::firewalld::Error::NoBus(_)) => (None, Default::default()),
        Err(e) => return Err(e.into()),
    };
    let rows = bind::compare(&bindings, actual.as_ref(), &profiles);
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        out!("virtzone manages no bindings");
    }
    for r in &rows {
        let state = match r.state {
            RowState::Bound => "bound".to_string(),
            RowState::Missing => {
                "MISSING: not bound in firewalld (a reload or restart dropped it)".to_string()
            }
            RowState::Moved => match &r.profile {
                Some(p) if p.zone.as_deref() != Some(r.zone.as_str()) => format!(
                    "MOVED: NetworkManager profile {} has connection.zone {}",
                    p.name,
                    p.zone
                        .as_deref()
                        .map_or("(profile gone)", |z| if z.is_empty() {
                            "empty (the default zone)"
                        } else {
                            z
                        })
                ),
                _ => format!(
                    "MOVED: firewalld has it in zone {}",
                    r.actual.as_deref().unwrap_or("?")
                ),
            },
            RowState::Unknown => "unknown: firewalld is not running".to_string(),
        };
        let permanent = if r.permanent { " (permanent)" } else { "" };
        let via = match &r.profile {
            Some(p) => format!(" via NetworkManager profile {} ({})", p.name, p.uuid),
            None => String::new(),
        };
        out!(
            "{:<16} {:<18} {state}{permanent}{via}",
            r.bridge.as_str(),
            r.zone.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
