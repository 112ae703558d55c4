//! The zone and policy XML model: firewalld's zones and policies as typed values.
//!
//! - [`parse_zone`] / [`parse_policy`] read XML (firewalld 1.x–2.x) and check it as firewalld
//!   would, refusing also what firewalld would only warn about and silently drop.
//! - [`Zone::to_xml`] / [`Policy::to_xml`] write it back in firewalld's layout.
//! - [`Zone::to_settings`] / [`Zone::from_settings`] (and the same for [`Policy`]) convert to and
//!   from the D-Bus settings dicts of `addZone2`, `getSettings2`, `update2`, `addPolicy`, …
//! - [`Zone::diff`] / [`Zone::same_meaning`] compare behaviour, ignoring order and wording.
//! - [`shipped`] holds the zones and policies virtzone installs.

mod check;
mod diff;
mod error;
mod model;
mod netdb;
mod rich;
mod settings;
pub mod shipped;
mod xml;

use std::path::Path;

pub use check::{
    PortProtocol, PortRange, MAX_IPSET_NAME_LEN, MAX_POLICY_NAME_LEN, MAX_ZONE_NAME_LEN,
    PRIORITY_MAX, PRIORITY_MIN,
};
pub use error::{ErrorCode, ObjectKind, ZoneError};
pub use model::{
    Body, ForwardPort, Policy, PolicyTarget, Port, Zone, ZoneSource, ZoneTarget, ANY,
    DEFAULT_POLICY_PRIORITY, HOST,
};
pub use rich::{
    ActionKind, Family, Limit, RichRule, RuleAction, RuleAudit, RuleDestination, RuleElement,
    RuleLog, RuleSource,
};
pub use settings::{Settings, POLICY_KEYS, ZONE_KEYS};
pub use shipped::{
    shipped_names, shipped_policy, shipped_text, shipped_zone, ShippedObject, SHIPPED,
    SHIPPED_OBJECTS, SHIPPED_POLICIES, SHIPPED_ZONES,
};
pub use xml::{parse_policy, parse_zone};

/// The object name firewalld derives from a file path (`zones/libvirt.xml` → `libvirt`).
fn name_from_path(kind: ObjectKind, path: &Path) -> Result<String, ZoneError> {
    let file = path.display().to_string();
    match path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".xml"))
    {
        Some(n) => Ok(n.to_string()),
        None => Err(ZoneError::new(
            kind,
            &file,
            ErrorCode::InvalidName,
            "",
            format!("'{file}' is missing .xml suffix"),
        )
        .with_file(file.clone())),
    }
}

fn read(kind: ObjectKind, name: &str, path: &Path) -> Result<String, ZoneError> {
    std::fs::read_to_string(path).map_err(|e| {
        ZoneError::new(
            kind,
            name,
            ErrorCode::ParseError,
            "",
            format!("cannot read it: {e}"),
        )
        .with_file(path.display().to_string())
    })
}

/// Reads a zone file; the zone name is the file name without `.xml`, errors name the file.
pub fn parse_zone_file(path: &Path) -> Result<Zone, ZoneError> {
    let name = name_from_path(ObjectKind::Zone, path)?;
    let xml = read(ObjectKind::Zone, &name, path)?;
    parse_zone(&name, &xml).map_err(|e| e.with_file(path.display().to_string()))
}

/// Reads a policy file; the policy name is the file name without `.xml`, errors name the file.
pub fn parse_policy_file(path: &Path) -> Result<Policy, ZoneError> {
    let name = name_from_path(ObjectKind::Policy, path)?;
    let xml = read(ObjectKind::Policy, &name, path)?;
    parse_policy(&name, &xml).map_err(|e| e.with_file(path.display().to_string()))
}

/// firewalld refuses a zone and a policy of the same name (`NAME_CONFLICT`); checks a set of
/// names that will be loaded together.
pub fn check_name_conflicts(zones: &[&str], policies: &[&str]) -> Result<(), ZoneError> {
    match policies.iter().find(|p| zones.contains(p)) {
        Some(name) => Err(ZoneError::new(
            ObjectKind::Policy,
            name,
            ErrorCode::NameConflict,
            "",
            "a policy can't have the same name as a zone",
        )),
        None => Ok(()),
    }
}

impl Zone {
    /// The zone as firewalld zone XML (with the `<?xml …?>` header, two-space indent).
    pub fn to_xml(&self) -> String {
        xml::zone_to_xml(self)
    }
}

impl Policy {
    /// The policy as firewalld policy XML (with the `<?xml …?>` header, two-space indent).
    pub fn to_xml(&self) -> String {
        xml::policy_to_xml(self)
    }
}
