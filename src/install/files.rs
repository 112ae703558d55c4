//! Installing as files into a firewalld configuration tree, for packaging (`--root DIR`, the stock tier
//! `DIR/usr/lib/firewalld`) or while firewalld is not running (the admin tier `/etc/firewalld`, where
//! firewalld's own D-Bus writes go too).
//!
//! Which files are virtzone's is told by content: a file whose bytes are exactly what virtzone writes is
//! virtzone's; any other file of the same name is someone else's and is never overwritten or removed.
//! The files are written and removed as [`Step::WriteFile`]s through the one executor (without
//! firewalld: [`Local`]), so a failure part-way undoes what the run had done.

use std::fs;
use std::path::{Path, PathBuf};

use crate::change::executor::Local;
use crate::change::{Executor, Plan, Step};
use crate::firewalld::Capabilities;
use crate::zone;

use super::plan::{self, Action, Existing, Item, Kind, Origin, Present};
use super::InstallError;

/// The tier packagers install into: firewalld's stock configuration, which an admin's /etc copies
/// override, so that package upgrades never clobber the admin's changes.
pub const PACKAGE_TIER: &str = "usr/lib/firewalld";
/// The admin tier, used when firewalld is not running and no `--root` is given.
pub const ADMIN_TIER: &str = "/etc/firewalld";

/// The file of an object in a tier directory.
pub fn object_path(tier: &Path, kind: Kind, name: &str) -> PathBuf {
    tier.join(kind.dir()).join(format!("{name}.xml"))
}

/// The shipped objects present as files in `tier`, with their origin and differences.
pub fn inspect(tier: &Path, package_tier: bool) -> Result<Existing, InstallError> {
    let mut existing = Existing::new();
    for (kind, name) in plan::SHIPPED {
        let path = object_path(tier, kind, name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(InstallError::Refused(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let ours = zone::shipped_text(kind, name) == Some(text.as_str());
        let differences = if ours {
            Vec::new()
        } else {
            let parsed = match kind {
                Kind::Zone => {
                    zone::parse_zone(name, &text).map(|z| zone::shipped_zone(name).diff(&z))
                }
                Kind::Policy => {
                    zone::parse_policy(name, &text).map(|p| zone::shipped_policy(name).diff(&p))
                }
            };
            parsed.unwrap_or_else(|e| vec![format!("{} does not parse: {e}", path.display())])
        };
        let origin = Origin::classify(ours, package_tier);
        existing.insert(
            (kind, name.to_string()),
            Present {
                origin,
                differences,
            },
        );
    }
    Ok(existing)
}

/// Installs the shipped files into `tier`. `firewalld` is the target's version and capabilities when
/// known (the version gates apply), `None` for packaging.
pub async fn install(
    tier: &Path,
    package_tier: bool,
    firewalld: Option<(&str, Capabilities)>,
) -> Result<Vec<Item>, InstallError> {
    let existing = inspect(tier, package_tier)?;
    let items = plan::plan_install(firewalld, &existing)?;
    // Added only where no file of that name exists: there is nothing to put back.
    let steps = items
        .iter()
        .filter(|i| i.action == Action::Add)
        .map(|item| Step::WriteFile {
            path: object_path(tier, item.kind, &item.name),
            content: Some(
                zone::shipped_text(item.kind, &item.name)
                    .unwrap_or_default()
                    .to_string(),
            ),
            previous: None,
            mode: 0o644,
        })
        .collect();
    apply(steps).await?;
    Ok(items)
}

/// Applies the file steps, all or none.
async fn apply(steps: Vec<Step>) -> Result<(), InstallError> {
    let plan = Plan {
        steps,
        warnings: Vec::new(),
    };
    Executor::new(&Local)
        .run(&plan)
        .await
        .map(|_| ())
        .map_err(|e| InstallError::Refused(e.to_string()))
}

/// The policies in `dirs` that name one of `zones` in an ingress or egress zone, as "policy P names zone
/// Z" (a policy file that does not parse is not firewalld's to load either, so it is skipped).
pub fn policies_naming(dirs: &[PathBuf], zones: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(policy) = zone::parse_policy_file(&path) else {
                continue;
            };
            for z in policy.ingress_zones.iter().chain(&policy.egress_zones) {
                if zones.contains(&z.as_str()) {
                    found.push(format!(
                        "policy {} ({}) names zone {z}",
                        policy.name,
                        path.display()
                    ));
                }
            }
        }
    }
    found
}

/// The policy directories firewalld loads beside `tier`: the tier's own, and for the package tier
/// `ROOT/usr/lib/firewalld` also the admin tier `ROOT/etc/firewalld` of the same root.
fn policy_dirs(tier: &Path, package_tier: bool) -> Vec<PathBuf> {
    let mut dirs = vec![tier.join(Kind::Policy.dir())];
    if package_tier {
        if let Some(root) = tier.parent().and_then(Path::parent).and_then(Path::parent) {
            dirs.push(root.join("etc/firewalld").join(Kind::Policy.dir()));
        }
    }
    dirs
}

/// Removes the shipped files from `tier` whose content is still exactly virtzone's. Refuses when a
/// zone file to remove is named by a policy file that stays: firewalld would not start with that.
pub async fn uninstall(tier: &Path, package_tier: bool) -> Result<Vec<Item>, InstallError> {
    let existing = inspect(tier, package_tier)?;
    let items = plan::plan_uninstall(&existing, &Default::default(), false)?;
    let removed = |kind: Kind| -> Vec<&str> {
        items
            .iter()
            .filter(|i| i.kind == kind && i.action == Action::Remove)
            .map(|i| i.name.as_str())
            .collect()
    };
    let (zones, policies) = (removed(Kind::Zone), removed(Kind::Policy));
    let dependents: Vec<String> = policies_naming(&policy_dirs(tier, package_tier), &zones)
        .into_iter()
        .filter(|d| {
            !policies
                .iter()
                .any(|p| d.starts_with(&format!("policy {p} (")))
        })
        .collect();
    if !dependents.is_empty() {
        return Err(InstallError::Refused(format!(
            "refusing to uninstall: {}, and firewalld would fail to start with a policy that names a missing zone; \
             delete that policy or remove the zone from it, then run virtzone uninstall again; nothing was changed",
            dependents.join("; ")
        )));
    }
    // Removed only where the file is exactly virtzone's: its content is what a rollback writes back.
    let steps = items
        .iter()
        .filter(|i| i.action == Action::Remove)
        .map(|item| Step::WriteFile {
            path: object_path(tier, item.kind, &item.name),
            content: None,
            previous: zone::shipped_text(item.kind, &item.name).map(str::to_string),
            mode: 0o644,
        })
        .collect();
    apply(steps).await?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn install(
        tier: &Path,
        package_tier: bool,
        firewalld: Option<(&str, Capabilities)>,
    ) -> Result<Vec<Item>, InstallError> {
        block_on(super::install(tier, package_tier, firewalld))
    }

    fn uninstall(tier: &Path, package_tier: bool) -> Result<Vec<Item>, InstallError> {
        block_on(super::uninstall(tier, package_tier))
    }

    #[test]
    fn install_keeps_foreign_files_and_uninstall_removes_only_ours() {
        let dir = tempfile::tempdir().unwrap();
        let tier = dir.path();
        let admin =
            "<?xml version=\"1.0\"?>\n<zone target=\"ACCEPT\"><service name=\"http\"/></zone>\n";
        fs::create_dir_all(tier.join("zones")).unwrap();
        fs::write(tier.join("zones/libvirt.xml"), admin).unwrap();
        let items = install(tier, false, None).unwrap();
        assert!(
            matches!(&items[0].action, Action::Keep { origin: Origin::Admin, differences } if differences.iter().any(|d| d.contains("http"))),
            "{items:?}"
        );
        assert!(
            items[1..].iter().all(|i| i.action == Action::Add),
            "{items:?}"
        );
        assert_eq!(
            fs::read_to_string(tier.join("zones/libvirt.xml")).unwrap(),
            admin
        );
        // A second install changes nothing.
        let again = install(tier, false, None).unwrap();
        assert!(
            again[1..].iter().all(|i| matches!(
                i.action,
                Action::Keep {
                    origin: Origin::Virtzone,
                    ..
                }
            )),
            "{again:?}"
        );
        let items = uninstall(tier, false).unwrap();
        assert_eq!(
            items.iter().filter(|i| i.action == Action::Remove).count(),
            4,
            "{items:?}"
        );
        assert_eq!(
            fs::read_to_string(tier.join("zones/libvirt.xml")).unwrap(),
            admin
        );
        assert!(!tier.join("policies/libvirt-to-host.xml").exists());
    }

    #[test]
    fn old_firewalld_gets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let caps = Capabilities::of(&semver::Version::new(0, 6, 4));
        let err = install(dir.path(), false, Some(("0.6.4", caps))).unwrap_err();
        assert!(err.to_string().contains("nothing was written"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn uninstall_keeps_zones_that_a_remaining_policy_names() {
        let root = tempfile::tempdir().unwrap();
        let tier = root.path().join(PACKAGE_TIER);
        install(&tier, true, None).unwrap();
        // An admin's policy in ROOT/etc/firewalld names zone libvirt: removing it would leave a
        // configuration firewalld refuses at its next start.
        let admin = root.path().join("etc/firewalld/policies");
        fs::create_dir_all(&admin).unwrap();
        fs::write(
            admin.join("guests-out.xml"),
            "<?xml version=\"1.0\"?>\n<policy target=\"ACCEPT\"><ingress-zone name=\"libvirt\"/><egress-zone name=\"ANY\"/></policy>\n",
        )
        .unwrap();
        let err = uninstall(&tier, true).unwrap_err().to_string();
        assert!(
            err.contains("policy guests-out") && err.contains("names zone libvirt"),
            "{err}"
        );
        assert!(
            tier.join("zones/libvirt.xml").exists(),
            "nothing was removed"
        );
        // virtzone's own policies naming its zones go together with them.
        fs::remove_file(admin.join("guests-out.xml")).unwrap();
        let items = uninstall(&tier, true).unwrap();
        assert_eq!(
            items.iter().filter(|i| i.action == Action::Remove).count(),
            5,
            "{items:?}"
        );
    }
}
