//! `virtzone doctor [--json] [--network NET]... [--fix [--yes]]`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::process::ExitCode;

use serde::Serialize;

use super::{print_json, Failure};
use crate::bind::{self, Attach};
use crate::doctor::{self, Action, Report, Status};
use crate::firewalld::Firewalld;
use crate::names::{BridgeName, NetworkName, ZoneName};
use crate::state::StateDir;

/// Where `--fix` keeps br_netfilter off across reboots.
const SYSCTL_FILE: &str = "/etc/sysctl.d/90-virtzone-bridge.conf";

/// A fix `--fix` tried.
#[derive(Debug, Serialize)]
struct Applied {
    id: &'static str,
    command: String,
    applied: bool,
    /// What it changed, when applied.
    done: Option<String>,
    error: Option<String>,
}

/// `--fix --json`: the fixes, then the report of the check that followed them.
#[derive(Serialize)]
struct FixReport<'a> {
    fixes: &'a [Applied],
    #[serde(flatten)]
    after: &'a Report,
}

pub async fn run(
    json: bool,
    networks: &[String],
    fix: bool,
    yes: bool,
) -> Result<ExitCode, Failure> {
    let networks = networks
        .iter()
        .map(|n| NetworkName::new(n).map_err(|e| Failure::Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    // An unusable state directory only hides virtzone's records; the rest is still worth checking.
    let state = StateDir::locate(None).ok();
    let gather = || async {
        doctor::gather(state.as_ref(), &networks)
            .await
            .map_err(|e| Failure::Usage(e.to_string()))
    };
    let report = doctor::diagnose(&gather().await?);
    if !fix {
        if json {
            print_json(&report)?;
        } else {
            out!("{}", render(&report));
        }
        return Ok(exit(&report));
    }
    if !json {
        out!("{}", render(&report));
    }
    let mut applied = Vec::new();
    for check in &report.checks {
        let Some(f) = check
            .fix
            .as_ref()
            .filter(|f| f.safe && check.status == Status::Problem)
        else {
            continue;
        };
        let Some(action) = &f.action else { continue };
        if !json {
            out!("fix {}: {}", check.id, f.command);
        }
        if !yes && !confirm()? {
            applied.push(Applied {
                id: check.id,
                command: f.command.clone(),
                applied: false,
                done: None,
                error: Some("not confirmed".into()),
            });
            continue;
        }
        let result = apply(action, state.as_ref()).await;
        if !json {
            match &result {
                Ok(done) => out!("  applied: {done}"),
                Err(e) => out!("  failed: {e}"),
            }
        }
        let (done, error) = match result {
            Ok(done) => (Some(done), None),
            Err(e) => (None, Some(e)),
        };
        applied.push(Applied {
            id: check.id,
            command: f.command.clone(),
            applied: done.is_some(),
            done,
            error,
        });
    }
    // Every fix is judged by checking again, not by its own success.
    let after = doctor::diagnose(&gather().await?);
    if json {
        print_json(&FixReport {
            fixes: &applied,
            after: &after,
        })?;
    } else {
        out!("after the fixes:\n{}", render(&after));
    }
    Ok(exit(&after))
}

fn exit(report: &Report) -> ExitCode {
    if report.problems > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Asks on the terminal; anything but y/yes (or end of input) is no.
fn confirm() -> Result<bool, Failure> {
    super::write_out(format_args!("  apply it? [y/N] "));
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Refused(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Applies one safe fix; says what it changed.
async fn apply(action: &Action, state: Option<&StateDir>) -> Result<String, String> {
    match action {
        Action::Install => {
            let state = state.ok_or("virtzone's state directory is unusable")?;
            let fw = Firewalld::connect().await.map_err(|e| e.to_string())?;
            crate::install::live::install(&fw, state, true)
                .await
                .map(|_| "installed the libvirt zones and policies".to_string())
                .map_err(|e| e.to_string())
        }
        Action::Bind(bindings) => {
            let state = state.ok_or("virtzone's state directory is unusable")?;
            let fw = Firewalld::connect().await.map_err(|e| e.to_string())?;
            for (bridge, zone, network) in bindings {
                let req = Attach {
                    bridge: BridgeName::new(bridge).map_err(|e| e.to_string())?,
                    zone: ZoneName::new(zone).map_err(|e| e.to_string())?,
                    permanent: false,
                    force: false,
                    network: NetworkName::new(network).ok(),
                    source: None,
                };
                bind::attach(&fw, state, &req)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(format!(
                "bound {}",
                bindings
                    .iter()
                    .map(|(b, z, _)| format!("{b} to zone {z}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        Action::AcceptInDockerUser(paths) => {
            let mut opened = Vec::new();
            for (bridge, uplink) in paths {
                // Interface names, as the kernel allows them (both come from the host's own facts).
                BridgeName::new(bridge).map_err(|e| e.to_string())?;
                BridgeName::new(uplink).map_err(|e| e.to_string())?;
                for rule in doctor::docker_user_rules(bridge, uplink) {
                    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
                    // -C first: a second --fix must not stack duplicates.
                    let present = iptables(&[&["-C", "DOCKER-USER"][..], &rule].concat()).is_ok();
                    if !present {
                        iptables(&[&["-I", "DOCKER-USER"][..], &rule].concat())?;
                    }
                }
                opened.push(format!(
                    "new connections from {bridge} to {uplink} and their replies"
                ));
            }
            Ok(format!(
                "opened in DOCKER-USER: {} (nothing else: guests still cannot reach Docker's containers)",
                opened.join("; ")
            ))
        }
        Action::DisableBridgeNetfilter(keys) => {
            for key in keys {
                crate::host::write_sysctl(&key.replace('.', "/"), "0")
                    .map_err(|e| format!("cannot turn {key} off: {e}"))?;
            }
            // Merged, not rewritten: keys an earlier fix turned off stay off at the next boot.
            let existing = read_nofollow(std::path::Path::new(SYSCTL_FILE))?;
            let conf = doctor::merge_sysctl_conf(existing.as_deref(), keys);
            crate::state::write_atomically(
                std::path::Path::new(SYSCTL_FILE),
                conf.as_bytes(),
                0o644,
            )
            .map_err(|e| format!("cannot write {SYSCTL_FILE}: {e}"))?;
            Ok(format!(
                "turned {} off, now and in {SYSCTL_FILE}",
                keys.join(", ")
            ))
        }
    }
}

/// A small file's text, `None` when it does not exist; opened without following a symlink.
fn read_nofollow(path: &std::path::Path) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path);
    let mut text = String::new();
    match file {
        Ok(f) => f
            .take(1 << 20)
            .read_to_string(&mut text)
            .map(|_| Some(text))
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Runs `iptables ARGS` (iptables-nft on current distributions, where Docker's chains live).
fn iptables(args: &[&str]) -> Result<(), String> {
    let out = crate::external::output_within(
        std::process::Command::new("iptables").args(args),
        None,
        crate::external::COMMAND_TIMEOUT,
    )
    .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The text report: one line per check, then evidence and fix for problems and warnings.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let _ = writeln!(out, "{:<8} {}: {}", c.status.word(), c.id, c.summary);
        if matches!(c.status, Status::Problem | Status::Warning) {
            for e in &c.evidence {
                let _ = writeln!(out, "           evidence: {e}");
            }
            if let Some(f) = &c.fix {
                let how = if f.safe {
                    " (doctor --fix applies it)"
                } else {
                    ""
                };
                let _ = writeln!(out, "           fix: {}{how}", f.command);
            }
        }
    }
    let _ = write!(
        out,
        "{} problem{}, {} warning{}",
        report.problems,
        if report.problems == 1 { "" } else { "s" },
        report.warnings,
        if report.warnings == 1 { "" } else { "s" }
    );
    out
}
