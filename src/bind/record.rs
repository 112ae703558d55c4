//! The record of the bindings virtzone was asked for (`bindings.json` in the state directory), which
//! the daemon re-applies after firewalld reloads and restarts. Plain data, shared by the planners and
//! the effects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{BridgeName, NetworkName, ZoneName};

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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::names::recorded_network"
    )]
    pub network: Option<NetworkName>,
    /// The NetworkManager profile whose `connection.zone` holds the binding; absent: firewalld's
    /// path (and in every record written before NetworkManager was understood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkmanager: Option<NmBinding>,
    /// The drop-in file declaring it (`virtzone apply`), `None` for the CLI's and the hook's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A binding held by a NetworkManager profile (see [`plan_attach_nm`](super::plan::plan_attach_nm)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NmBinding {
    /// `connection.uuid`.
    pub uuid: String,
    /// `connection.id` when bound, for messages.
    pub profile: String,
    /// `connection.zone` before virtzone set it (empty: NetworkManager's default placement): what
    /// detach restores.
    #[serde(default)]
    pub previous: String,
}

/// All bindings virtzone manages, by bridge. Names are validated when the file is read, so a
/// hand-edited file cannot smuggle an invalid name into firewalld calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bindings {
    /// bridge → binding.
    #[serde(default)]
    pub bindings: BTreeMap<BridgeName, Binding>,
}
