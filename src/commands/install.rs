//! `virtzone install` and `virtzone uninstall`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Failure;
use crate::firewalld::{parse_version, Capabilities, Firewalld};
use crate::install::{files, live, Item};
use crate::state::StateDir;

/// Where the offline path writes: `ROOT/usr/lib/firewalld` (package tier) or `/etc/firewalld`.
fn offline_tier(root: Option<&Path>) -> (PathBuf, bool) {
    match root {
        Some(root) => (root.join(files::PACKAGE_TIER), true),
        None => (PathBuf::from(files::ADMIN_TIER), false),
    }
}

/// The installed firewalld's version, asked of `firewall-offline-cmd` (firewalld is not running).
fn installed_firewalld() -> Option<(String, Capabilities)> {
    let out = std::process::Command::new("firewall-offline-cmd")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = parse_version(&text).ok()?;
    Some((text, Capabilities::of(&version)))
}

/// The running firewalld to install into, `None` for the offline path: `--root` (packaging) or no
/// firewalld to talk to.
async fn live_target(root: Option<&Path>) -> Result<Option<Firewalld>, Failure> {
    if root.is_some() {
        return Ok(None);
    }
    Ok(Firewalld::connect_running().await?)
}

fn print_items(items: &[Item]) {
    for item in items {
        out!("{item}");
    }
}

pub async fn install(
    root: Option<&Path>,
    reload: bool,
    state_dir: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let Some(fw) = live_target(root).await? else {
        let (tier, package) = offline_tier(root);
        // Packaging targets another machine, whose firewalld is not this one: no version gate then.
        let target = if package { None } else { installed_firewalld() };
        let items = files::install(
            &tier,
            package,
            target.as_ref().map(|(v, c)| (v.as_str(), *c)),
        )?;
        print_items(&items);
        out!(
            "wrote into {}; firewalld loads them when it starts or reloads",
            tier.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = live::install(&fw, &StateDir::locate(state_dir), reload).await?;
    print_items(&outcome.items);
    let added = outcome
        .items
        .iter()
        .any(|i| i.action == crate::install::Action::Add);
    match (added, outcome.reloaded) {
        (false, _) => out!("nothing to add; firewalld was not reloaded"),
        (true, true) => out!("reloaded firewalld: the zones are live"),
        (true, false) => {
            out!("added permanently; run `firewall-cmd --reload` to make them live")
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn uninstall(
    root: Option<&Path>,
    force: bool,
    state_dir: Option<&Path>,
) -> Result<ExitCode, Failure> {
    let Some(fw) = live_target(root).await? else {
        let (tier, package) = offline_tier(root);
        print_items(&files::uninstall(&tier, package)?);
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = live::uninstall(&fw, &StateDir::locate(state_dir), force).await?;
    print_items(&outcome.items);
    if outcome.reloaded {
        out!("reloaded firewalld");
    }
    Ok(ExitCode::SUCCESS)
}
