//! `virtzone doctor [--json] [--network NET]... [--fix [--yes]]`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::process::ExitCode;

use serde::Serialize;

use super::output::{print_json, Failure};
use crate::bind::{self, Attach};
use crate::change::converge::converge;
use crate::change::executor::Local;
use crate::doctor::domains::{BridgeNetfilterDomain, DockerChange, DockerDomain, FixError};
use crate::doctor::fix::{DockerAccepts, DockerPath, DOCKER_ACCEPTS_FILE, SYSCTL_FILE};
use crate::doctor::{self, Action, Report, Status};
use crate::firewalld::Firewalld;
use crate::names::{BridgeName, NetworkName, ZoneName};
use crate::state::StateDir;

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
    /// The accepts `--fix` keeps in `DOCKER-USER` (desired state; `--unfix forward-drop`).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    docker_user_accepts: &'a [DockerPath],
}

/// `--json` without `--fix`: the report, and what earlier fixes keep applied.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    docker_user_accepts: &'a [DockerPath],
}

/// The accepts earlier fixes keep in `DOCKER-USER` (none when the state cannot be read: doctor
/// reports what it can).
fn kept(state: Option<&StateDir>) -> Vec<DockerPath> {
    state
        .and_then(|s| s.read::<DockerAccepts>(DOCKER_ACCEPTS_FILE).ok())
        .map(|r| r.paths)
        .unwrap_or_default()
}

/// The text line saying what earlier fixes keep applied.
fn render_kept(paths: &[DockerPath]) -> String {
    let shown: Vec<String> = paths.iter().map(ToString::to_string).collect();
    format!(
        "\nkept by doctor --fix: accepts in DOCKER-USER for {} (the daemon re-applies them; \
         doctor --unfix forward-drop removes them)",
        shown.join(", ")
    )
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
        let kept = kept(state.as_ref());
        if json {
            print_json(&Shown {
                report: &report,
                docker_user_accepts: &kept,
            })?;
        } else if kept.is_empty() {
            out!("{}", render(&report));
        } else {
            out!("{}{}", render(&report), render_kept(&kept));
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
    let kept = kept(state.as_ref());
    if json {
        print_json(&FixReport {
            fixes: &applied,
            after: &after,
            docker_user_accepts: &kept,
        })?;
    } else if kept.is_empty() {
        out!("after the fixes:\n{}", render(&after));
    } else {
        out!("after the fixes:\n{}{}", render(&after), render_kept(&kept));
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
    super::output::write_out(format_args!("  apply it? [y/N] "));
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
            let state = state.ok_or("virtzone's state directory is unusable")?;
            let paths = docker_paths(paths)?;
            accept_in_docker_user(state, &paths).await?;
            let opened: Vec<String> = paths
                .iter()
                .map(|p| {
                    format!(
                        "new connections from {} to {} and their replies",
                        p.bridge, p.uplink
                    )
                })
                .collect();
            Ok(format!(
                "opened in DOCKER-USER: {} (nothing else: guests still cannot reach Docker's containers); \
                 kept there by the daemon until doctor --unfix forward-drop",
                opened.join("; ")
            ))
        }
        Action::DisableBridgeNetfilter(keys) => {
            let state = state.ok_or("virtzone's state directory is unusable")?;
            // Merged, not rewritten: keys an earlier fix turned off stay off at the next boot.
            let domain = BridgeNetfilterDomain::new(keys.clone());
            converge(&Local, state, &domain)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "turned {} off, now and in {SYSCTL_FILE}",
                keys.join(", ")
            ))
        }
    }
}

/// The check's (bridge, uplink) pairs, as interface names the kernel allows (both come from the
/// host's own facts).
fn docker_paths(pairs: &[(String, String)]) -> Result<Vec<DockerPath>, String> {
    pairs
        .iter()
        .map(|(bridge, uplink)| {
            BridgeName::new(bridge).map_err(|e| e.to_string())?;
            BridgeName::new(uplink).map_err(|e| e.to_string())?;
            Ok(DockerPath {
                bridge: bridge.clone(),
                uplink: uplink.clone(),
            })
        })
        .collect()
}

/// Inserts the accepts of `paths` missing from `DOCKER-USER` and records them as desired state:
/// one convergence of the Docker domain (under the state lock; a record that cannot be written
/// undoes the inserts).
async fn accept_in_docker_user(state: &StateDir, paths: &[DockerPath]) -> Result<(), String> {
    let domain = DockerDomain::new(DockerChange::Accept(paths.to_vec()));
    converge(&Local, state, &domain)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What `--unfix` did, for `--json`.
#[derive(Serialize)]
struct Unfixed<'a> {
    id: &'a str,
    removed: &'a [DockerPath],
}

/// `virtzone doctor --unfix ID`: takes out what `--fix` keeps applied for check `ID` and forgets
/// it. Only `forward-drop` keeps anything (its accepts in `DOCKER-USER`).
pub async fn unfix(json: bool, id: &str) -> Result<ExitCode, Failure> {
    if id != "forward-drop" {
        return Err(Failure::Usage(format!(
            "{id:?} keeps nothing applied: only forward-drop's accepts in DOCKER-USER can be undone"
        )));
    }
    let state = StateDir::locate(None)?;
    state.check()?;
    let removed = converge(&Local, &state, &DockerDomain::new(DockerChange::Unfix))
        .await
        .map_err(|e| match e {
            FixError::State(e) => Failure::from(e),
            other => Failure::Refused(other.to_string()),
        })?
        .outcome;
    if json {
        print_json(&Unfixed {
            id,
            removed: &removed,
        })?;
    } else if removed.is_empty() {
        out!("doctor --fix keeps no accepts in DOCKER-USER");
    } else {
        let shown: Vec<String> = removed.iter().map(ToString::to_string).collect();
        out!(
            "removed from DOCKER-USER, and no longer re-applied: the accepts for {}",
            shown.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
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
