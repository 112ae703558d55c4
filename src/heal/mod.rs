//! Healing after a wipe of the ruleset: `nft flush ruleset` (Debian's `nftables.service` on start and
//! stop, scripts, well-meant advice), `iptables -F`.
//!
//! Such a wipe takes firewalld's table (or, on its iptables backend, its jumps), libvirt's rules and
//! virtzone's own chains and guard away, and neither firewalld nor libvirt notices: guests lose
//! upstream and every forward until someone reloads. The daemon compares what exists with what the
//! running components must have ([`verdict`], pure) after every burst of ruleset changes, and when
//! firewalld's or libvirt's part is gone it asks firewalld to reload, through the executor
//! ([`Step::Reload`]). That restores everything in the right order: firewalld rebuilds its own rules,
//! libvirt rebuilds its rules on firewalld's `Reloaded`, and virtzone's bindings and forwards follow
//! (the binding reconcile on `Reloaded`, the forwards' watch after libvirt's rebuild). The localnet
//! guard comes back on its own ([`crate::forward::guard`]), whatever firewalld does.
//!
//! Once per wipe ([`Healer`]): the ruleset must have been quiet for [`QUIET`] (a rebuild by firewalld
//! or libvirt is a stream of changes, a wipe is one), no firewalld reload or new owner within
//! [`AFTER_RELOAD`] (libvirt is rebuilding then), at most one heal per [`MIN_INTERVAL`], and after a
//! heal nothing more until everything was seen in place again. The heal's own reload therefore never
//! triggers another one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::{info, warn};
use zbus::{MatchRule, MessageStream};

use crate::change::executor::Live;
use crate::change::{Executor, Plan, Step};
use crate::firewalld::proxy::{BUS_NAME as FIREWALLD, PATH as FIREWALLD_PATH};
use crate::firewalld::{Backend, Firewalld, State};
use crate::forward::network::Networks;
use crate::libvirt::ForwardMode;
use crate::state::StateDir;

#[cfg(test)]
mod tests;

/// How long the ruleset must have been quiet before a missing piece counts as wiped.
pub const QUIET: Duration = Duration::from_millis(300);
/// How long after firewalld's `Reloaded` (or a new owner of its name) nothing counts as wiped:
/// libvirt rebuilds its rules then, deleting them first.
pub const AFTER_RELOAD: Duration = Duration::from_secs(2);
/// The least time between two heals.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// How long after asking firewalld to reload a heal may take before the daemon says what is still
/// missing (once) and waits for it to be seen in place again.
pub const GIVE_UP: Duration = Duration::from_secs(15);
/// How long one reading of the ruleset (a few nft listings) may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// The chain of firewalld's nftables table whose presence shows its rules (every release since 0.6).
pub const FIREWALLD_CHAIN: &str = "filter_INPUT";

/// An `nft list tables` entry: family and name.
pub type Table = (String, String);
/// A chain: family, table, chain.
pub type Chain = (String, String, String);
/// Chains that exist, with their jump (and goto) targets.
pub type Jumps = BTreeMap<Chain, BTreeSet<String>>;

/// libvirt's firewall backend (decided in [`crate::libvirt::firewall`]).
pub use crate::libvirt::firewall::LibvirtBackend;

/// A running libvirt network that has firewall rules of libvirt's (NAT, routed, isolated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunningNetwork {
    /// NAT (libvirt's masquerade in `nat`).
    pub nat: bool,
    /// It has an IPv4 subnet.
    pub ipv4: bool,
    /// It has an IPv6 subnet.
    pub ipv6: bool,
}

/// What the verdict decides from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// firewalld's state and backend; `None` while it is not running.
    pub firewalld: Option<(State, Backend)>,
    /// The nftables tables that exist (iptables-nft's `ip filter`, `ip nat` among them).
    pub tables: BTreeSet<Table>,
    /// The chains of [`CHAINS`] that exist, with their jump targets (a missing chain has no entry).
    pub jumps: Jumps,
    /// libvirt's backend, when known.
    pub libvirt: Option<LibvirtBackend>,
    /// The running networks (from the network hook's records).
    pub networks: Vec<RunningNetwork>,
    /// Whether some interface has `route_localnet` on (then the localnet guard must exist).
    pub localnet: bool,
}

/// The chains read: one of firewalld's nftables table (a wipe may leave the table itself behind:
/// measured with firewalld 2.5.2, its table is back, empty, right after `nft flush ruleset`), and
/// the base chains where firewalld's iptables backend and libvirt's iptables rules hook in, which
/// `iptables -F` empties.
pub const CHAINS: [(&str, &str, &str); 4] = [
    ("inet", "firewalld", FIREWALLD_CHAIN),
    ("ip", "filter", "INPUT"),
    ("ip", "filter", "FORWARD"),
    ("ip", "nat", "POSTROUTING"),
];

/// Something a running component must have and the ruleset lacks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Missing {
    /// firewalld's nftables table `inet firewalld`, or its chains.
    FirewalldTable,
    /// firewalld's iptables jumps (`INPUT_*`) in `ip filter INPUT`.
    FirewalldJumps,
    /// libvirt's nftables table (`ip`/`ip6 libvirt_network`), by family.
    LibvirtTable(&'static str),
    /// libvirt's iptables jump to `target` in a base chain.
    LibvirtJump {
        /// `filter` or `nat`.
        table: &'static str,
        /// The base chain.
        chain: &'static str,
        /// libvirt's chain.
        target: &'static str,
    },
    /// virtzone's localnet guard (table `inet virtzone`).
    Guard,
}

impl Missing {
    /// Whether a firewalld reload brings it back (firewalld's and libvirt's parts); virtzone's guard
    /// comes back on its own.
    pub fn needs_reload(&self) -> bool {
        !matches!(self, Missing::Guard)
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::FirewalldTable => {
                write!(
                    f,
                    "firewalld's rules (table inet firewalld, chain {FIREWALLD_CHAIN})"
                )
            }
            Missing::FirewalldJumps => write!(f, "firewalld's jumps in ip filter INPUT"),
            Missing::LibvirtTable(family) => {
                write!(
                    f,
                    "libvirt's table {family} {}",
                    crate::libvirt::firewall::NFT_TABLE
                )
            }
            Missing::LibvirtJump {
                table,
                chain,
                target,
            } => write!(f, "libvirt's jump to {target} in ip {table} {chain}"),
            Missing::Guard => write!(
                f,
                "virtzone's localnet guard (table inet {})",
                crate::host::LOCALNET_GUARD
            ),
        }
    }
}

/// What is missing: empty when everything the running components need is in place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The missing pieces: firewalld's, libvirt's (in the order its rules hook in), virtzone's.
    pub missing: Vec<Missing>,
}

impl Verdict {
    /// Whether a firewalld reload is called for.
    pub fn wiped(&self) -> bool {
        self.missing.iter().any(Missing::needs_reload)
    }

    /// The missing pieces, comma-separated.
    pub fn list(&self) -> String {
        self.missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Compares what exists with what the running components must have. firewalld counts only while it
/// runs and has finished loading (`RUNNING`: not starting, not failed, not stopped); libvirt only
/// while one of its networks with rules runs and its backend is known.
pub fn verdict(f: &Facts) -> Verdict {
    let has_table = |family: &str, name: &str| {
        f.tables
            .iter()
            .any(|(fa, n)| fa.as_str() == family && n.as_str() == name)
    };
    let jumps = |table: &str, chain: &str| {
        f.jumps
            .iter()
            .find(|((fa, t, c), _)| fa == "ip" && t == table && c == chain)
            .map(|(_, j)| j)
    };
    let jumps_to = |table: &str, chain: &str, pred: &dyn Fn(&str) -> bool| {
        jumps(table, chain).is_some_and(|j| j.iter().any(|t| pred(t)))
    };
    let mut missing = Vec::new();
    let firewalld_chain: Chain = ("inet".into(), "firewalld".into(), FIREWALLD_CHAIN.into());
    missing.extend(match &f.firewalld {
        Some((State::Running, Backend::Nftables)) => {
            (!f.jumps.contains_key(&firewalld_chain)).then_some(Missing::FirewalldTable)
        }
        Some((State::Running, Backend::Iptables)) => {
            (!jumps_to("filter", "INPUT", &|t| t.starts_with("INPUT_")))
                .then_some(Missing::FirewalldJumps)
        }
        _ => None,
    });
    let ipv4 = f.networks.iter().any(|n| n.ipv4);
    let ipv6 = f.networks.iter().any(|n| n.ipv6);
    let nat = f.networks.iter().any(|n| n.nat && n.ipv4);
    match f.libvirt {
        _ if f.networks.is_empty() => {}
        Some(LibvirtBackend::Nftables) => {
            for (family, wanted) in [("ip", ipv4), ("ip6", ipv6)] {
                if wanted && !has_table(family, crate::libvirt::firewall::NFT_TABLE) {
                    missing.push(Missing::LibvirtTable(family));
                }
            }
        }
        Some(LibvirtBackend::Iptables) if ipv4 => {
            let mut wanted = vec![
                ("filter", "INPUT", "LIBVIRT_INP"),
                ("filter", "FORWARD", "LIBVIRT_FWX"),
            ];
            if nat {
                wanted.push(("nat", "POSTROUTING", "LIBVIRT_PRT"));
            }
            for (table, chain, target) in wanted {
                if !jumps_to(table, chain, &|t| t == target) {
                    missing.push(Missing::LibvirtJump {
                        table,
                        chain,
                        target,
                    });
                }
            }
        }
        _ => {}
    }
    if f.localnet && !has_table("inet", crate::host::LOCALNET_GUARD) {
        missing.push(Missing::Guard);
    }
    Verdict { missing }
}

/// libvirt's backend: its `network.conf` setting, else what its rules show (its nftables table
/// among `tables`, or jumps to its `LIBVIRT_*` chains), else what was seen before (a wipe takes the
/// rules that showed it). The decision is [`crate::libvirt::firewall::decide`].
pub fn libvirt_backend(
    conf: Option<&str>,
    tables: &BTreeSet<Table>,
    jumps: &Jumps,
    before: Option<LibvirtBackend>,
) -> Option<LibvirtBackend> {
    let rules = crate::libvirt::firewall::Rules {
        nft_table: tables
            .iter()
            .any(|(_, name)| name == crate::libvirt::firewall::NFT_TABLE),
        iptables_chains: jumps
            .values()
            .any(|j| j.iter().any(|t| t.starts_with("LIBVIRT_"))),
        ..Default::default()
    };
    crate::libvirt::firewall::decide(conf, &rules).or(before)
}

/// The running networks with libvirt rules among the network hook's records: active, their bridge
/// among `bridges` (a record from before a reboot still says active while libvirt has not started
/// the network yet), and NAT, routed or isolated (an `open` network has no rules of libvirt's).
pub fn running_networks(records: &Networks, bridges: &[String]) -> Vec<RunningNetwork> {
    records
        .networks
        .values()
        .filter(|r| {
            r.active
                && matches!(
                    r.forward,
                    ForwardMode::Nat | ForwardMode::Route | ForwardMode::None
                )
        })
        .filter(|r| bridges.iter().any(|b| b.as_str() == r.bridge.as_str()))
        .map(|r| RunningNetwork {
            nat: r.forward == ForwardMode::Nat,
            ipv4: r.subnets.iter().any(|s| s.addr.is_ipv4()),
            ipv6: r.subnets.iter().any(|s| s.addr.is_ipv6()),
        })
        .collect()
}

/// What the daemon does after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing (in place, or already reported).
    Nothing,
    /// Look again at this time (still settling, or rate-limited), unless an event comes first.
    CheckAt(Instant),
    /// Ask firewalld to reload: the ruleset was wiped.
    Reload,
    /// Everything is back, `took` after the wipe was first seen.
    Healed {
        /// From the first check that saw it missing.
        took: Duration,
    },
    /// A heal did not bring everything back within [`GIVE_UP`]: say so, once.
    StillMissing,
    /// Wiped while firewalld does not run (or is not loaded): nothing to ask; say so, once.
    CannotReload,
}

/// The heal's memory between checks: when the ruleset last changed, firewalld last reloaded, the
/// wipe was first seen, the last heal was asked; whether a heal may fire (armed) again.
#[derive(Debug, Clone)]
pub struct Healer {
    armed: bool,
    last_change: Option<Instant>,
    last_reload: Option<Instant>,
    seen: Option<Instant>,
    healing: Option<Instant>,
    last_heal: Option<Instant>,
}

impl Default for Healer {
    fn default() -> Self {
        Healer {
            armed: true,
            last_change: None,
            last_reload: None,
            seen: None,
            healing: None,
            last_heal: None,
        }
    }
}

impl Healer {
    /// The ruleset changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }

    /// firewalld reloaded, or its name got a new owner, at `now`.
    pub fn reloaded(&mut self, now: Instant) {
        self.last_reload = Some(now);
    }

    /// Decides after a check whose verdict is `v`; `can_reload` says whether firewalld runs and has
    /// loaded (someone to ask).
    pub fn decide(&mut self, v: &Verdict, can_reload: bool, now: Instant) -> Action {
        if !v.wiped() {
            self.seen = None;
            self.armed = true;
            return match self.healing.take() {
                Some(since) => Action::Healed {
                    took: now.saturating_duration_since(since),
                },
                None => Action::Nothing,
            };
        }
        let seen = *self.seen.get_or_insert(now);
        if let Some(asked) = self.last_heal.filter(|_| self.healing.is_some()) {
            let limit = asked + GIVE_UP;
            if now < limit {
                return Action::CheckAt(limit);
            }
            self.healing = None;
            return Action::StillMissing;
        }
        if !self.armed {
            return Action::Nothing;
        }
        let not_before = [
            self.last_change.map(|t| t + QUIET),
            self.last_reload.map(|t| t + AFTER_RELOAD),
            self.last_heal.map(|t| t + MIN_INTERVAL),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(t) = not_before.filter(|t| now < *t) {
            return Action::CheckAt(t);
        }
        if !can_reload {
            self.armed = false;
            return Action::CannotReload;
        }
        self.armed = false;
        self.healing = Some(seen);
        self.last_heal = Some(now);
        Action::Reload
    }
}

/// Reads the ruleset: the tables, and the chains of [`CHAINS`] whose table exists.
pub fn read_ruleset() -> Result<(BTreeSet<Table>, Jumps), String> {
    let tables = parse_tables(&crate::external::nft_json(&["list", "tables"])?)?;
    let mut jumps = BTreeMap::new();
    for (family, table, chain) in CHAINS {
        if !tables.contains(&(family.to_string(), table.to_string())) {
            continue;
        }
        // nft fails on a chain that does not exist: no entry.
        if let Ok(json) = crate::external::nft_json(&["list", "chain", family, table, chain]) {
            jumps.insert(
                (family.into(), table.into(), chain.into()),
                parse_jumps(&json),
            );
        }
    }
    Ok((tables, jumps))
}

/// The tables of `nft -j list tables`.
pub fn parse_tables(json: &str) -> Result<BTreeSet<Table>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("nft printed bad JSON: {e}"))?;
    Ok(v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    let t = i.get("table")?;
                    Some((t["family"].as_str()?.into(), t["name"].as_str()?.into()))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The jump (and goto) targets in the rules of `nft -j list chain …`.
pub fn parse_jumps(json: &str) -> BTreeSet<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return BTreeSet::new();
    };
    let rules = v["nftables"].as_array().cloned().unwrap_or_default();
    rules
        .iter()
        .filter_map(|i| i.get("rule")?.get("expr")?.as_array().cloned())
        .flatten()
        .filter_map(|e| {
            e.get("jump")
                .or_else(|| e.get("goto"))
                .and_then(|j| j["target"].as_str())
                .map(String::from)
        })
        .collect()
}

/// firewalld's state and backend; `None` when it does not run or does not answer (starting,
/// leaving: nothing of its counts then).
async fn firewalld_side(fw: &Firewalld) -> Option<(State, Backend)> {
    match fw.is_running().await {
        Ok(true) => match (fw.state().await, fw.backend().await) {
            (Ok(s), Ok(b)) => Some((s, b)),
            _ => None,
        },
        _ => None,
    }
}

/// Reads the facts of the ruleset and the hook's records, with `firewalld` as given.
async fn facts(
    firewalld: Option<(State, Backend)>,
    state: &StateDir,
    before: Option<LibvirtBackend>,
) -> Result<Facts, String> {
    let listing = tokio::task::spawn_blocking(read_ruleset);
    let (tables, jumps) = match tokio::time::timeout(NFT_TIMEOUT, listing).await {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => return Err(format!("cannot read the ruleset: {e}")),
        _ => return Err(format!("nft did not answer within {NFT_TIMEOUT:?}")),
    };
    let conf = std::fs::read_to_string(crate::libvirt::firewall::NETWORK_CONF)
        .ok()
        .as_deref()
        .and_then(crate::libvirt::firewall::from_network_conf);
    let libvirt = libvirt_backend(conf.as_deref(), &tables, &jumps, before);
    let networks = crate::forward::read_networks(state)
        .map(|n| running_networks(&n, &crate::host::bridges().unwrap_or_default()))
        .unwrap_or_default();
    Ok(Facts {
        firewalld,
        tables,
        jumps,
        libvirt,
        networks,
        localnet: !crate::host::route_localnet_on().is_empty(),
    })
}

/// The facts of one check, asking firewalld only when needed: the ruleset is read first as if
/// firewalld ran with the backend it had (`known`); only when that finds something missing (or the
/// backend is not known yet) is firewalld asked, and the ruleset read again after its answer (which
/// waits for a reload in progress to end, so the second reading never catches it half-way). An
/// intact ruleset, the common case after every change, costs firewalld nothing.
async fn check_facts(
    fw: &Firewalld,
    state: &StateDir,
    known: &mut Option<Backend>,
    before: Option<LibvirtBackend>,
) -> Result<Facts, String> {
    if let Some(b) = *known {
        let f = facts(Some((State::Running, b)), state, before).await?;
        if !verdict(&f).wiped() {
            return Ok(f);
        }
    }
    let side = firewalld_side(fw).await;
    if let Some((_, b)) = side {
        *known = Some(b);
    }
    facts(side, state, before).await
}

/// The heal: firewalld's reload, after an empty `inet firewalld` where the wipe took firewalld's
/// table (its reload deletes the table first, and fails when there is none).
pub fn plan(v: &Verdict) -> Plan {
    let mut steps = Vec::new();
    if v.missing.contains(&Missing::FirewalldTable) {
        steps.push(Step::NftAddTable {
            family: "inet".into(),
            name: "firewalld".into(),
        });
    }
    steps.push(Step::Reload);
    Plan {
        steps,
        warnings: Vec::new(),
    }
}

/// Asks firewalld to reload, through the executor.
async fn reload(fw: &Firewalld, v: &Verdict) -> Result<(), String> {
    let live = Live::new(fw, None);
    Executor::new(&live)
        .run(&plan(v))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Watches for wipes until the netlink watch or the bus ends; the daemon spawns it beside the
/// localnet guard's watch.
pub async fn run(fw: Firewalld, state: StateDir) {
    let mut changes = match crate::forward::triggers::ruleset_changes() {
        Ok(rx) => rx,
        Err(e) => {
            warn!("cannot watch the netfilter ruleset ({e}); a wiped ruleset is not healed");
            return;
        }
    };
    let conn = fw.connection().clone();
    let reloads = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(FIREWALLD)
        .interface(FIREWALLD)
        .member("Reloaded")
        .path(FIREWALLD_PATH)
        .build();
    let reloads = match reloads {
        Ok(rule) => MessageStream::for_match_rule(rule, &conn, None).await,
        Err(e) => Err(e),
    };
    let owners = match zbus::fdo::DBusProxy::new(&conn).await {
        Ok(dbus) => {
            dbus.receive_name_owner_changed_with_args(&[(0, FIREWALLD)])
                .await
        }
        Err(e) => Err(e),
    };
    let (mut reloads, mut owners) = match (reloads, owners) {
        (Ok(r), Ok(o)) => (r, o),
        (Err(e), _) | (_, Err(e)) => {
            warn!("cannot watch firewalld's reloads ({e}); a wiped ruleset is not healed");
            return;
        }
    };
    let mut healer = Healer::default();
    let mut backend = None;
    // One check at the start: a wipe while the daemon was away is healed too.
    let mut next: Option<Instant> = Some(Instant::now());
    let mut nft_failed = false;
    // firewalld's backend as last answered; forgotten when its name changes owner.
    let mut firewalld_backend = None;
    loop {
        let wake = next.map(tokio::time::Instant::from_std);
        tokio::select! {
            got = changes.recv() => match got {
                Some(()) => healer.changed(Instant::now()),
                None => return,
            },
            got = reloads.next() => match got {
                Some(_) => { healer.reloaded(Instant::now()); continue }
                None => return,
            },
            got = owners.next() => match got {
                Some(_) => { healer.reloaded(Instant::now()); firewalld_backend = None; continue }
                None => return,
            },
            () = async { if let Some(w) = wake { tokio::time::sleep_until(w).await } }, if wake.is_some() => {}
        }
        next = None;
        let f = match check_facts(&fw, &state, &mut firewalld_backend, backend).await {
            Ok(f) => f,
            // Said once until nft answers again: every ruleset change would repeat it.
            Err(e) => {
                if !nft_failed {
                    warn!("heal: {e}; a wiped ruleset is not healed meanwhile");
                }
                nft_failed = true;
                continue;
            }
        };
        nft_failed = false;
        backend = f.libvirt;
        let v = verdict(&f);
        // Signals that came while the facts were read (firewalld's answer waits for its reload's
        // end, and its `Reloaded` comes before that answer) count before deciding.
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(reloads.next()) {
            healer.reloaded(Instant::now());
        }
        if matches!(f.firewalld, Some((State::Init, _))) {
            // firewalld is loading (before 2.4.0 it owns its name first, and no signal marks the
            // end): nothing of it counts yet, and nobody can be asked; look again shortly.
            next = Some(Instant::now() + QUIET);
            continue;
        }
        let can_reload = matches!(f.firewalld, Some((State::Running, _)));
        match healer.decide(&v, can_reload, Instant::now()) {
            Action::Nothing => {}
            Action::CheckAt(t) => next = Some(t),
            Action::Reload => {
                warn!(
                    "heal: the ruleset was wiped (missing {}); asking firewalld to reload",
                    v.list()
                );
                if let Err(e) = reload(&fw, &v).await {
                    warn!("heal: firewalld's reload failed: {e}");
                }
                next = Some(Instant::now() + GIVE_UP);
            }
            Action::Healed { took } => info!(
                "heal: everything is back, {} ms after the wipe was seen",
                took.as_millis()
            ),
            Action::StillMissing => warn!(
                "heal: still missing {} {} s after firewalld's reload; restart libvirtd (or the \
                 network) to rebuild libvirt's rules",
                v.list(),
                GIVE_UP.as_secs()
            ),
            Action::CannotReload => warn!(
                "heal: missing {}, and firewalld is not running (or failed to load): nothing to \
                 ask; start firewalld or restart libvirtd",
                v.list()
            ),
        }
    }
}
