//! Binding bridges to zones: the decisions (`plan`), the record of what virtzone bound (kept in the
//! state directory so the daemon can re-apply it after firewalld reloads), and the effects.

pub mod plan;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::firewalld::{self, Firewalld};
use crate::names::{BridgeName, ZoneName};
use crate::state::{StateDir, StateError};

/// The state file holding the bindings virtzone was asked for.
pub const BINDINGS_FILE: &str = "bindings.json";

/// One binding virtzone was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The zone.
    pub zone: ZoneName,
    /// Also bound in firewalld's permanent configuration.
    #[serde(default)]
    pub permanent: bool,
    /// The libvirt network whose bridge this is, when the hook bound it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// All bindings virtzone manages, by bridge. Names are validated when the file is read, so a
/// hand-edited file cannot smuggle an invalid name into firewalld calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bindings {
    /// bridge → binding.
    #[serde(default)]
    pub bindings: BTreeMap<BridgeName, Binding>,
}

/// Why a bind operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Refused, said in full (exit status 1).
    #[error("{0}")]
    Refused(String),
    /// firewalld failed a call.
    #[error("{0}")]
    Firewalld(#[from] firewalld::Error),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] StateError),
}

/// An attach request.
#[derive(Debug, Clone)]
pub struct Attach {
    /// The bridge.
    pub bridge: BridgeName,
    /// The zone.
    pub zone: ZoneName,
    /// Also bind in the permanent configuration.
    pub permanent: bool,
    /// Move the bridge even out of a zone virtzone did not set.
    pub force: bool,
    /// The libvirt network, when the hook asks.
    pub network: Option<String>,
}

/// Binds a bridge to a zone and records it. Either all of it happens, or firewalld and the record stay
/// as they were.
pub async fn attach(fw: &Firewalld, state: &StateDir, req: &Attach) -> Result<String, BindError> {
    let _lock = state.lock().await?;
    let mut bindings: Bindings = state.read(BINDINGS_FILE)?;
    let (zones, actual) = tokio::try_join!(fw.zones(), fw.zone_of_interface(req.bridge.as_str()))?;
    let recorded = bindings.bindings.get(&req.bridge).cloned();
    let recorded = recorded.as_ref();
    let facts = plan::Facts {
        actual: actual.as_deref(),
        recorded: recorded.map(|b| b.zone.as_str()),
        zone_exists: zones.contains(req.zone.as_str()),
    };
    let decision =
        plan::attach(&req.bridge, &req.zone, &facts, req.force).map_err(BindError::Refused)?;
    let (bridge, zone) = (req.bridge.as_str(), req.zone.as_str());

    // The permanent side first: a refusal there leaves the runtime untouched.
    let mut permanent_added = false;
    if req.permanent {
        let current = fw.permanent_zone_of_interface(bridge).await?;
        match current.as_deref() {
            Some(z) if z == zone => {}
            Some(other)
                if !req.force
                    && !recorded.is_some_and(|b| b.permanent && b.zone.as_str() == other) =>
            {
                return Err(BindError::Refused(format!(
                    "bridge {bridge} is bound to zone {other} in the permanent configuration, which virtzone did \
                     not set; pass --force to move it to zone {zone}"
                )));
            }
            Some(other) => {
                fw.remove_permanent_interface(other, bridge).await?;
                fw.add_permanent_interface(zone, bridge).await?;
                permanent_added = true;
            }
            None => {
                fw.add_permanent_interface(zone, bridge).await?;
                permanent_added = true;
            }
        }
    }
    if let plan::Attach::Bind { .. } = decision {
        if let Err(e) = fw.change_zone_of_interface(zone, bridge).await {
            if permanent_added {
                let _ = fw.remove_permanent_interface(zone, bridge).await;
            }
            return Err(e.into());
        }
    }
    let message = match &decision {
        plan::Attach::AlreadyBound => format!("bridge {bridge} is already in zone {zone}"),
        plan::Attach::Bind { from: None } => format!("bound bridge {bridge} to zone {zone}"),
        plan::Attach::Bind { from: Some(from) } => {
            format!("moved bridge {bridge} from zone {from} to zone {zone}")
        }
    };
    let permanent = req.permanent || recorded.is_some_and(|b| b.permanent && b.zone == req.zone);
    bindings.bindings.insert(
        req.bridge.clone(),
        Binding {
            zone: req.zone.clone(),
            permanent,
            network: req.network.clone(),
        },
    );
    if let Err(e) = state.write(BINDINGS_FILE, &bindings) {
        // Without the record the binding would be unmanaged: undo it.
        if matches!(decision, plan::Attach::Bind { .. }) {
            let _ = match &facts.actual {
                Some(previous) => fw.change_zone_of_interface(previous, bridge).await,
                None => fw.remove_interface(zone, bridge).await,
            };
        }
        if permanent_added {
            let _ = fw.remove_permanent_interface(zone, bridge).await;
        }
        return Err(e.into());
    }
    Ok(message)
}

/// Unbinds a bridge virtzone bound (any bridge with `force`) and forgets it.
pub async fn detach(
    fw: &Firewalld,
    state: &StateDir,
    bridge: &BridgeName,
    permanent: bool,
    force: bool,
) -> Result<String, BindError> {
    let _lock = state.lock().await?;
    let mut bindings: Bindings = state.read(BINDINGS_FILE)?;
    let actual = fw.zone_of_interface(bridge.as_str()).await?;
    let recorded = bindings.bindings.get(bridge).cloned();
    let facts = plan::Facts {
        actual: actual.as_deref(),
        recorded: recorded.as_ref().map(|b| b.zone.as_str()),
        zone_exists: true,
    };
    let decision = plan::detach(bridge, &facts, force).map_err(BindError::Refused)?;
    let mut notes = Vec::new();
    if permanent {
        if let Some(z) = fw.permanent_zone_of_interface(bridge.as_str()).await? {
            let ours = recorded
                .as_ref()
                .is_some_and(|b| b.permanent && b.zone.as_str() == z);
            if ours || force {
                fw.remove_permanent_interface(&z, bridge.as_str()).await?;
                notes.push(format!(
                    "removed it from zone {z} in the permanent configuration"
                ));
            } else {
                return Err(BindError::Refused(format!(
                    "bridge {bridge} is bound to zone {z} in the permanent configuration, which virtzone did not \
                     set; pass --force to remove that binding anyway"
                )));
            }
        }
    } else if recorded.as_ref().is_some_and(|b| b.permanent) {
        notes.push(
            "it stays bound in the permanent configuration and returns on the next reload; use --permanent to \
             remove that too"
                .to_string(),
        );
    }
    let mut message = match &decision {
        plan::Detach::Unbind { zone } => {
            fw.remove_interface(zone, bridge.as_str()).await?;
            format!("unbound bridge {bridge} from zone {zone}")
        }
        plan::Detach::NotBound if recorded.is_some() => {
            format!("bridge {bridge} is not bound to any zone now; forgot virtzone's binding")
        }
        plan::Detach::NotBound => format!("bridge {bridge} is not bound to any zone; nothing to do"),
        plan::Detach::MovedAway { zone } => format!(
            "bridge {bridge} was moved to zone {zone} by someone else; left it there and forgot virtzone's binding"
        ),
    };
    if !notes.is_empty() {
        message = format!("{message}; {}", notes.join("; "));
    }
    if bindings.bindings.remove(bridge).is_some() {
        state.write(BINDINGS_FILE, &bindings)?;
    }
    Ok(message)
}

/// One row of `virtzone list`: what virtzone was asked for beside what firewalld has.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The bridge.
    pub bridge: BridgeName,
    /// The zone virtzone was asked for.
    pub zone: ZoneName,
    /// Whether it is also bound permanently.
    pub permanent: bool,
    /// The libvirt network, when the hook bound it.
    pub network: Option<String>,
    /// The zone firewalld has it in now (`null`: unbound, or firewalld not running).
    pub actual: Option<String>,
    /// `bound` (as asked), `missing` (unbound: firewalld reloaded or restarted without the daemon
    /// re-applying), `moved` (someone put it in another zone), `unknown` (firewalld not running).
    pub state: RowState,
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

/// Compares recorded bindings with firewalld's interface → zone map (pure).
pub fn compare(bindings: &Bindings, actual: Option<&BTreeMap<String, String>>) -> Vec<Row> {
    bindings
        .bindings
        .iter()
        .map(|(bridge, b)| {
            let now = actual.and_then(|a| a.get(bridge.as_str()).cloned());
            let state = match (actual, &now) {
                (None, _) => RowState::Unknown,
                (Some(_), None) => RowState::Missing,
                (Some(_), Some(z)) if z == b.zone.as_str() => RowState::Bound,
                (Some(_), Some(_)) => RowState::Moved,
            };
            Row {
                bridge: bridge.clone(),
                zone: b.zone.clone(),
                permanent: b.permanent,
                network: b.network.clone(),
                actual: now,
                state,
            }
        })
        .collect()
}

/// firewalld's runtime interface → zone map, in one call.
pub async fn interface_zones(fw: &Firewalld) -> firewalld::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (zone, parts) in fw.active_zones().await? {
        for iface in parts.get("interfaces").into_iter().flatten() {
            map.insert(iface.clone(), zone.clone());
        }
    }
    Ok(map)
}

/// Forgets a binding without asking firewalld (it is not running, so it holds no binding either).
pub async fn forget(state: &StateDir, bridge: &BridgeName) -> Result<String, BindError> {
    let _lock = state.lock().await?;
    let mut bindings: Bindings = state.read(BINDINGS_FILE)?;
    if bindings.bindings.remove(bridge).is_some() {
        state.write(BINDINGS_FILE, &bindings)?;
        return Ok(format!("forgot virtzone's binding of bridge {bridge}"));
    }
    Ok(format!("virtzone had no binding of bridge {bridge}"))
}
