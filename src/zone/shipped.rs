//! The zones and policies virtzone ships (`zones/*.xml`, `zones/policies/*.xml`), built into the
//! binary so `install` works without the files on disk.
//!
//! They mean the same as libvirt's own files (`src/network/libvirt*.zone|policy` in libvirt):
//! zone `libvirt` (target ACCEPT, the host services guests need, a priority-32767 reject), zone
//! `libvirt-routed` (empty) and the policies `libvirt-routed-in`, `libvirt-routed-out` and
//! `libvirt-to-host` around it. The tests assert every one of those properties.

use super::{parse_policy, parse_zone, Policy, Zone};

/// `(name, xml)` of every shipped zone.
pub const SHIPPED_ZONES: &[(&str, &str)] = &[
    ("libvirt", include_str!("../../zones/libvirt.xml")),
    (
        "libvirt-routed",
        include_str!("../../zones/libvirt-routed.xml"),
    ),
];

/// `(name, xml)` of every shipped policy.
pub const SHIPPED_POLICIES: &[(&str, &str)] = &[
    (
        "libvirt-routed-in",
        include_str!("../../zones/policies/libvirt-routed-in.xml"),
    ),
    (
        "libvirt-routed-out",
        include_str!("../../zones/policies/libvirt-routed-out.xml"),
    ),
    (
        "libvirt-to-host",
        include_str!("../../zones/policies/libvirt-to-host.xml"),
    ),
];

/// The shipped zone `name`, if there is one.
///
/// # Panics
/// If the embedded file does not parse: the test suite checks every shipped file, so that is a
/// build that should never have been released.
pub fn try_shipped_zone(name: &str) -> Option<Zone> {
    let (_, xml) = SHIPPED_ZONES.iter().find(|(n, _)| *n == name)?;
    Some(parse_zone(name, xml).unwrap_or_else(|e| panic!("shipped zones/{name}.xml: {e}")))
}

/// The shipped policy `name`, if there is one.
///
/// # Panics
/// If the embedded file does not parse (see [`try_shipped_zone`]).
pub fn try_shipped_policy(name: &str) -> Option<Policy> {
    let (_, xml) = SHIPPED_POLICIES.iter().find(|(n, _)| *n == name)?;
    Some(
        parse_policy(name, xml)
            .unwrap_or_else(|e| panic!("shipped zones/policies/{name}.xml: {e}")),
    )
}

/// The shipped zone `name`.
///
/// # Panics
/// If `name` is not one of [`SHIPPED_ZONES`]: that is a programming error, not a user's.
pub fn shipped_zone(name: &str) -> Zone {
    match try_shipped_zone(name) {
        Some(z) => z,
        None => panic!("'{name}' is not a zone virtzone ships"),
    }
}

/// The shipped policy `name`.
///
/// # Panics
/// If `name` is not one of [`SHIPPED_POLICIES`]: that is a programming error, not a user's.
pub fn shipped_policy(name: &str) -> Policy {
    match try_shipped_policy(name) {
        Some(p) => p,
        None => panic!("'{name}' is not a policy virtzone ships"),
    }
}

/// Every shipped zone, parsed.
pub fn shipped_zones() -> Vec<Zone> {
    SHIPPED_ZONES.iter().map(|(n, _)| shipped_zone(n)).collect()
}

/// Every shipped policy, parsed.
pub fn shipped_policies() -> Vec<Policy> {
    SHIPPED_POLICIES
        .iter()
        .map(|(n, _)| shipped_policy(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_parses() {
        for (name, xml) in SHIPPED_ZONES {
            if let Err(e) = parse_zone(name, xml) {
                panic!("{e}");
            }
        }
        for (name, xml) in SHIPPED_POLICIES {
            if let Err(e) = parse_policy(name, xml) {
                panic!("{e}");
            }
        }
    }
}
