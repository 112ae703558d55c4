//! The record of what virtzone added to firewalld's permanent configuration: the planner reads
//! it, the live install writes it. A leaf, so the planner does not depend on `install/mod.rs`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::zone::ObjectKind as Kind;

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
