//! `virtzone forward …` and `virtzone allow …`: parse and validate the arguments (bad input: exit
//! 2 with one sentence, before anything is touched), then hand over to `crate::forward`.

use std::net::IpAddr;
use std::process::ExitCode;

use serde::Serialize;

use super::{print_json, Failure};
use crate::cli::{AllowAction, ForwardAction, ForwardSpec};
use crate::forward::model::{Allow, Opening, PortMap};
use crate::forward::{self, AddForward, Which};
use crate::state::StateDir;

fn usage(m: impl Into<String>) -> Failure {
    Failure::Usage(m.into())
}

fn address(text: &str, what: &str) -> Result<IpAddr, Failure> {
    text.parse()
        .map_err(|_| usage(format!("{what} {text:?} is not an IPv4 or IPv6 address")))
}

fn network_name(name: &str) -> Result<String, Failure> {
    // libvirt's own rule is looser; these are the names libvirt users write, and nothing else can
    // end up in messages or state.
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(name.to_string())
    } else {
        Err(usage(format!("{name:?} is not a libvirt network name")))
    }
}

/// The request described by `spec` and `ports`.
fn request(spec: &ForwardSpec, ports: &str) -> Result<AddForward, Failure> {
    let ports: PortMap = ports.parse().map_err(usage)?;
    if spec.domain.is_some() {
        return Err(Failure::Refused(
            "--domain is not supported by this virtzone yet; pass --network and --guest (docs/forwards.md)"
                .into(),
        ));
    }
    let (Some(network), Some(guest)) = (&spec.network, &spec.guest) else {
        return Err(usage("a forward needs --network NET and --guest ADDR"));
    };
    Ok(AddForward {
        network: network_name(network)?,
        guest: address(guest, "guest address")?,
        ports,
        host_address: spec
            .host_address
            .as_deref()
            .map(|a| address(a, "host address"))
            .transpose()?,
        from_host: spec.from_host,
        hairpin: spec.hairpin,
        route_localnet: spec.route_localnet,
    })
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
            out!("{}", forward::add_forward(&state, req).await?);
        }
        ForwardAction::Remove {
            spec,
            target,
            state_dir,
        } => {
            let given = spec.network.is_some() || spec.guest.is_some() || spec.domain.is_some();
            let which = if given {
                Which::Spec(request(&spec, &target)?)
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
    network: String,
    guest: IpAddr,
    proto: String,
    host_port: String,
    guest_port: String,
    host_address: Option<IpAddr>,
    from_host: bool,
    hairpin: bool,
    /// `active` while the network runs, `inactive` while it is stopped or unknown.
    state: &'static str,
}

fn list_forwards(state: &StateDir, json: bool) -> Result<(), Failure> {
    let declared = forward::read_declared(state)?;
    let networks = forward::read_networks(state)?;
    let rows: Vec<ForwardRow> = declared
        .forwards
        .iter()
        .map(|f| ForwardRow {
            id: f.id,
            network: f.network.clone(),
            guest: f.guest,
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
        })
        .collect();
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
        out!(
            "{:<4} {:<16} {:<24} {:<18} {:<18} {}",
            r.id,
            r.network,
            r.guest,
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
    network: String,
    what: String,
}

fn list_allows(state: &StateDir, json: bool) -> Result<(), Failure> {
    let declared = forward::read_declared(state)?;
    let rows: Vec<AllowRow> = declared
        .allows
        .iter()
        .map(|a| AllowRow {
            network: a.network.clone(),
            what: a.opening.to_string(),
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
