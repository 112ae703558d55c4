//! `virtzone hook network NAME OP SUBOP [EXTRA]`: libvirt's network hook; `virtzone hook qemu
//! DOMAIN OP SUBOP [EXTRA]`: libvirt's qemu hook (see [`qemu`]).
//!
//! `start begin` runs the pre-check (a non-zero exit aborts `virsh net-start`, and libvirt shows our
//! stderr to the user); `started begin` binds the new bridge to the zone libvirt's rules choose;
//! `stopped end` unbinds it. The other operations need nothing from virtzone.

use std::io::Read;
use std::process::ExitCode;

use super::check;
use super::output::Failure;
use std::time::Duration;

use crate::bind::{self, Attach, Bindings, BINDINGS_FILE};
use crate::change::executor::{Executor, Live};
use crate::change::{Plan, Step};
use crate::firewalld::{self, Firewalld, FirewalldFacts};
use crate::libvirt::network::Bridged;
use crate::libvirt::{parse_domain_xml, parse_network_xml, Network, NetworkXmlError};
use crate::names::BridgeName;
use crate::precheck::{self, Request};
use crate::state::{Config, StateDir};

/// hookData is a network's live XML; more than this is not libvirt talking.
const MAX_HOOK_DATA: u64 = 1 << 20;
/// The hook's whole budget unless `HookTimeout=` says otherwise: libvirt waits for a hook without limit
/// while `virsh net-start` hangs, so a hung firewalld must cost seconds, not minutes.
pub const HOOK_BUDGET: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Started,
    /// `virsh net-update` changed the running network (e.g. its static DHCP hosts); hookData is
    /// the new definition.
    Updated,
    Stopped,
    Ignored,
}

/// Maps libvirt's OP SUBOP to what virtzone does. Operations virtzone has no business with (today's
/// `port-created`, …, and whatever a later libvirt adds) succeed silently, so they never fail a
/// network operation; only arguments that cannot be libvirt's are refused.
fn op_of(op: &str, subop: &str) -> Result<Op, Failure> {
    let word =
        !op.is_empty() && op.len() <= 32 && op.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    if !word || !matches!(subop, "begin" | "end") {
        return Err(Failure::Usage(format!(
            "{op:?} {subop:?} is not a libvirt network hook operation (expected e.g. \"start begin\")"
        )));
    }
    Ok(match (op, subop) {
        ("start", "begin") => Op::Start,
        ("started", "begin") => Op::Started,
        ("updated", "begin") => Op::Updated,
        ("stopped", "end") => Op::Stopped,
        _ => Op::Ignored,
    })
}

pub async fn run(
    object: &str,
    name: &str,
    op: &str,
    subop: &str,
    extra: Option<&str>,
) -> Result<ExitCode, Failure> {
    if object == "qemu" {
        return qemu(name, op, subop).await;
    }
    if object != "network" {
        return Err(Failure::Usage(format!(
            "virtzone handles libvirt's network and qemu hooks only, not {object:?}"
        )));
    }
    let op = op_of(op, subop)?;
    if extra.is_some_and(|e| e != "-") {
        return Err(Failure::Usage(format!(
            "unexpected extra hook argument {:?} (libvirt passes \"-\")",
            extra.unwrap_or("")
        )));
    }
    let mut xml = String::new();
    std::io::stdin()
        .take(MAX_HOOK_DATA + 1)
        .read_to_string(&mut xml)
        .map_err(|e| Failure::Usage(format!("cannot read hookData from standard input: {e}")))?;
    if op == Op::Ignored {
        return Ok(ExitCode::SUCCESS);
    }
    let network = match parse_network_xml(&xml, None) {
        Ok(n) => n,
        // A later libvirt's forward mode, or a zone or network name libvirt (or firewalld) accepts
        // but virtzone's stricter name rule does not: libvirt itself handles such networks, so
        // virtzone stands aside rather than refusing a network that would work
        // (docs/libvirt-hook.md).
        Err(
            e @ (NetworkXmlError::UnknownForwardMode(_)
            | NetworkXmlError::Zone(_)
            | NetworkXmlError::NetworkName(_)),
        ) => {
            eprintln!("virtzone: warning: {e}; leaving network {name:?} to libvirt");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(Failure::Usage(format!("hookData: {e}"))),
    };
    if network.name != name {
        return Err(Failure::Usage(format!(
            "hookData describes network {:?}, but the hook was called for network {name:?}",
            network.name
        )));
    }
    // libvirt gives hooks no time limit and waits for them with the network half started: the hook
    // keeps to one overall budget instead of several 120 s firewalld call timeouts.
    let budget = Config::load()?.hook_timeout.unwrap_or(HOOK_BUDGET);
    let work = async {
        // One connection for the binding and the forwards.
        let fw = match Firewalld::connect().await {
            Ok(fw) => Some(fw),
            Err(firewalld::Error::NoBus(_)) => None,
            Err(e) => return Err(e.into()),
        };
        // An update changes no bridge and no zone: only the forwards' record of the network.
        let result = match op {
            Op::Updated => Ok(ExitCode::SUCCESS),
            _ => act(op, &network, fw.as_ref()).await,
        };
        // Forwards follow the network's bridge, subnets and static hosts: record them and re-apply
        // (docs/forwards.md). Never fails the network operation.
        if result.is_ok() && matches!(op, Op::Started | Op::Updated | Op::Stopped) {
            crate::forward::network_hook(fw.as_ref(), &network, op != Op::Stopped).await;
        }
        result
    };
    match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Refused(out_of_budget(name, budget))),
    }
}

/// Why the network hook's budget ran out: another process held virtzone's state lock all along
/// (the budget bounds that wait too), or else firewalld did not answer.
fn out_of_budget(name: &str, budget: Duration) -> String {
    let secs = budget.as_secs();
    let held = StateDir::locate(None).ok().and_then(|state| {
        let store = StateDir::at(state.path().join(crate::forward::STORE_DIR));
        [state, store]
            .into_iter()
            .find(StateDir::held_elsewhere)
            .map(|d| d.path().join("lock"))
    });
    match held {
        Some(lock) => format!(
            "another process held virtzone's lock {} for the whole budget of {secs} s, so virtzone \
             cannot prepare network {name}'s bridge; see what holds it (fuser -v {0}) and try again",
            lock.display()
        ),
        None => format!(
            "firewalld did not answer within {secs} s, so virtzone cannot prepare network {name}'s \
             bridge; check that firewalld runs (systemctl status firewalld) and try again"
        ),
    }
}

/// The hook's work for `start`, `started` and `stopped` (`fw`: `None` without a system bus).
async fn act(op: Op, network: &Network, fw: Option<&Firewalld>) -> Result<ExitCode, Failure> {
    if op == Op::Stopped {
        // A host bridge outlives the network: the admin's binding of it (if any) stays.
        if let Some(Bridged::HostBridge(br)) = network.bridged() {
            out!(
                "network {}: stopped; host bridge {br} keeps its zone (virtzone unbinds only the \
                 bridges libvirt owns)",
                network.name
            );
            return Ok(ExitCode::SUCCESS);
        }
        return stopped(fw, network.bridge.clone()).await;
    }
    // `start` and `started`: the zone libvirt's rules give this network on this firewalld.
    let facts = match fw {
        Some(fw) => crate::change::snapshot::firewalld_facts(fw).await?,
        None => FirewalldFacts::NotRunning { no_bus: true },
    };
    let verdict = precheck::decide(
        &Request {
            network,
            zone: None,
        },
        &facts,
    );
    if op == Op::Start {
        return check::report(network, &verdict, false);
    }
    if !verdict.ok {
        return Err(Failure::Refused(verdict.message));
    }
    if let Some(bridged) = network.bridged() {
        out!("{}", bridged_note(network, bridged, fw).await);
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(zone), Some(bridge), FirewalldFacts::Running(_), Some(fw)) =
        (verdict.zone, network.bridge.clone(), facts, fw)
    else {
        return Ok(ExitCode::SUCCESS);
    };
    // The network's definition decides its own bridge's zone, so an earlier zone is replaced.
    // `attach` reads firewalld again under the state lock, on the same connection: its plan must
    // come from facts no other virtzone process can change meanwhile.
    let req = Attach {
        bridge,
        zone,
        permanent: false,
        force: true,
        network: Some(network.name.clone()),
        source: None,
    };
    let state = match StateDir::locate(None) {
        Ok(state) => state,
        Err(e) => return bind_unrecorded(fw, &req, &e.to_string()).await,
    };
    match bind::attach(fw, &state, &req).await {
        Ok(message) => out!("{message}"),
        // A broken state file must not stop every network: bind without the record.
        Err(bind::BindError::State(e)) => return bind_unrecorded(fw, &req, &e.to_string()).await,
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The log line for a started network whose guests sit on a host bridge or on macvtap: virtzone
/// records the network (its forwards' record) but moves no host bridge into a zone; the admin's
/// binding (`virtzone attach`), if any, stands.
async fn bridged_note(network: &Network, bridged: Bridged<'_>, fw: Option<&Firewalld>) -> String {
    let net = &network.name;
    let br = match bridged {
        Bridged::Macvtap(devs) => {
            return format!(
                "network {net}: guests attach by macvtap to {}; their traffic never crosses the \
                 host's bridge netfilter path, so virtzone has no zone to set",
                devs.join(", ")
            )
        }
        Bridged::HostBridge(br) => br,
    };
    let zone = match fw {
        Some(fw) => match fw.zone_of_interface(br.as_str()).await {
            Ok(Some(z)) => format!("zone {z}"),
            Ok(None) => "no zone (firewalld's default zone applies)".to_string(),
            Err(e) => format!("a zone firewalld did not tell ({e})"),
        },
        None => "no zone (there is no system bus)".to_string(),
    };
    let bound = StateDir::locate(None)
        .ok()
        .and_then(|s| s.read::<Bindings>(BINDINGS_FILE).ok())
        .and_then(|b| b.bindings.get(br).map(|b| b.zone.to_string()));
    let who = match bound {
        Some(z) => format!("bound by its admin through virtzone to zone {z}, which stands"),
        None => format!("not bound by virtzone (virtzone attach {br} --zone ZONE binds it)"),
    };
    format!(
        "network {net}: guests on host bridge {br}, in {zone}; virtzone does not change the zone \
         of a host bridge: {br} is {who}. That zone's intra-zone forwarding decides the guests' \
         traffic when br_netfilter passes bridged frames to the IP firewall"
    )
}

/// Binds the bridge at runtime without recording it, when the state directory cannot be used. libvirt
/// re-binds its bridges after firewalld reloads itself, so the network works; only virtzone's daemon
/// will not know about this binding until the state is repaired.
async fn bind_unrecorded(fw: &Firewalld, req: &Attach, problem: &str) -> Result<ExitCode, Failure> {
    eprintln!(
        "virtzone: warning: {problem}; binding bridge {} to zone {} without recording it",
        req.bridge, req.zone
    );
    let plan = Plan {
        steps: vec![Step::ChangeZoneOfInterface {
            zone: req.zone.clone(),
            interface: req.bridge.clone(),
            previous: None,
        }],
        ..Plan::default()
    };
    Executor::new(&Live::new(fw, None))
        .run(&plan)
        .await
        .map_err(|e| Failure::Refused(format!("cannot bind bridge {}: {}", req.bridge, e.error)))?;
    out!(
        "bridge {} bound to zone {} (not recorded)",
        req.bridge,
        req.zone
    );
    Ok(ExitCode::SUCCESS)
}

/// `stopped end`: unbinds the bridge if virtzone bound it. libvirt ignores this exit status, so a
/// problem is reported and nothing else.
async fn stopped(fw: Option<&Firewalld>, bridge: Option<BridgeName>) -> Result<ExitCode, Failure> {
    let Some(bridge) = bridge else {
        return Ok(ExitCode::SUCCESS);
    };
    let state = StateDir::locate(None)?;
    let managed = match state.read::<Bindings>(BINDINGS_FILE) {
        Ok(b) => b.bindings.contains_key(&bridge),
        Err(e) => {
            eprintln!("virtzone: warning: {e}; leaving bridge {bridge} as it is");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if !managed {
        return Ok(ExitCode::SUCCESS);
    }
    let running = match fw {
        Some(fw) => fw.is_running().await?,
        None => false,
    };
    match fw.filter(|_| running) {
        Some(fw) => out!("{}", bind::detach(fw, &state, &bridge, false, false).await?),
        None => out!("{}", bind::forget(&state, &bridge).await?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The qemu hook: `started begin` and `reconnect begin` (libvirtd restarted with the domain
/// running) record the domain's interfaces from the XML on stdin and re-apply its forwards;
/// `stopped end` marks it stopped and takes its forwards out. Everything else does nothing.
///
/// It always exits 0 and prints nothing on stdout: a failing `started` hook makes libvirt kill the
/// domain, and for `migrate`/`restore` libvirt reads stdout as the domain's new XML. Problems are
/// warnings on stderr (libvirt logs them). Like the network hook it never calls libvirt (which
/// waits for it) and keeps to the hook budget.
async fn qemu(name: &str, op: &str, subop: &str) -> Result<ExitCode, Failure> {
    let mut xml = String::new();
    let read = std::io::stdin()
        .take(MAX_HOOK_DATA + 1)
        .read_to_string(&mut xml);
    let running = match (op, subop) {
        ("started" | "reconnect", "begin") => true,
        ("stopped", "end") => false,
        _ => return Ok(ExitCode::SUCCESS),
    };
    if let Err(e) = read {
        eprintln!("virtzone: warning: cannot read domain {name}'s XML from standard input: {e}");
        return Ok(ExitCode::SUCCESS);
    }
    let domain = match parse_domain_xml(&xml) {
        Ok(d) if d.name == name => d,
        Ok(d) => {
            eprintln!(
                "virtzone: warning: the XML describes domain {:?}, but the hook was called for {name:?}; \
                 leaving its forwards as they are",
                d.name
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            eprintln!("virtzone: warning: domain {name}: {e}; leaving its forwards as they are");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let budget = match Config::load() {
        Ok(c) => c.hook_timeout.unwrap_or(HOOK_BUDGET),
        Err(e) => {
            eprintln!("virtzone: warning: {e}");
            HOOK_BUDGET
        }
    };
    let connect = || async {
        match Firewalld::connect().await {
            Ok(fw) => Some(fw),
            Err(firewalld::Error::NoBus(_)) => None,
            Err(e) => {
                eprintln!("virtzone: warning: domain {name}'s forwards: {e}");
                None
            }
        }
    };
    let work = crate::forward::domain_hook(&domain, running, connect);
    if tokio::time::timeout(budget, work).await.is_err() {
        // The lock waits and firewalld calls end with the future; the process ends without
        // waiting for anything else (main), so libvirt gets its answer now.
        eprintln!(
            "virtzone: warning: skipped domain {name}'s forwards: not done within the hook's {} s \
             (HookTimeout=; another virtzone process holds the state lock, or firewalld does not \
             answer); virtzone serve brings recorded forwards up to date",
            budget.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}
