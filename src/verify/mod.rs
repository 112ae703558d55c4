//! `virtzone status --verify` and `virtzone explain`: the live ruleset, all tables of all families,
//! evaluated for synthetic packets ([`eval`]) and compared with what the bridges' zones mean
//! ([`check`]). Nothing here depends on firewalld's chain names: releases lay their chains out
//! differently (0.9 `*_ZONES`, 1.x/2.x `*_POLICIES`, 2.5 `*_dispatch`), the evaluator follows the
//! packet through whatever is there. See `docs/verify.md`.

pub mod check;
pub mod eval;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use crate::bind::{Bindings, BINDINGS_FILE};
use crate::firewalld::Backend;
use crate::state::StateDir;
use crate::status::Status;

pub use check::{BridgeFacts, HostFacts, Report};
pub use eval::{Packet, Ruleset, Trace, Verdict};

/// Where libvirt keeps the live XML of its running networks (system instance).
const LIBVIRT_NETWORK_RUN_DIR: &str = "/run/libvirt/network";

/// Why the ruleset could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the ruleset: {0}")]
pub struct VerifyError(pub String);

/// Verifies the bridges of `status` against the live ruleset.
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
    let names: Vec<String> = status.bridges.iter().map(|b| b.name.clone()).collect();
    let (rs, host, addrs) = tokio::task::spawn_blocking(move || {
        let rs = read_ruleset()?;
        let addrs: Vec<Vec<(IpAddr, u8)>> = names.iter().map(|n| addresses(n)).collect();
        Ok::<_, VerifyError>((rs, host_facts(), addrs))
    })
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
        .zip(addrs)
        .map(|(b, addrs)| BridgeFacts {
            name: b.name.clone(),
            zone: b.zone.clone(),
            recorded: recorded
                .bindings
                .iter()
                .find(|(name, _)| name.as_str() == b.name)
                .map(|(_, binding)| binding.zone.as_str().to_string()),
            libvirt: is_libvirt_bridge(&b.name, &libvirt_bridges),
            addrs,
        })
        .collect();
    Ok(assemble(status, backend, &rs, &host, &bridges))
}

/// The report from gathered facts (pure).
pub fn assemble(
    status: &Status,
    backend: Backend,
    rs: &Ruleset,
    host: &HostFacts,
    bridges: &[BridgeFacts],
) -> Report {
    let mut report = check::check(rs, host, bridges);
    // firewalld's own rules missing is worth its own sentence: the evaluation then only shows
    // that everything passes.
    let missing = match backend {
        Backend::Nftables => (!rs.has_table("inet", "firewalld"))
            .then(|| "firewalld's table inet firewalld does not exist".to_string()),
        Backend::Iptables => {
            let has = |f: &str| {
                rs.chains
                    .iter()
                    .any(|c| c.family == f && c.table == "filter" && c.name == "INPUT_direct")
            };
            (!has("ip")).then(|| "firewalld's chains in table ip filter are gone".to_string())
        }
    };
    if let Some(what) = missing {
        report.problems.insert(
            0,
            format!(
                "{what} although firewalld runs with the {} backend: its rules are not loaded \
                 (flushed by `nft flush ruleset`?); `firewall-cmd --reload` restores them",
                backend.as_str()
            ),
        );
    }
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
            "read the whole ruleset ({} tables: {}); firewalld's backend is {}",
            rs.tables.len(),
            rs.tables
                .iter()
                .map(|(f, n)| format!("{f} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            backend.as_str()
        ),
    );
    report
}

/// Runs a dump, returning its standard output.
fn dump(program: &str, args: &[&str]) -> Result<String, VerifyError> {
    let out = crate::external::output_within(
        Command::new(program).args(args),
        None,
        crate::external::COMMAND_TIMEOUT,
    )
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

/// Reads every table of this network namespace (`nft -j list ruleset`), plus `iptables-save` and
/// `ip6tables-save` when iptables-nft's compat matches hide their options from nft.
pub fn read_ruleset() -> Result<Ruleset, VerifyError> {
    ruleset_of(&read_ruleset_json()?)
}

/// `nft -j list ruleset` of this network namespace, as nft prints it.
pub fn read_ruleset_json() -> Result<String, VerifyError> {
    crate::external::nft_json(&["list", "ruleset"]).map_err(VerifyError)
}

/// The evaluator's ruleset from nft's JSON, with `iptables-save`'s lines attached where
/// iptables-nft's compat matches hide their options from nft.
pub fn ruleset_of(json: &str) -> Result<Ruleset, VerifyError> {
    let mut rs = Ruleset::from_json(json).map_err(VerifyError)?;
    for (family, program) in [("ip", "iptables-save"), ("ip6", "ip6tables-save")] {
        let has_xt = rs.chains.iter().any(|c| {
            c.family == family
                && c.rules
                    .iter()
                    .any(|r| r.expr.iter().any(|e| e.get("xt").is_some()))
        });
        // Without the saved lines the compat matches are simply unknown: not a reason to fail.
        if has_xt {
            if let Ok(text) = dump(program, &[]) {
                rs.attach_saved(family, &text);
            }
        }
    }
    Ok(rs)
}

/// The host's addresses on an interface (`ip -j addr show dev IF`); none when unreadable.
pub fn addresses(iface: &str) -> Vec<(IpAddr, u8)> {
    let Ok(text) = dump("ip", &["-j", "addr", "show", "dev", iface]) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            // Link-local addresses are not where guests' services live.
            if a["scope"].as_str() == Some("link") {
                continue;
            }
            if let Ok(addr) = local.parse::<IpAddr>() {
                out.push((addr, u8::try_from(len).unwrap_or(0)));
            }
        }
    }
    out
}

/// The default route's interface and whether br_netfilter is on.
pub fn host_facts() -> HostFacts {
    let uplink = dump("ip", &["-j", "route", "show", "default"])
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v[0]["dev"].as_str().map(String::from));
    let br_netfilter = br_netfilter(false);
    HostFacts {
        uplink,
        br_netfilter,
    }
}

/// Whether br_netfilter passes bridged IPv4 (`net.bridge.bridge-nf-call-iptables`) or IPv6
/// (`…-ip6tables`) frames to the IP hooks in this network namespace; off when the keys do not
/// exist (br_netfilter not loaded).
pub fn br_netfilter(v6: bool) -> bool {
    let key = if v6 { "ip6tables" } else { "iptables" };
    std::fs::read_to_string(format!("/proc/sys/net/bridge/bridge-nf-call-{key}"))
        .is_ok_and(|s| s.trim() == "1")
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
pub(crate) fn bridge_names(xml: &str) -> Vec<String> {
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
