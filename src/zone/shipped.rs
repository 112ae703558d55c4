//! The zones and policies virtzone ships (`zones/*.xml`, `zones/policies/*.xml`), built into the
//! binary so `install` works without the files on disk.
//!
//! They mean the same as libvirt's own files (`src/network/libvirt*.zone|policy` in libvirt):
//! zone `libvirt` (target ACCEPT, the host services guests need, a priority-32767 reject), zone
//! `libvirt-routed` (empty) and the policies `libvirt-routed-in`, `libvirt-routed-out` and
//! `libvirt-to-host` around it. The tests assert every one of those properties.

use super::xml::{parse_policy, parse_zone};
use super::{ObjectKind, Policy, Zone};

/// One object virtzone ships: its kind, name and XML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippedObject {
    /// Zone or policy.
    pub kind: ObjectKind,
    /// Its name (the file name without `.xml`).
    pub name: &'static str,
    /// The file's text, byte for byte.
    pub xml: &'static str,
}

/// Every object virtzone ships, in install order (zones before the policies that name them): the one
/// list every other part of virtzone derives its names from.
pub const SHIPPED_OBJECTS: &[ShippedObject] = &[
    ShippedObject {
        kind: ObjectKind::Zone,
        name: crate::LIBVIRT_ZONE,
        xml: include_str!("../../zones/libvirt.xml"),
    },
    ShippedObject {
        kind: ObjectKind::Zone,
        name: crate::LIBVIRT_ROUTED_ZONE,
        xml: include_str!("../../zones/libvirt-routed.xml"),
    },
    ShippedObject {
        kind: ObjectKind::Policy,
        name: "libvirt-routed-in",
        xml: include_str!("../../zones/policies/libvirt-routed-in.xml"),
    },
    ShippedObject {
        kind: ObjectKind::Policy,
        name: crate::LIBVIRT_ROUTED_OUT_POLICY,
        xml: include_str!("../../zones/policies/libvirt-routed-out.xml"),
    },
    ShippedObject {
        kind: ObjectKind::Policy,
        name: "libvirt-to-host",
        xml: include_str!("../../zones/policies/libvirt-to-host.xml"),
    },
];

/// `(kind, name)` of every shipped object, in install order.
pub const SHIPPED: [(ObjectKind, &str); 5] = {
    let o = SHIPPED_OBJECTS;
    [
        (o[0].kind, o[0].name),
        (o[1].kind, o[1].name),
        (o[2].kind, o[2].name),
        (o[3].kind, o[3].name),
        (o[4].kind, o[4].name),
    ]
};

/// `(name, xml)` of every shipped zone (a view of [`SHIPPED_OBJECTS`]).
pub const SHIPPED_ZONES: &[(&str, &str)] = &[
    (SHIPPED_OBJECTS[0].name, SHIPPED_OBJECTS[0].xml),
    (SHIPPED_OBJECTS[1].name, SHIPPED_OBJECTS[1].xml),
];

/// `(name, xml)` of every shipped policy (a view of [`SHIPPED_OBJECTS`]).
pub const SHIPPED_POLICIES: &[(&str, &str)] = &[
    (SHIPPED_OBJECTS[2].name, SHIPPED_OBJECTS[2].xml),
    (SHIPPED_OBJECTS[3].name, SHIPPED_OBJECTS[3].xml),
    (SHIPPED_OBJECTS[4].name, SHIPPED_OBJECTS[4].xml),
];

/// The names of the shipped objects of `kind`, in install order.
pub fn shipped_names(kind: ObjectKind) -> impl Iterator<Item = &'static str> {
    SHIPPED_OBJECTS
        .iter()
        .filter(move |o| o.kind == kind)
        .map(|o| o.name)
}

/// The shipped XML text of an object, if virtzone ships it.
pub fn shipped_text(kind: ObjectKind, name: &str) -> Option<&'static str> {
    SHIPPED_OBJECTS
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .map(|o| o.xml)
}

/// The shipped zone `name`, if there is one.
///
/// # Panics
/// If the embedded file does not parse: the test suite checks every shipped file, so that is a
/// build that should never have been released.
pub fn try_shipped_zone(name: &str) -> Option<Zone> {
    let xml = shipped_text(ObjectKind::Zone, name)?;
    Some(parse_zone(name, xml).unwrap_or_else(|e| panic!("shipped zones/{name}.xml: {e}")))
}

/// The shipped policy `name`, if there is one.
///
/// # Panics
/// If the embedded file does not parse (see [`try_shipped_zone`]).
pub fn try_shipped_policy(name: &str) -> Option<Policy> {
    let xml = shipped_text(ObjectKind::Policy, name)?;
    Some(
        parse_policy(name, xml)
            .unwrap_or_else(|e| panic!("shipped zones/policies/{name}.xml: {e}")),
    )
}

/// The shipped zone `name`.
///
/// # Panics
/// If `name` is not one of [`SHIPPED_OBJECTS`]: that is a programming error, not a user's.
pub fn shipped_zone(name: &str) -> Zone {
    match try_shipped_zone(name) {
        Some(z) => z,
        None => panic!("'{name}' is not a zone virtzone ships"),
    }
}

/// The shipped policy `name`.
///
/// # Panics
/// If `name` is not one of [`SHIPPED_OBJECTS`]: that is a programming error, not a user's.
pub fn shipped_policy(name: &str) -> Policy {
    match try_shipped_policy(name) {
        Some(p) => p,
        None => panic!("'{name}' is not a policy virtzone ships"),
    }
}

/// Every shipped zone, parsed.
pub fn shipped_zones() -> Vec<Zone> {
    shipped_names(ObjectKind::Zone).map(shipped_zone).collect()
}

/// Every shipped policy, parsed.
pub fn shipped_policies() -> Vec<Policy> {
    shipped_names(ObjectKind::Policy)
        .map(shipped_policy)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_parses() {
        for o in SHIPPED_OBJECTS {
            let parsed = match o.kind {
                ObjectKind::Zone => parse_zone(o.name, o.xml).map(drop),
                ObjectKind::Policy => parse_policy(o.name, o.xml).map(drop),
            };
            if let Err(e) = parsed {
                panic!("{e}");
            }
        }
        let zones: Vec<&str> = shipped_names(ObjectKind::Zone).collect();
        let policies: Vec<&str> = shipped_names(ObjectKind::Policy).collect();
        assert_eq!(zones, ["libvirt", "libvirt-routed"]);
        let views: Vec<&str> = SHIPPED_ZONES
            .iter()
            .chain(SHIPPED_POLICIES)
            .map(|(n, _)| *n)
            .collect();
        let all: Vec<&str> = SHIPPED_OBJECTS.iter().map(|o| o.name).collect();
        assert_eq!(views, all);
        assert_eq!(
            policies,
            ["libvirt-routed-in", "libvirt-routed-out", "libvirt-to-host"]
        );
    }
}
