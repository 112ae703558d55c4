//! `virtzone status --verify`: confirms from firewalld's live ruleset that each bound bridge's traffic
//! dispatches to its zone's chains and that the zone's catch-all reject sits after its allowed services.
//!
//! The ruleset is read from the backend firewalld reports: on nftables only firewalld's own table
//! (`nft -j list table inet firewalld`, through the `nftables` crate), on iptables the `filter` tables
//! of `iptables-save` and `ip6tables-save`. Both are read into one model ([`rules`]) and checked by
//! pure functions ([`check`]), which follow a guest's packets through the rules rather than expect a
//! chain layout: layouts differ between firewalld releases, chain names carry the zone's name in all
//! of them. See `docs/verify.md`.

pub mod check;
pub mod iptables;
pub mod nft;
pub mod rules;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::bind::{Bindings, BINDINGS_FILE};
use crate::firewalld::Backend;
use crate::state::StateDir;
use crate::status::Status;

pub use check::{BridgeFacts, View};
pub use rules::{Family, Ruleset};

/// Where libvirt keeps the live XML of its running networks (system instance).
const LIBVIRT_NETWORK_RUN_DIR: &str = "/run/libvirt/network";

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// What was confirmed, one sentence each.
    pub confirmed: Vec<String>,
    /// What is wrong, one precise sentence each.
    pub problems: Vec<String>,
}

/// Why the ruleset could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read firewalld's ruleset: {0}")]
pub struct VerifyError(pub String);

/// What reading the live ruleset gave.
#[derive(Debug)]
pub enum Live {
    /// The views to check, and notes on what could not be read (reported as confirmed facts).
    Views(Vec<View>, Vec<String>),
    /// firewalld's rules are not there at all (a fact to report, not a failure to read).
    Missing(String),
}

/// Verifies the bridges and zones of `status` against the live ruleset of its backend.
pub async fn verify(status: &Status) -> Result<Report, VerifyError> {
    let fw = &status.firewalld;
    if !fw.running {
        let mut report = Report::default();
        report.problems.push(
            "firewalld is not running: no zone filters the bridges' traffic, so there is nothing \
             to verify"
                .into(),
        );
        return Ok(report);
    }
    let backend = fw
        .backend
        .ok_or_else(|| VerifyError("firewalld did not tell its backend".into()))?;
    let live = tokio::task::spawn_blocking(move || read_live(backend))
        .await
        .map_err(|e| VerifyError(format!("reader task failed: {e}")))??;
    // Reading state files is quick; a missing or unreadable record only means "nothing recorded".
    let recorded: Bindings = StateDir::locate(None)
        .and_then(|s| s.read(BINDINGS_FILE))
        .unwrap_or_default();
    let libvirt_bridges = libvirt_bridges(Path::new(LIBVIRT_NETWORK_RUN_DIR));
    let bridges: Vec<BridgeFacts> = status
        .bridges
        .iter()
        .map(|b| BridgeFacts {
            name: b.name.clone(),
            zone: b.zone.clone(),
            recorded: recorded
                .bindings
                .iter()
                .find(|(name, _)| name.as_str() == b.name)
                .map(|(_, binding)| binding.zone.as_str().to_string()),
            libvirt: is_libvirt_bridge(&b.name, &libvirt_bridges),
        })
        .collect();
    Ok(assemble(status, backend, live, &bridges))
}

/// The report from gathered facts (pure).
pub fn assemble(status: &Status, backend: Backend, live: Live, bridges: &[BridgeFacts]) -> Report {
    let mut report = match live {
        Live::Views(views, notes) => {
            let mut r = check::check(&views, bridges);
            r.confirmed.splice(0..0, notes);
            r
        }
        Live::Missing(why) => Report {
            confirmed: Vec::new(),
            problems: vec![why],
        },
    };
    if status.firewalld.state.as_deref() == Some("FAILED") {
        report.problems.insert(
            0,
            "firewalld is in state FAILED: its configuration did not load and it runs on its \
             stock configuration only (see its log)"
                .into(),
        );
    }
    report.confirmed.insert(
        0,
        format!(
            "read firewalld's {} ruleset ({})",
            backend.as_str(),
            match backend {
                Backend::Nftables => format!("table inet {}", nft::TABLE),
                Backend::Iptables => "filter tables of iptables-save and ip6tables-save".into(),
            }
        ),
    );
    report
}

/// Runs a ruleset dump, returning its standard output.
fn dump(program: &str, args: &[&str]) -> Result<String, VerifyError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| VerifyError(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(VerifyError(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|e| VerifyError(format!("{program} printed invalid UTF-8: {e}")))
}

/// Reads the live ruleset of `backend` in this network namespace.
pub fn read_live(backend: Backend) -> Result<Live, VerifyError> {
    match backend {
        Backend::Nftables => {
            let args = ["list", "table", "inet", nft::TABLE];
            let json = match nftables::helper::get_current_ruleset_raw(
                nftables::helper::DEFAULT_NFT,
                args,
            ) {
                Ok(json) => json,
                Err(nftables::helper::NftablesError::NftFailed { stderr, .. })
                    if stderr.contains("No such file or directory") =>
                {
                    return Ok(Live::Missing(format!(
                        "firewalld's table inet {} does not exist although firewalld runs with \
                         the nftables backend: its rules are not loaded (flushed by `nft flush \
                         ruleset`?); `firewall-cmd --reload` restores them",
                        nft::TABLE
                    )));
                }
                Err(e) => return Err(VerifyError(e.to_string())),
            };
            let ruleset = nft::parse(&json).map_err(VerifyError)?;
            Ok(Live::Views(
                vec![View {
                    label: None,
                    families: vec![Family::V4, Family::V6],
                    ruleset,
                }],
                Vec::new(),
            ))
        }
        Backend::Iptables => {
            let mut views = Vec::new();
            let mut notes = Vec::new();
            for (program, family, label) in [
                ("iptables-save", Family::V4, "iptables"),
                ("ip6tables-save", Family::V6, "ip6tables"),
            ] {
                let text = match dump(program, &["-t", "filter"]) {
                    Ok(text) => text,
                    // A host without IPv6 has no ip6tables filter table; firewalld then filters
                    // IPv4 only, and so does this check.
                    Err(e) if family == Family::V6 => {
                        notes.push(format!("IPv6 not checked: {}", e.0));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let ruleset = iptables::parse(&text, family)
                    .map_err(|e| VerifyError(format!("{program}: {e}")))?;
                views.push(View {
                    label: Some(label.into()),
                    families: vec![family],
                    ruleset,
                });
            }
            Ok(Live::Views(views, notes))
        }
    }
}

/// Whether a bridge is libvirt's: named by a running network, or named like the bridges libvirt
/// names itself (`virbr` and a number).
pub fn is_libvirt_bridge(name: &str, running: &BTreeSet<String>) -> bool {
    running.contains(name)
        || name
            .strip_prefix("virbr")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The bridges of libvirt's running networks, from the live XML it keeps in `dir`
/// (`<networkstatus><network>…<bridge name='virbr0' …/>`). Unreadable files are skipped: this only
/// sharpens which unbound bridges deserve a warning.
pub fn libvirt_bridges(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        if let Ok(xml) = std::fs::read_to_string(&path) {
            out.extend(bridge_names(&xml));
        }
    }
    out
}

/// The `name` attributes of `<bridge>` elements.
fn bridge_names(xml: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.name().as_ref() == "bridge" => {
                for attr in e.attributes().flatten() {
                    if attr.key.as_ref() == "name" {
                        if let Ok(v) = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
                            out.push(v.into_owned());
                        }
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}
