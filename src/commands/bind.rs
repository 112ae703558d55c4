//! `virtzone attach`, `detach` and `list`.

use std::path::Path;
use std::process::ExitCode;

use super::{print_json, Failure};
use crate::bind::{self, Attach, Bindings, RowState, BINDINGS_FILE};
use crate::firewalld::{self, Firewalld};
use crate::names::BridgeName;
use crate::state::StateDir;

/// Connects to a running firewalld, or says that binding needs one.
pub(crate) async fn firewalld_for(what: &str) -> Result<Firewalld, Failure> {
    let fw = match Firewalld::connect().await {
        Ok(fw) => fw,
        Err(firewalld::Error::NoBus(_)) => return Err(not_running(what)),
        Err(e) => return Err(e.into()),
    };
    if !fw.is_running().await? {
        return Err(not_running(what));
    }
    Ok(fw)
}

fn not_running(what: &str) -> Failure {
    Failure::Refused(format!("firewalld is not running, so there is nothing to {what}; start firewalld first"))
}

pub async fn attach(req: &Attach, state_dir: Option<&Path>) -> Result<ExitCode, Failure> {
    let fw = firewalld_for("bind").await?;
    println!("{}", bind::attach(&fw, &StateDir::locate(state_dir), req).await?);
    if !req.permanent {
        eprintln!(
            "virtzone: note: this runtime binding does not survive a firewalld reload unless `virtzone serve` runs; \
             use --permanent to keep it in firewalld's permanent configuration"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn detach(bridge: &BridgeName, permanent: bool, force: bool, state_dir: Option<&Path>) -> Result<ExitCode, Failure> {
    let fw = firewalld_for("unbind").await?;
    println!("{}", bind::detach(&fw, &StateDir::locate(state_dir), bridge, permanent, force).await?);
    Ok(ExitCode::SUCCESS)
}

pub async fn list(json: bool, state_dir: Option<&Path>) -> Result<ExitCode, Failure> {
    let bindings: Bindings = StateDir::locate(state_dir).read(BINDINGS_FILE).map_err(|e| Failure::Refused(e.to_string()))?;
    let actual = match Firewalld::connect().await {
        Ok(fw) if fw.is_running().await? => Some(bind::interface_zones(&fw).await?),
        Ok(_) | Err(firewalld::Error::NoBus(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let rows = bind::compare(&bindings, actual.as_ref());
    if json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("virtzone manages no bindings");
    }
    for r in &rows {
        let state = match r.state {
            RowState::Bound => "bound".to_string(),
            RowState::Missing => "MISSING: not bound in firewalld (a reload or restart dropped it)".to_string(),
            RowState::Moved => format!("MOVED: firewalld has it in zone {}", r.actual.as_deref().unwrap_or("?")),
            RowState::Unknown => "unknown: firewalld is not running".to_string(),
        };
        let permanent = if r.permanent { " (permanent)" } else { "" };
        println!("{:<16} {:<18} {state}{permanent}", r.bridge.as_str(), r.zone.as_str());
    }
    Ok(ExitCode::SUCCESS)
}
