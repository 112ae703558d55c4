//! `virtzone forward …` and `virtzone allow …`: parse and validate the arguments (bad input: exit
//! 2 with one sentence, before anything is touched), then hand over to `crate::forward`.

use std::net::IpAddr;
use std::process::ExitCode;

use serde::Serialize;

use super::output::{print_json, Failure};
use crate::cli::{AllowAction, ForwardAction, ForwardSpec};
use crate::forward::domain::Status;
use crate::forward::model::{Allow, Opening};
use crate::forward::request::Request;
use crate::forward::{self, Which};
use crate::names::NetworkName;
use crate::state::StateDir;

fn usage(m: impl Into<String>) -> Failure {
    Failure::Usage(m.into())
}

fn network_name(name: &str) -> Result<NetworkName, Failure> {
    forward::request::network_name(name).map_err(usage)
}

fn request(spec: &ForwardSpec, ports: &str) -> Result<Request, Failure> {
    forward::request::request(spec, ports).map_err(usage)
}

/// `virtzone forward …`.
pub async fn forward(action: ForwardAction) -> Result<ExitCode, Failure> {
    match action {
        ForwardAction::Add {
            spec,
            ports,
            state_dir,
        } => {
            let req = request(&spec, &ports)?;
            let state = StateDir::locate(state_dir.as_deref())?;
            let message = match req {
                Request::Guest(req) => forward::add_forward(&state, req).await?,
                Request::Domain(req) => forward::add_domain_forward(&state, req).await?,
            };
            out!("{message}");
        }
        ForwardAction::Remove {
            spec,
            target,
            state_dir,
        } => {
            let given = spec.network.is_some() || spec.guest.is_some() || spec.domain.is_some();
            let which = if given {
                match request(&spec, &target)? {
                    Request::Guest(req) => Which::Spec(req),
                    Request::Domain(req) => Which::DomainSpec(req),
                }
            } else {
                let id = target
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0 && target.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        usage(format!(
                            "{target:?} is not a forward ID; pass an ID from virtzone forward list, or the \
                             arguments the forward was added with"
                        ))
                    })?;
                Which::Id(id)
            };
            let state = StateDir::locate(state_dir.as_deref())?;
            out!("{}", forward::remove_forward(&state, which).await?);
        }
        ForwardAction::Purge { state_dir } => {
            let state = StateDir::locate(state_dir.as_deref())?;
            out!("{}", forward::purge(&state).await?);
        }
        ForwardAction::List { json, state_dir } => {
            let state = StateDir::locate(state_dir.as_deref())?;
            list_forwards(&state, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `forward list --json` (documented in docs/forwards.md).
#[derive(Serialize)]
struct ForwardRow {
    id: u32,
    /// The network (for a domain forward: the resolved one, else the one given, else null).
    network: Option<NetworkName>,
    /// The guest's address (for a domain forward: the resolved one, else null).
    guest: Option<IpAddr>,
    /// The libvirt domain of a `--domain` forward, null otherwise.
    domain: Option<String>,
    proto: String,
    host_port: String,
    guest_port: String,
    host_address: Option<IpAddr>,
    from_host: bool,
    hairpin: bool,
    /// `active`, `inactive` (network or domain stopped or unknown, or a domain forward that cannot
    /// be resolved), `waiting-for-address` (the domain runs, its guest has no lease yet) or
    /// `ambiguous-address` (the domain runs, but which address is its own is in doubt).
    state: &'static str,
    /// Why a domain forward is not active, null otherwise.
    reason: Option<String>,
    /// The drop-in file declaring it, or `cli`.
    source: String,
}

/// The `source` of a listed object: its drop-in file, or `cli`.
fn source(file: Option<&str>) -> String {
    file.unwrap_or("cli").to_string()
}

fn list_forwards(state: &StateDir, json: bool) -> Result<(), Failure> {
    let declared = forward::read_declared(state)?;
    let networks = forward::read_networks(state)?;
    let mut rows: Vec<ForwardRow> = declared
        .forwards
        .iter()
        .map(|f| ForwardRow {
            id: f.id,
            network: Some(f.network.clone()),
            guest: Some(f.guest),
            domain: None,
            proto: f.proto.to_string(),
            host_port: f.host_port.to_string(),
            guest_port: f.guest_port.to_string(),
            host_address: f.host_address,
            from_host: f.from_host,
            hairpin: f.hairpin,
            state: if networks.networks.get(&f.network).is_some_and(|n| n.active) {
                "active"
            } else {
                "inactive"
            },
            reason: None,
            source: source(declared.forward_source(f.id)),
        })
        .collect();
    if !declared.domain_forwards.is_empty() {
        let statuses = forward::domain_statuses(state)?;
        for f in &declared.domain_forwards {
            let status = statuses.get(&f.id);
            let (network, guest) = match status {
                Some(Status::Active(t)) => (Some(t.network.clone()), Some(t.guest)),
                Some(Status::Waiting { network, .. }) => (Some(network.clone()), None),
                _ => (f.network.clone(), None),
            };
            rows.push(ForwardRow {
                id: f.id,
                network,
                guest,
                domain: Some(f.domain.clone()),
                proto: f.proto.to_string(),
                host_port: f.host_port.to_string(),
                guest_port: f.guest_port.to_string(),
                host_address: f.host_address,
                from_host: f.from_host,
                hairpin: f.hairpin,
                state: status.map_or("inactive", Status::word),
                reason: status.and_then(Status::reason).map(String::from),
                source: source(declared.forward_source(f.id)),
            });
        }
        rows.sort_by_key(|r| r.id);
    }
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        out!("no forwards");
        return Ok(());
    }
    out!(
        "{:<4} {:<16} {:<24} {:<18} {:<18} STATE",
        "ID",
        "NETWORK",
        "GUEST",
        "HOST",
        "TO"
    );
    for r in rows {
        let host = match r.host_address {
            Some(a) => format!("{a}:{}/{}", r.host_port, r.proto),
            None => format!("{}/{}", r.host_port, r.proto),
        };
        let guest = match (&r.domain, r.guest) {
            (Some(d), Some(g)) => format!("{d} ({g})"),
            (Some(d), None) => d.clone(),
            (None, Some(g)) => g.to_string(),
            (None, None) => "-".into(),
        };
        out!(
            "{:<4} {:<16} {:<24} {:<18} {:<18} {}",
            r.id,
            r.network.as_ref().map_or("-", NetworkName::as_str),
            guest,
            host,
            r.guest_port,
            r.state
        );
    }
    Ok(())
}

/// `virtzone allow …`.
pub async fn allow(action: AllowAction) -> Result<ExitCode, Failure> {
    match action {
        AllowAction::Add {
            network,
            what,
            state_dir,
        } => change(&network, &what, state_dir.as_deref(), true).await?,
        AllowAction::Remove {
            network,
            what,
            state_dir,
        } => change(&network, &what, state_dir.as_deref(), false).await?,
        AllowAction::List { json, state_dir } => {
            list_allows(&StateDir::locate(state_dir.as_deref())?, json)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `allow list --json`.
#[derive(Serialize)]
struct AllowRow {
    network: NetworkName,
    what: String,
    /// The drop-in file declaring it, or `cli`.
    source: String,
}

fn list_allows(state: &StateDir, json: bool) -> Result<(), Failure> {
    let declared = forward::read_declared(state)?;
    let rows: Vec<AllowRow> = declared
        .allows
        .iter()
        .map(|a| AllowRow {
            network: a.network.clone(),
            what: a.opening.to_string(),
            source: source(declared.allow_source(a)),
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        out!("no allows");
        return Ok(());
    }
    out!("{:<16} OPEN", "NETWORK");
    for r in rows {
        out!("{:<16} {}", r.network, r.what);
    }
    Ok(())
}

async fn change(
    network: &str,
    what: &str,
    state_dir: Option<&std::path::Path>,
    add: bool,
) -> Result<(), Failure> {
    let allow = Allow {
        network: network_name(network)?,
        opening: Opening::parse(what).map_err(usage)?,
    };
    let state = StateDir::locate(state_dir)?;
    out!("{}", forward::change_allow(&state, allow, add).await?);
    Ok(())
}
