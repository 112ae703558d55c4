//! What `install` and `uninstall` should do, decided from facts alone.
//!
//! The rules: never touch an object that exists already (it may carry an admin's changes, or belong to
//! libvirt's package); refuse firewalld versions that cannot load the `libvirt` zone; install only what
//! the version can load; remove only what virtzone added and nobody changed since.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::change::snapshot::Snapshot;
use crate::change::{Plan, Reason, Refusal, Step};
use crate::firewalld::{Capabilities, Definition, State};
use crate::zone;
use crate::{LIBVIRT_ROUTED_ZONE, LIBVIRT_ZONE};

use super::record::Installed;

/// A zone or a policy: the one object-kind enum of the crate.
pub use crate::zone::ObjectKind as Kind;

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

impl Origin {
    /// Who put an object there, decided in one place for files and for a live firewalld. `ours`: the
    /// object is virtzone's (its bytes are exactly virtzone's file; or virtzone's record says it added
    /// it over D-Bus and it is not firewalld's stock copy). `package_tier`: it lives in firewalld's stock
    /// tier. virtzone's own wins, then the tier decides.
    pub fn classify(ours: bool, package_tier: bool) -> Self {
        match (ours, package_tier) {
            (true, _) => Origin::Virtzone,
            (false, true) => Origin::Package,
            (false, false) => Origin::Admin,
        }
    }
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
pub use crate::zone::SHIPPED;

/// Existing objects by kind and name.
pub type Existing = BTreeMap<(Kind, String), Present>;

/// Plans an install. `firewalld` is the target's version text and capabilities, when known (not for a
/// packaging `--root`). `Err` is the refusal, said in full.
pub fn plan_install(
    firewalld: Option<(&str, Capabilities)>,
    existing: &Existing,
) -> Result<Vec<Item>, Refusal> {
    if let Some((version, caps)) = firewalld {
        if !caps.rule_priorities {
            return Err(Refusal::new(Reason::FirewalldTooOld, format!(
                "firewalld {version} cannot load the {LIBVIRT_ZONE} zone: its catch-all reject needs rich-rule \
                 priorities (firewalld 0.7.0 or later), and an older firewalld skips such a zone file \
                 (or, from 1.2.0 on, fails to start with it); upgrade firewalld, or set \
                 FirewallBackend=iptables in /etc/firewalld/firewalld.conf so libvirt's own rules carry guest \
                 traffic; nothing was written"
            )));
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
) -> Result<Vec<Item>, Refusal> {
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
        return Err(Refusal::new(
            Reason::ZoneInUse,
            format!(
                "refusing to uninstall: {}; detach those bridges first (virtzone detach BRIDGE) or pass --force",
                busy.join("; ")
            ),
        ));
    }
    // Keep the uninstall order stable for output: policies first (they name the zones).
    items.sort_by_key(|i| (i.kind == Kind::Zone, i.name.clone()));
    Ok(items)
}

/// The shipped objects a live firewalld holds permanently, with origin and differences.
pub fn existing_in(snap: &Snapshot, installed: &Installed) -> Existing {
    snap.shipped
        .iter()
        .map(|((kind, name), object)| {
            let ours = installed.contains(*kind, name) && !object.builtin;
            (
                (*kind, name.clone()),
                Present {
                    origin: Origin::classify(ours, object.builtin),
                    differences: object.differences(name),
                },
            )
        })
        .collect()
}

/// The facts of a running firewalld that can take changes, or why it cannot.
fn writable(snap: &Snapshot) -> Result<(&str, Capabilities), Refusal> {
    match snap.running() {
        None => Err(Refusal::new(
            Reason::FirewalldNotRunning,
            "firewalld is not running",
        )),
        Some(r) if r.state == State::Failed => Err(Refusal::new(
            Reason::FirewalldFailed,
            format!(
                "firewalld {} is in FAILED state: fix its configuration first (see `journalctl -u firewalld`), \
                 then run `firewall-cmd --reload`; nothing was changed",
                r.version_text
            ),
        )),
        Some(r) => Ok((&r.version_text, r.capabilities)),
    }
}

/// A planned install or uninstall: one item per shipped object (what the user reads) and the steps.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectsPlan {
    /// One item per shipped object.
    pub items: Vec<Item>,
    /// The steps, ending in a reload when anything changes and a reload is wanted.
    pub plan: Plan,
}

/// Plans a live install from a snapshot gathered with [`Scope::shipped`](crate::change::snapshot::Scope).
pub fn plan_live_install(
    snap: &Snapshot,
    installed: &Installed,
    reload: bool,
) -> Result<ObjectsPlan, Refusal> {
    let target = writable(snap)?;
    let items = plan_install(Some(target), &existing_in(snap, installed))?;
    let mut plan = Plan::default();
    for item in items.iter().filter(|i| i.action == Action::Add) {
        plan.steps.push(match item.kind {
            Kind::Zone => Step::AddZone(zone::shipped_zone(&item.name)),
            Kind::Policy => Step::AddPolicy(zone::shipped_policy(&item.name)),
        });
    }
    if reload && !plan.is_empty() {
        plan.steps.push(Step::Reload);
    }
    Ok(ObjectsPlan { items, plan })
}

/// Plans a live uninstall from a snapshot gathered with [`Scope::shipped`](crate::change::snapshot::Scope)
/// and `policy_zones`. Besides the rules of [`plan_uninstall`], it refuses to remove a zone that a
/// remaining policy names: firewalld would refuse that configuration at its next start and fall back
/// to its stock configuration, dropping every /etc customisation.
pub fn plan_live_uninstall(
    snap: &Snapshot,
    installed: &Installed,
    force: bool,
) -> Result<ObjectsPlan, Refusal> {
    writable(snap)?;
    let existing = existing_in(snap, installed);
    let mut bound: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (kind, name) in SHIPPED {
        if kind == Kind::Zone {
            bound.insert(
                name.to_string(),
                snap.interfaces_of(name).into_iter().collect(),
            );
        }
    }
    let items = plan_uninstall(&existing, &bound, force)?;
    let removed = |kind: Kind| -> BTreeSet<&str> {
        items
            .iter()
            .filter(|i| i.kind == kind && i.action == Action::Remove)
            .map(|i| i.name.as_str())
            .collect()
    };
    let (zones, policies) = (removed(Kind::Zone), removed(Kind::Policy));
    let dependents: Vec<String> = snap
        .policy_zones
        .iter()
        .filter(|(policy, _)| !policies.contains(policy.as_str()))
        .flat_map(|(policy, named)| {
            named
                .iter()
                .filter(|z| zones.contains(z.as_str()))
                .map(move |z| format!("policy {policy} names zone {z}"))
        })
        .collect();
    if !dependents.is_empty() {
        return Err(Refusal::new(
            Reason::ZoneReferenced,
            format!(
                "refusing to uninstall: {}, and firewalld would fail to start with a policy that names a missing \
                 zone; delete that policy (firewall-cmd --permanent --delete-policy=NAME) or remove the zone from \
                 it, then run virtzone uninstall again; nothing was changed",
                dependents.join("; ")
            ),
        ));
    }
    let mut plan = Plan::default();
    for item in items.iter().filter(|i| i.action == Action::Remove) {
        let body = snap
            .shipped
            .get(&(item.kind, item.name.clone()))
            .and_then(|o| o.body.clone().ok());
        plan.steps.push(match (item.kind, body) {
            (Kind::Zone, Some(Definition::Zone(z))) => Step::RemoveZone(z),
            (Kind::Zone, _) => Step::RemoveZone(zone::shipped_zone(&item.name)),
            (Kind::Policy, Some(Definition::Policy(p))) => Step::RemovePolicy(p),
            (Kind::Policy, _) => Step::RemovePolicy(zone::shipped_policy(&item.name)),
        });
    }
    if !plan.is_empty() {
        plan.steps.push(Step::Reload);
    }
    Ok(ObjectsPlan { items, plan })
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
                err.message.contains("rich-rule priorities")
                    && err.message.contains("nothing was written"),
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
        let err = plan_uninstall(&existing, &bound, false)
            .unwrap_err()
            .message;
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

    use crate::change::snapshot::fake;
    use crate::firewalld::{Definition, Object};

    /// A 1.3.3 snapshot holding every shipped object, permanently and unchanged, as virtzone added it.
    fn installed_snapshot() -> (Snapshot, Installed) {
        let mut snap = fake::running("1.3.3", &["libvirt", "libvirt-routed", "public"], &[]);
        let mut installed = Installed::default();
        for (kind, name) in SHIPPED {
            let body = match kind {
                Kind::Zone => Definition::Zone(zone::shipped_zone(name)),
                Kind::Policy => Definition::Policy(zone::shipped_policy(name)),
            };
            if kind == Kind::Policy {
                snap.permanent_policies.insert(name.to_string());
            }
            let zones: BTreeSet<String> = match &body {
                Definition::Policy(p) => p
                    .ingress_zones
                    .iter()
                    .chain(&p.egress_zones)
                    .cloned()
                    .collect(),
                Definition::Zone(_) => BTreeSet::new(),
            };
            if kind == Kind::Policy {
                snap.policy_zones.insert(name.to_string(), zones);
            }
            snap.shipped.insert(
                (kind, name.to_string()),
                Object {
                    builtin: false,
                    body: Ok(body),
                },
            );
            installed.insert(kind, name);
        }
        (snap, installed)
    }

    fn steps(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn live_install_adds_what_is_missing_then_reloads() {
        let snap = fake::running("1.3.3", &["public"], &[]);
        let p = plan_live_install(&snap, &Installed::default(), true).unwrap();
        assert_eq!(
            steps(&p.plan),
            [
                "add zone libvirt",
                "add zone libvirt-routed",
                "add policy libvirt-routed-in",
                "add policy libvirt-routed-out",
                "add policy libvirt-to-host",
                "reload"
            ]
        );
        let p = plan_live_install(&snap, &Installed::default(), false).unwrap();
        assert!(!p.plan.steps.contains(&Step::Reload));
        // Everything there: nothing to send, not even a reload.
        let (snap, installed) = installed_snapshot();
        let p = plan_live_install(&snap, &installed, true).unwrap();
        assert!(p.plan.is_empty());
        let r = plan_live_install(&Snapshot::not_running(false), &installed, true).unwrap_err();
        assert_eq!(r.reason, Reason::FirewalldNotRunning);
    }

    #[test]
    fn live_uninstall_removes_policies_before_zones_then_reloads() {
        let (snap, installed) = installed_snapshot();
        let p = plan_live_uninstall(&snap, &installed, false).unwrap();
        assert_eq!(
            steps(&p.plan),
            [
                "remove policy libvirt-routed-in",
                "remove policy libvirt-routed-out",
                "remove policy libvirt-to-host",
                "remove zone libvirt",
                "remove zone libvirt-routed",
                "reload"
            ]
        );
    }

    #[test]
    fn live_uninstall_refuses_to_orphan_a_policy() {
        // An admin changed libvirt-to-host: virtzone keeps it, so it must keep zone libvirt too.
        let (mut snap, installed) = installed_snapshot();
        let mut changed = zone::shipped_policy("libvirt-to-host");
        changed.services.push("http".into());
        snap.shipped
            .get_mut(&(Kind::Policy, "libvirt-to-host".to_string()))
            .unwrap()
            .body = Ok(Definition::Policy(changed));
        let r = plan_live_uninstall(&snap, &installed, true).unwrap_err();
        assert_eq!(r.reason, Reason::ZoneReferenced);
        assert!(
            r.message
                .contains("policy libvirt-to-host names zone libvirt")
                && r.message.contains("--delete-policy"),
            "{r}"
        );
        // An admin's own policy naming zone libvirt.
        let (mut snap, installed) = installed_snapshot();
        snap.permanent_policies.insert("mine".into());
        snap.policy_zones.insert(
            "mine".into(),
            BTreeSet::from(["libvirt".to_string(), "public".to_string()]),
        );
        let r = plan_live_uninstall(&snap, &installed, false).unwrap_err();
        assert!(r.message.contains("policy mine names zone libvirt"), "{r}");
        // A policy naming only zones that stay is no reason to refuse.
        let (mut snap, installed) = installed_snapshot();
        snap.policy_zones
            .insert("other".into(), BTreeSet::from(["public".to_string()]));
        assert!(plan_live_uninstall(&snap, &installed, false).is_ok());
    }

    #[test]
    fn origin_is_decided_once() {
        assert_eq!(Origin::classify(true, true), Origin::Virtzone);
        assert_eq!(Origin::classify(true, false), Origin::Virtzone);
        assert_eq!(Origin::classify(false, true), Origin::Package);
        assert_eq!(Origin::classify(false, false), Origin::Admin);
        // Live: virtzone's record does not make firewalld's stock copy virtzone's.
        let (mut snap, installed) = installed_snapshot();
        snap.shipped
            .get_mut(&(Kind::Zone, "libvirt".to_string()))
            .unwrap()
            .builtin = true;
        let existing = existing_in(&snap, &installed);
        assert_eq!(
            existing[&(Kind::Zone, "libvirt".to_string())].origin,
            Origin::Package
        );
    }
}
