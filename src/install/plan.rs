//! What `install` and `uninstall` should do, decided from facts alone.
//!
//! The rules: never touch an object that exists already (it may carry an admin's changes, or belong to
//! libvirt's package); refuse firewalld versions that cannot load the `libvirt` zone; install only what
//! the version can load; remove only what virtzone added and nobody changed since.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::firewalld::Capabilities;
use crate::{LIBVIRT_ROUTED_ZONE, LIBVIRT_ZONE};

/// A zone or a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A zone (`zones/NAME.xml`).
    Zone,
    /// A policy (`policies/NAME.xml`).
    Policy,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Zone => "zone",
            Kind::Policy => "policy",
        })
    }
}

/// Who put an existing object there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// virtzone added it (its state file says so).
    Virtzone,
    /// A package ships it in firewalld's stock tier (`/usr/lib/firewalld`), e.g. libvirt's.
    Package,
    /// It lives in `/etc/firewalld` and virtzone did not add it: an admin's (possibly overriding a
    /// package's copy).
    Admin,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Virtzone => "installed by virtzone",
            Origin::Package => "from a package",
            Origin::Admin => "an admin's",
        })
    }
}

/// An object that exists already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    /// Where it comes from.
    pub origin: Origin,
    /// How it differs from virtzone's definition (empty: same meaning).
    pub differences: Vec<String>,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Zone or policy.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// What to do with it.
    pub action: Action,
}

/// What to do with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Add virtzone's definition.
    Add,
    /// Remove it (uninstall).
    Remove,
    /// Leave it alone: it exists already.
    Keep {
        /// Who put it there.
        origin: Origin,
        /// How it differs from virtzone's definition.
        differences: Vec<String>,
    },
    /// Not for this firewalld, or not virtzone's to remove.
    Skip {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = (self.kind, &self.name);
        match &self.action {
            Action::Add => write!(f, "{kind} {name}: added"),
            Action::Remove => write!(f, "{kind} {name}: removed"),
            Action::Keep { origin, differences } if differences.is_empty() => {
                write!(f, "{kind} {name}: already present ({origin}), same as virtzone's")
            }
            Action::Keep { origin, differences } => write!(
                f,
                "{kind} {name}: already present ({origin}), kept as it is; it differs from virtzone's: {}",
                differences.join("; ")
            ),
            Action::Skip { reason } => write!(f, "{kind} {name}: skipped, {reason}"),
        }
    }
}

/// The objects virtzone ships, in install order (zones before the policies that name them).
pub const SHIPPED: [(Kind, &str); 5] = [
    (Kind::Zone, LIBVIRT_ZONE),
    (Kind::Zone, LIBVIRT_ROUTED_ZONE),
    (Kind::Policy, "libvirt-routed-in"),
    (Kind::Policy, "libvirt-routed-out"),
    (Kind::Policy, "libvirt-to-host"),
];

/// Existing objects by kind and name.
pub type Existing = BTreeMap<(Kind, String), Present>;

/// Plans an install. `firewalld` is the target's version text and capabilities, when known (not for a
/// packaging `--root`). `Err` is the refusal, said in full.
pub fn plan_install(
    firewalld: Option<(&str, Capabilities)>,
    existing: &Existing,
) -> Result<Vec<Item>, String> {
    if let Some((version, caps)) = firewalld {
        if !caps.rule_priorities {
            return Err(format!(
                "firewalld {version} cannot load the {LIBVIRT_ZONE} zone: its catch-all reject needs rich-rule \
                 priorities (firewalld 0.7.0 or later), and an older firewalld skips such a zone file \
                 (or, from 1.2.0 on, fails to start with it); upgrade firewalld, or set \
                 FirewallBackend=iptables in /etc/firewalld/firewalld.conf so libvirt's own rules carry guest \
                 traffic; nothing was written"
            ));
        }
    }
    let policies = firewalld.is_none_or(|(_, caps)| caps.policies);
    Ok(SHIPPED
        .iter()
        .map(|&(kind, name)| {
            let action = if let Some(p) = existing.get(&(kind, name.to_string())) {
                Action::Keep { origin: p.origin, differences: p.differences.clone() }
            } else if !policies && (kind == Kind::Policy || name == LIBVIRT_ROUTED_ZONE) {
                Action::Skip {
                    reason: format!(
                        "it needs firewalld 0.9.0 or later (policies); routed networks fall back to the {LIBVIRT_ZONE} zone"
                    ),
                }
            } else {
                Action::Add
            };
            Item { kind, name: name.to_string(), action }
        })
        .collect())
}

/// Plans an uninstall: remove what virtzone added and nobody changed, policies before zones.
///
/// `bound` maps each zone to the interfaces bound to it. Removing a zone that still holds bridges would
/// drop them into the default zone, so that is refused unless `force`.
pub fn plan_uninstall(
    existing: &Existing,
    bound: &BTreeMap<String, Vec<String>>,
    force: bool,
) -> Result<Vec<Item>, String> {
    let mut items: Vec<Item> = SHIPPED
        .iter()
        .rev()
        .map(|&(kind, name)| {
            let action = match existing.get(&(kind, name.to_string())) {
                None => Action::Skip { reason: "not present".into() },
                Some(Present { origin: Origin::Virtzone, differences }) if differences.is_empty() => Action::Remove,
                Some(Present { origin: Origin::Virtzone, differences }) => Action::Skip {
                    reason: format!(
                        "it has changes made after virtzone installed it ({}); remove it yourself with \
                         `firewall-cmd --permanent --delete-{kind}={name}` if you no longer need them",
                        differences.join("; ")
                    ),
                },
                Some(Present { origin, .. }) => Action::Skip { reason: format!("it is {origin}, not virtzone's") },
            };
            Item { kind, name: name.to_string(), action }
        })
        .collect();
    let busy: Vec<String> = items
        .iter()
        .filter(|i| i.kind == Kind::Zone && i.action == Action::Remove)
        .filter_map(|i| {
            bound
                .get(&i.name)
                .filter(|ifaces| !ifaces.is_empty())
                .map(|ifaces| (i, ifaces))
        })
        .map(|(i, ifaces)| format!("zone {} still holds {}", i.name, ifaces.join(", ")))
        .collect();
    if !busy.is_empty() && !force {
        return Err(format!(
            "refusing to uninstall: {}; detach those bridges first (virtzone detach BRIDGE) or pass --force",
            busy.join("; ")
        ));
    }
    // Keep the uninstall order stable for output: policies first (they name the zones).
    items.sort_by_key(|i| (i.kind == Kind::Zone, i.name.clone()));
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewalld::{parse_version, Capabilities};

    fn caps(v: &str) -> Capabilities {
        Capabilities::of(&parse_version(v).unwrap())
    }

    fn actions(items: &[Item]) -> Vec<(String, &Action)> {
        items.iter().map(|i| (i.name.clone(), &i.action)).collect()
    }

    #[test]
    fn fresh_install_adds_everything() {
        for v in ["0.9.0", "1.3.3", "2.3.1"] {
            let items = plan_install(Some((v, caps(v))), &Existing::new()).unwrap();
            assert!(
                items.iter().all(|i| i.action == Action::Add),
                "{v}: {items:?}"
            );
            assert_eq!(items[0].name, "libvirt");
        }
        let items = plan_install(None, &Existing::new()).unwrap();
        assert_eq!(items.len(), 5);
    }

    #[test]
    fn old_versions() {
        for v in ["0.4.4.6", "0.6.4", "0.6.99"] {
            let err = plan_install(Some((v, caps(v))), &Existing::new()).unwrap_err();
            assert!(
                err.contains("rich-rule priorities") && err.contains("nothing was written"),
                "{err}"
            );
        }
        for v in ["0.7.0", "0.8.0", "0.8.3"] {
            let items = plan_install(Some((v, caps(v))), &Existing::new()).unwrap();
            assert_eq!(items[0].action, Action::Add);
            for i in &items[1..] {
                assert!(
                    matches!(&i.action, Action::Skip { reason } if reason.contains("fall back")),
                    "{v}: {i:?}"
                );
            }
        }
    }

    #[test]
    fn existing_objects_are_kept() {
        let mut existing = Existing::new();
        existing.insert(
            (Kind::Zone, "libvirt".into()),
            Present {
                origin: Origin::Package,
                differences: vec![],
            },
        );
        existing.insert(
            (Kind::Policy, "libvirt-to-host".into()),
            Present {
                origin: Origin::Admin,
                differences: vec!["extra port 8080/tcp".into()],
            },
        );
        let items = plan_install(Some(("1.3.3", caps("1.3.3"))), &existing).unwrap();
        let text: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            text[0],
            "zone libvirt: already present (from a package), same as virtzone's"
        );
        assert_eq!(text[1], "zone libvirt-routed: added");
        assert!(
            text[4].contains("an admin's") && text[4].contains("extra port 8080/tcp"),
            "{}",
            text[4]
        );
    }

    #[test]
    fn uninstall_removes_only_unchanged_virtzone_objects() {
        let mut existing = Existing::new();
        let ours = Present {
            origin: Origin::Virtzone,
            differences: vec![],
        };
        existing.insert(
            (Kind::Zone, "libvirt".into()),
            Present {
                origin: Origin::Package,
                differences: vec![],
            },
        );
        existing.insert((Kind::Zone, "libvirt-routed".into()), ours.clone());
        existing.insert((Kind::Policy, "libvirt-routed-in".into()), ours.clone());
        existing.insert(
            (Kind::Policy, "libvirt-to-host".into()),
            Present {
                origin: Origin::Virtzone,
                differences: vec!["extra service http".into()],
            },
        );
        let items = plan_uninstall(&existing, &BTreeMap::new(), false).unwrap();
        let acts = actions(&items);
        assert_eq!(acts[0], ("libvirt-routed-in".into(), &Action::Remove));
        assert!(matches!(acts[1].1, Action::Skip { reason } if reason == "not present"));
        assert!(
            matches!(acts[2].1, Action::Skip { reason } if reason.contains("extra service http"))
        );
        assert_eq!(
            acts[3],
            (
                "libvirt".into(),
                &Action::Skip {
                    reason: "it is from a package, not virtzone's".into()
                }
            )
        );
        assert_eq!(acts[4], ("libvirt-routed".into(), &Action::Remove));
    }

    #[test]
    fn uninstall_refuses_bound_zones_unless_forced() {
        let mut existing = Existing::new();
        existing.insert(
            (Kind::Zone, "libvirt".into()),
            Present {
                origin: Origin::Virtzone,
                differences: vec![],
            },
        );
        let bound = BTreeMap::from([("libvirt".to_string(), vec!["virbr0".to_string()])]);
        let err = plan_uninstall(&existing, &bound, false).unwrap_err();
        assert!(
            err.contains("zone libvirt still holds virbr0") && err.contains("--force"),
            "{err}"
        );
        assert!(plan_uninstall(&existing, &bound, true).is_ok());
        // Bridges in a zone virtzone would not remove anyway are no reason to refuse.
        existing.insert(
            (Kind::Zone, "libvirt".into()),
            Present {
                origin: Origin::Package,
                differences: vec![],
            },
        );
        assert!(plan_uninstall(&existing, &bound, false).is_ok());
    }
}
