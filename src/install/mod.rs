//! Installing and uninstalling virtzone's zones and policies: live over D-Bus into a running firewalld,
//! or as files into a firewalld configuration tree (packaging, or firewalld not running).

pub mod files;
pub mod live;
pub mod plan;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use plan::{
    plan_install, plan_live_install, plan_live_uninstall, plan_uninstall, Action, Existing, Item,
    Kind, ObjectsPlan, Origin, Present,
};

/// The state file recording what virtzone added to firewalld.
pub const INSTALLED_FILE: &str = "installed.json";

/// What virtzone added to firewalld's permanent configuration (and so may remove again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Zones virtzone added.
    #[serde(default)]
    pub zones: BTreeSet<String>,
    /// Policies virtzone added.
    #[serde(default)]
    pub policies: BTreeSet<String>,
}

impl Installed {
    fn set(&mut self, kind: Kind) -> &mut BTreeSet<String> {
        match kind {
            Kind::Zone => &mut self.zones,
            Kind::Policy => &mut self.policies,
        }
    }

    /// Whether virtzone added `name`.
    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Zone => self.zones.contains(name),
            Kind::Policy => self.policies.contains(name),
        }
    }

    /// Records `name` as added by virtzone.
    pub fn insert(&mut self, kind: Kind, name: &str) {
        self.set(kind).insert(name.to_string());
    }

    /// Forgets `name`.
    pub fn remove(&mut self, kind: Kind, name: &str) {
        self.set(kind).remove(name);
    }
}

/// Why an install or uninstall did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Refused or failed, said in full (exit status 1).
    #[error("{0}")]
    Refused(String),
    /// firewalld failed a call.
    #[error("{0}")]
    Firewalld(#[from] crate::firewalld::Error),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] crate::state::StateError),
}

impl From<crate::change::Refusal> for InstallError {
    fn from(r: crate::change::Refusal) -> Self {
        InstallError::Refused(r.message)
    }
}
