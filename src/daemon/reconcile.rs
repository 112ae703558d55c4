//! What a reconcile must send to firewalld, decided from the desired and actual bindings.

use std::collections::BTreeMap;

use crate::bind::Bindings;
use crate::names::{BridgeName, ZoneName};

/// The calls a reconcile sends, and what it leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bindings firewalld lost (a reload or restart): bind again.
    pub apply: Vec<(BridgeName, ZoneName)>,
    /// Bridges someone moved to another zone: reported, not fought over (bridge, wanted, actual).
    pub drift: Vec<(BridgeName, ZoneName, String)>,
    /// Bindings already in place.
    pub in_place: usize,
}

/// Compares the desired bindings with firewalld's interface → zone map.
pub fn plan(desired: &Bindings, actual: &BTreeMap<String, String>) -> Plan {
    let mut plan = Plan::default();
    for (bridge, binding) in &desired.bindings {
        match actual.get(bridge.as_str()) {
            None => plan.apply.push((bridge.clone(), binding.zone.clone())),
            Some(zone) if zone == binding.zone.as_str() => plan.in_place += 1,
            Some(zone) => plan
                .drift
                .push((bridge.clone(), binding.zone.clone(), zone.clone())),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bind::Binding;

    #[test]
    fn only_missing_bindings_are_sent() {
        let mut desired = Bindings::default();
        for (b, z) in [
            ("virbr0", "libvirt"),
            ("virbr1", "libvirt-routed"),
            ("virbr2", "libvirt"),
        ] {
            desired.bindings.insert(
                BridgeName::new(b).unwrap(),
                Binding {
                    zone: ZoneName::new(z).unwrap(),
                    permanent: false,
                    network: None,
                },
            );
        }
        let actual = BTreeMap::from([
            ("virbr0".to_string(), "libvirt".to_string()),
            ("virbr2".to_string(), "public".to_string()),
            ("eth0".to_string(), "public".to_string()),
        ]);
        let p = plan(&desired, &actual);
        assert_eq!(p.in_place, 1);
        assert_eq!(
            p.apply,
            vec![(
                BridgeName::new("virbr1").unwrap(),
                ZoneName::libvirt_routed()
            )]
        );
        assert_eq!(
            p.drift,
            vec![(
                BridgeName::new("virbr2").unwrap(),
                ZoneName::libvirt(),
                "public".to_string()
            )]
        );
        assert_eq!(plan(&Bindings::default(), &actual), Plan::default());
    }
}
