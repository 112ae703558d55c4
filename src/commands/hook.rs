//! `virtzone hook network NAME OP SUBOP [EXTRA]`: libvirt's network hook.
//!
//! `start begin` runs the pre-check (a non-zero exit aborts `virsh net-start`, and libvirt shows our
//! stderr to the user); `started begin` binds the new bridge to the zone libvirt's rules choose;
//! `stopped end` unbinds it. The other operations need nothing from virtzone.

use std::io::Read;
use std::process::ExitCode;

use super::{check, Failure};
use crate::bind::{self, Attach, Bindings, BINDINGS_FILE};
use crate::firewalld::{gather_facts, Firewalld, FirewalldFacts};
use crate::libvirt::parse_network_xml;
use crate::names::BridgeName;
use crate::precheck::{self, Request};
use crate::state::StateDir;

/// hookData is a network's live XML; more than this is not libvirt talking.
const MAX_HOOK_DATA: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Started,
    Stopped,
    Ignored,
}

/// Maps libvirt's OP SUBOP to what virtzone does. Operations virtzone has no business with (today's
/// `port-created`, `updated`, …, and whatever a later libvirt adds) succeed silently, so they never fail a
/// network operation; only arguments that cannot be libvirt's are refused.
fn op_of(op: &str, subop: &str) -> Result<Op, Failure> {
    let word =
        !op.is_empty() && op.len() <= 32 && op.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    if !word || !matches!(subop, "begin" | "end") {
        return Err(Failure::Usage(format!(
            "{op:?} {subop:?} is not a libvirt network hook operation (expected e.g. \"start begin\")"
        )));
    }
    Ok(match (op, subop) {
        ("start", "begin") => Op::Start,
        ("started", "begin") => Op::Started,
        ("stopped", "end") => Op::Stopped,
        _ => Op::Ignored,
    })
}

pub async fn run(
    object: &str,
    name: &str,
    op: &str,
    subop: &str,
    extra: Option<&str>,
) -> Result<ExitCode, Failure> {
    if object != "network" {
        return Err(Failure::Usage(format!(
            "virtzone handles libvirt's network hook only, not {object:?}"
        )));
    }
    let op = op_of(op, subop)?;
    if extra.is_some_and(|e| e != "-") {
        return Err(Failure::Usage(format!(
            "unexpected extra hook argument {:?} (libvirt passes \"-\")",
            extra.unwrap_or("")
        )));
    }
    let mut xml = String::new();
    std::io::stdin()
        .take(MAX_HOOK_DATA + 1)
        .read_to_string(&mut xml)
        .map_err(|e| Failure::Usage(format!("cannot read hookData from standard input: {e}")))?;
    if op == Op::Ignored {
        return Ok(ExitCode::SUCCESS);
    }
    let network =
        parse_network_xml(&xml, None).map_err(|e| Failure::Usage(format!("hookData: {e}")))?;
    if network.name != name {
        return Err(Failure::Usage(format!(
            "hookData describes network {:?}, but the hook was called for network {name:?}",
            network.name
        )));
    }
    let state = StateDir::locate(None);
    if op == Op::Stopped {
        return stopped(&state, network.bridge).await;
    }
    // `start` and `started`: the zone libvirt's rules give this network on this firewalld.
    let facts = gather_facts().await?;
    let verdict = precheck::decide(
        &Request {
            network: &network,
            zone: None,
        },
        &facts,
    );
    if op == Op::Start {
        return check::report(&network, &verdict, false);
    }
    if !verdict.ok {
        return Err(Failure::Refused(verdict.message));
    }
    let (Some(zone), Some(bridge), FirewalldFacts::Running(_)) =
        (verdict.zone, network.bridge, facts)
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let fw = Firewalld::connect().await?;
    // The network's definition decides its own bridge's zone, so an earlier zone is replaced.
    let req = Attach {
        bridge,
        zone,
        permanent: false,
        force: true,
        network: Some(network.name.clone()),
    };
    out!("{}", bind::attach(&fw, &state, &req).await?);
    Ok(ExitCode::SUCCESS)
}

/// `stopped end`: unbinds the bridge if virtzone bound it.
async fn stopped(state: &StateDir, bridge: Option<BridgeName>) -> Result<ExitCode, Failure> {
    let Some(bridge) = bridge else {
        return Ok(ExitCode::SUCCESS);
    };
    let managed = state
        .read::<Bindings>(BINDINGS_FILE)
        .map_err(|e| Failure::Refused(e.to_string()))?
        .bindings
        .contains_key(&bridge);
    if !managed {
        return Ok(ExitCode::SUCCESS);
    }
    match gather_facts().await? {
        FirewalldFacts::Running(_) => {
            let fw = Firewalld::connect().await?;
            out!("{}", bind::detach(&fw, state, &bridge, false, false).await?);
        }
        FirewalldFacts::NotRunning { .. } => out!("{}", bind::forget(state, &bridge).await?),
    }
    Ok(ExitCode::SUCCESS)
}
