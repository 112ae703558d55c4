//! `virtzone install` and `virtzone uninstall`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::Failure;
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
/// `None` when firewalld is not installed at all (the files then wait for whichever firewalld comes);
/// a tool that exists but cannot say its version is a refusal, never a silently skipped check.
fn installed_firewalld() -> Result<Option<(String, Capabilities)>, Failure> {
    let out = match crate::external::output_within(
        std::process::Command::new("firewall-offline-cmd").arg("--version"),
        None,
        crate::external::COMMAND_TIMEOUT,
    ) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "virtzone: warning: firewall-offline-cmd is not installed, so the version check is \
                 skipped: firewalld older than 0.7.0 cannot load the libvirt zone"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(Failure::Refused(format!(
                "cannot run firewall-offline-cmd --version ({e}), so virtzone cannot check that \
                 firewalld can load its zones; nothing was written"
            )))
        }
    };
    offline_version(out.status.success(), &String::from_utf8_lossy(&out.stdout))
        .map(Some)
        .map_err(Failure::Refused)
}

/// Reads `firewall-offline-cmd --version`'s answer.
fn offline_version(success: bool, stdout: &str) -> Result<(String, Capabilities), String> {
    let text = stdout.trim();
    let version = parse_version(text)
        .ok()
        .filter(|_| success)
        .ok_or_else(|| {
            format!(
            "firewall-offline-cmd --version failed or printed no version ({text:?}), so virtzone \
             cannot check that firewalld can load its zones; nothing was written"
        )
        })?;
    Ok((text.to_string(), Capabilities::of(&version)))
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
        let target = if package {
            None
        } else {
            installed_firewalld()?
        };
        let items = files::install(
            &tier,
            package,
            target.as_ref().map(|(v, c)| (v.as_str(), *c)),
        )
        .await?;
        print_items(&items);
        out!(
            "wrote into {}; firewalld loads them when it starts or reloads",
            tier.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = live::install(&fw, &StateDir::locate(state_dir)?, reload).await?;
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
        print_items(&files::uninstall(&tier, package).await?);
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = live::uninstall(&fw, &StateDir::locate(state_dir)?, force).await?;
    print_items(&outcome.items);
    if outcome.reloaded {
        out!("reloaded firewalld");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::offline_version;

    #[test]
    fn offline_version_check_is_never_skipped_silently() {
        assert_eq!(offline_version(true, "1.3.3\n").unwrap().0, "1.3.3");
        for (ok, out) in [
            (false, "1.3.3"),
            (true, ""),
            (true, "Traceback (most recent call"),
        ] {
            let e = offline_version(ok, out).unwrap_err();
            assert!(e.contains("nothing was written"), "{e}");
        }
    }
}
