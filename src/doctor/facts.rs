//! What `doctor` reads from the host: firewalld over D-Bus (one connection), libvirt's records of its
//! running networks, sysctls, bridge ports, NetworkManager over D-Bus, firewalld's and virtzone's files,
//! the live ruleset, the hook and the daemon. Every reader tolerates absence: a fact that cannot be
//! read is `None`, which makes the checks that need it `skipped`, never guessed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::bind::{Bindings, BINDINGS_FILE};
use crate::change::snapshot::{Scope, Snapshot};
use crate::firewalld::{Backend, Firewalld, FirewalldFacts};
use crate::libvirt::{parse_network_xml, Network};
use crate::names::NetworkName;
use crate::state::StateDir;
use crate::status::Status;
use crate::zone;

/// Where libvirt keeps the live XML of its running networks.
pub const LIBVIRT_NETWORK_RUN_DIR: &str = "/run/libvirt/network";
/// Where virtzone's network hook is installed.
pub const HOOK_PATH: &str = "/etc/libvirt/hooks/network.d/50-virtzone";
/// Where virtzone's qemu hook is installed (for `forward add --domain`).
pub const QEMU_HOOK_PATH: &str = "/etc/libvirt/hooks/qemu.d/50-virtzone";
/// firewalld's admin and package configuration tiers.
const FIREWALLD_ETC: &str = "/etc/firewalld";
const FIREWALLD_USR: &str = "/usr/lib/firewalld";
/// systemd's record that the unit is enabled.
const UNIT_ENABLED: &str = "/etc/systemd/system/multi-user.target.wants/virtzone.service";
/// Files larger than this are not what they should be and are not read.
const MAX_FILE: u64 = 1 << 20;

/// One running libvirt network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// Its definition (name, bridge, zone, forward mode).
    pub network: Network,
    /// Whether it has an IPv6 address.
    pub ipv6: bool,
}

/// An `/etc/firewalld` copy of a libvirt zone or policy beside the packaged one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneCopy {
    /// The zone or policy.
    pub name: String,
    /// The /etc file.
    pub admin: PathBuf,
    /// The packaged file it shadows.
    pub package: PathBuf,
    /// How the /etc copy differs in meaning from the packaged one (empty: the same).
    pub differences: Vec<String>,
}

/// virtzone's network hook and libvirtd's start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookFacts {
    /// Where it should be.
    pub path: PathBuf,
    /// Whether it is there.
    pub exists: bool,
    /// Whether it is executable.
    pub executable: bool,
    /// When it was last changed.
    pub installed_at: Option<SystemTime>,
    /// When the running libvirtd (or virtnetworkd) started; `None` when none runs.
    pub libvirtd_started: Option<SystemTime>,
}

/// What mandatory access control says about libvirt running virtzone's hooks (the `mac` check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacFacts {
    /// `/sys/fs/selinux/enforce` (`1` enforcing, `0` permissive); `None` without SELinux.
    pub selinux_enforce: Option<String>,
    /// `/sys/fs/selinux/booleans/virt_hooks_unconfined` (`current pending`, e.g. `0 0`); `None`
    /// when the policy has no such boolean (or SELinux is off).
    pub virt_hooks_unconfined: Option<String>,
    /// Each installed hook with its SELinux label (xattr `security.selinux`; `None` unlabelled or
    /// unreadable).
    pub hook_labels: Vec<(PathBuf, Option<String>)>,
    /// The lines of `/sys/kernel/security/apparmor/profiles` naming libvirtd; `None` without
    /// AppArmor (or when securityfs cannot be read).
    pub apparmor_libvirtd: Option<Vec<String>>,
    /// The program the network hook executes (its `exec PROGRAM hook` line).
    pub hook_binary: Option<PathBuf>,
}

/// How long doctor waits for firewalld's answers in all: a hung firewalld is a finding, not a hang.
pub const FIREWALLD_BUDGET: Duration = Duration::from_secs(10);

/// Why firewalld's facts are missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewalldError {
    /// firewalld answers only root (and polkit-authorized users).
    #[error("firewalld refuses this user's questions ({0}); run doctor as root")]
    NotAuthorized(String),
    /// firewalld owns its name but did not answer.
    #[error("firewalld did not answer within {0} s")]
    NoAnswer(u64),
    /// Anything else.
    #[error("cannot ask firewalld: {0}")]
    Failed(String),
}

impl From<crate::firewalld::Error> for FirewalldError {
    fn from(e: crate::firewalld::Error) -> Self {
        match e {
            crate::firewalld::Error::NotAuthorized(m) => FirewalldError::NotAuthorized(m),
            other => FirewalldError::Failed(other.to_string()),
        }
    }
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Facts {
    /// firewalld's version, state, backend, zones (an error sentence when it could not be asked).
    pub firewalld: Result<FirewalldFacts, FirewalldError>,
    /// `virtzone status`'s report (zones' origin and drift, bridges' zones); `None` when unreadable.
    pub status: Option<Status>,
    /// The running libvirt networks (restricted to `--network` when given).
    pub networks: Vec<NetworkFacts>,
    /// virtzone's recorded bindings; `None` when unreadable.
    pub recorded: Option<Bindings>,
    /// `/etc/firewalld` copies of libvirt's zones and policies; `None` when unreadable.
    pub zone_copies: Option<Vec<ZoneCopy>>,
    /// Whether NetworkManager owns its name on the system bus; `None` when the bus could not be
    /// asked. When it runs, each bridge's profile is in `status` (`BridgeStatus::networkmanager`),
    /// read over D-Bus, never from keyfiles.
    pub nm_running: Option<bool>,
    /// sysctls by their /proc/sys path (`net/ipv4/ip_forward`), those that could be read.
    pub sysctl: BTreeMap<String, String>,
    /// sysctl configuration lines that turn forwarding off: `FILE: LINE`.
    pub sysctl_sources: Vec<String>,
    /// Each bridge's ports.
    pub bridge_ports: BTreeMap<String, Vec<String>>,
    /// nftables tables and iptables chains of other firewalls; `None` when the ruleset is unreadable.
    pub foreign_tables: Option<Vec<String>>,
    /// iptables-legacy rules (invisible to nft).
    pub legacy_rules: Vec<String>,
    /// firewalld.conf's `StrictForwardPorts`; `None` when unreadable.
    pub strict_forward_ports: Option<bool>,
    /// DNAT rules outside firewalld.
    pub foreign_dnat: Vec<String>,
    /// The live ruleset, read for the evaluator (with iptables-nft's saved lines); the error when
    /// unreadable.
    pub evaluable: Result<crate::verify::Ruleset, String>,
    /// The default route's interface, where forwarded guest traffic leaves.
    pub uplink: Option<String>,
    /// The host's addresses on each running network's bridge.
    pub bridge_addresses: BTreeMap<String, Vec<(std::net::IpAddr, u8)>>,
    /// The network hook.
    pub hook: HookFacts,
    /// The qemu hook (its `libvirtd_started` is the qemu driver's daemon: libvirtd or virtqemud).
    pub qemu_hook: HookFacts,
    /// How many forwards to domains by name are declared (they need the qemu hook).
    pub domain_forwards: usize,
    /// Whether virtzone's daemon owns its bus name; `None` when the bus could not be asked.
    pub daemon_running: Option<bool>,
    /// Whether virtzone.service is enabled.
    pub daemon_enabled: bool,
    /// SELinux and AppArmor as they concern the hooks.
    pub mac: MacFacts,
}

impl Facts {
    /// Facts of a host with nothing on it: no firewalld, no network, nothing read. The base of tests.
    pub fn empty() -> Facts {
        Facts {
            firewalld: Ok(FirewalldFacts::NotRunning { no_bus: true }),
            status: None,
            networks: Vec::new(),
            recorded: None,
            zone_copies: None,
            nm_running: None,
            sysctl: BTreeMap::new(),
            sysctl_sources: Vec::new(),
            bridge_ports: BTreeMap::new(),
            foreign_tables: None,
            legacy_rules: Vec::new(),
            strict_forward_ports: None,
            foreign_dnat: Vec::new(),
            evaluable: Err("not read".into()),
            uplink: None,
            bridge_addresses: BTreeMap::new(),
            hook: HookFacts::default(),
            qemu_hook: HookFacts::default(),
            domain_forwards: 0,
            daemon_running: None,
            daemon_enabled: false,
            mac: MacFacts::default(),
        }
    }
}

/// Why `--network` was refused (bad input).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnknownNetwork(pub String);

/// Gathers the facts, restricted to the running libvirt networks named in `only` (all when empty).
pub async fn gather(
    state: Option<&StateDir>,
    only: &[NetworkName],
) -> Result<Facts, UnknownNetwork> {
    let mut f = Facts {
        networks: running_networks(Path::new(LIBVIRT_NETWORK_RUN_DIR)),
        ..Facts::empty()
    };
    for name in only {
        if !f.networks.iter().any(|n| &n.network.name == name) {
            return Err(UnknownNetwork(format!(
                "no running libvirt network is named {name:?} (virsh net-list shows the running ones)"
            )));
        }
    }
    if !only.is_empty() {
        f.networks.retain(|n| only.contains(&n.network.name));
    }
    let fw = match Firewalld::connect().await {
        Ok(fw) => Some(fw),
        Err(crate::firewalld::Error::NoBus(_)) => None,
        Err(e) => {
            f.firewalld = Err(e.into());
            None
        }
    };
    if let Some(fw) = &fw {
        // One snapshot serves both firewalld's facts and status's report.
        let asked = async {
            let snap = Snapshot::gather(fw, &Scope::shipped()).await?;
            let status = match snap.firewalld {
                FirewalldFacts::Running(_) => Some(crate::status::from_snapshot(
                    &snap,
                    state,
                    crate::status::libvirt_firewall().await,
                )),
                FirewalldFacts::NotRunning { .. } => None,
            };
            Ok::<_, crate::firewalld::Error>((snap.firewalld, status))
        };
        match tokio::time::timeout(FIREWALLD_BUDGET, asked).await {
            Ok(Ok((facts, mut status))) => {
                f.firewalld = Ok(facts);
                // NetworkManager shares the bus: which profile sends each bridge's zone.
                let nm = crate::networkmanager::NetworkManager::new(fw.connection());
                f.nm_running = tokio::time::timeout(FIREWALLD_BUDGET, nm.is_running())
                    .await
                    .ok()
                    .and_then(Result::ok);
                if let (Some(true), Some(status)) = (f.nm_running, status.as_mut()) {
                    let named = crate::status::add_owners(status, fw.connection());
                    if tokio::time::timeout(FIREWALLD_BUDGET, named).await.is_err() {
                        f.nm_running = None;
                    }
                }
                f.status = status;
            }
            Ok(Err(e)) => f.firewalld = Err(e.into()),
            Err(_) => f.firewalld = Err(FirewalldError::NoAnswer(FIREWALLD_BUDGET.as_secs())),
        }
        f.daemon_running = tokio::time::timeout(
            FIREWALLD_BUDGET,
            crate::firewalld::bus::name_has_owner(fw.connection(), crate::daemon::BUS_NAME),
        )
        .await
        .ok()
        .and_then(Result::ok);
    }
    f.recorded = match state {
        Some(s) => s.read::<Bindings>(BINDINGS_FILE).ok(),
        None => None,
    };
    f.zone_copies = zone_copies(Path::new(FIREWALLD_ETC), Path::new(FIREWALLD_USR));
    for key in [
        "net/ipv4/ip_forward",
        "net/ipv6/conf/all/forwarding",
        "net/bridge/bridge-nf-call-iptables",
        "net/bridge/bridge-nf-call-ip6tables",
    ] {
        if let Some(v) = read_small(&Path::new("/proc/sys").join(key)) {
            f.sysctl.insert(key.to_string(), v.trim().to_string());
        }
    }
    f.sysctl_sources = sysctl_sources();
    f.bridge_ports = bridge_ports(Path::new("/sys/class/net"));
    let backend = match &f.firewalld {
        Ok(FirewalldFacts::Running(r)) => Some(r.backend),
        _ => None,
    };
    // One read of the ruleset serves both the list of foreign tables and the evaluator.
    match crate::verify::read_ruleset_json() {
        Ok(json) => {
            let (foreign, dnat) = foreign_rules(&json, backend);
            f.foreign_tables = Some(foreign);
            f.foreign_dnat = dnat;
            f.evaluable = crate::verify::ruleset_of(&json).map_err(|e| e.to_string());
        }
        Err(e) => f.evaluable = Err(e.to_string()),
    }
    f.legacy_rules = legacy_rules();
    f.uplink = crate::verify::host_facts().uplink;
    for n in &f.networks {
        if let Some(b) = &n.network.bridge {
            f.bridge_addresses
                .insert(b.to_string(), crate::verify::addresses(b.as_str()));
        }
    }
    // Bridges bound by hand (`virtzone attach`) are examined like the networks' bridges.
    for b in f.recorded.iter().flat_map(|r| r.bindings.keys()) {
        if f.bridge_ports.contains_key(b.as_str()) {
            f.bridge_addresses
                .entry(b.to_string())
                .or_insert_with(|| crate::verify::addresses(b.as_str()));
        }
    }
    f.strict_forward_ports = read_small(&Path::new(FIREWALLD_ETC).join("firewalld.conf"))
        .map(|conf| strict_forward_ports(&conf));
    f.hook = hook_facts(Path::new(HOOK_PATH), &["libvirtd", "virtnetworkd"]);
    f.qemu_hook = hook_facts(Path::new(QEMU_HOOK_PATH), &["libvirtd", "virtqemud"]);
    f.mac = mac_facts(
        Path::new("/sys"),
        &[Path::new(HOOK_PATH), Path::new(QEMU_HOOK_PATH)],
    );
    f.domain_forwards = state
        .and_then(|s| crate::forward::read_declared(s).ok())
        .map_or(0, |d| d.domain_forwards.len());
    f.daemon_enabled = Path::new(UNIT_ENABLED).exists();
    Ok(f)
}

/// A small text file, `None` when missing, unreadable or too large.
fn read_small(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE {
        return None;
    }
    fs::read_to_string(path).ok()
}

/// libvirt's running networks from its status files; unparsable ones are left out (they are
/// libvirt's, and `check` reports their problems).
pub fn running_networks(dir: &Path) -> Vec<NetworkFacts> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<NetworkFacts> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("xml"))
        .filter_map(|p| read_small(&p))
        .filter_map(|xml| {
            let network = parse_network_xml(&xml, None).ok()?;
            let ipv6 = network.has_ipv6();
            Some(NetworkFacts { network, ipv6 })
        })
        .collect();
    out.sort_by(|a, b| a.network.name.cmp(&b.network.name));
    out
}

/// `/etc/firewalld` copies of libvirt's zones and policies that shadow a packaged file.
pub fn zone_copies(etc: &Path, usr: &Path) -> Option<Vec<ZoneCopy>> {
    if !etc.is_dir() {
        return None;
    }
    // How the /etc copy differs in meaning from the packaged file, for either kind of object.
    fn differences<T, E: std::fmt::Display>(
        admin: &Path,
        package: &Path,
        parse: fn(&Path) -> Result<T, E>,
        diff: fn(&T, &T) -> Vec<String>,
    ) -> Vec<String> {
        match (parse(admin), parse(package)) {
            (Ok(a), Ok(p)) => diff(&p, &a),
            (Err(e), _) => vec![format!("the /etc copy does not load: {e}")],
            (_, Err(e)) => vec![format!("the packaged file does not load: {e}")],
        }
    }
    let mut out = Vec::new();
    for object in zone::SHIPPED_OBJECTS {
        let dir = match object.kind {
            zone::ObjectKind::Zone => "zones",
            zone::ObjectKind::Policy => "policies",
        };
        let file = format!("{}.xml", object.name);
        let (admin, package) = (etc.join(dir).join(&file), usr.join(dir).join(&file));
        if !(admin.exists() && package.exists()) {
            continue;
        }
        let differences = match object.kind {
            zone::ObjectKind::Zone => {
                differences(&admin, &package, zone::parse_zone_file, zone::Zone::diff)
            }
            zone::ObjectKind::Policy => differences(
                &admin,
                &package,
                zone::parse_policy_file,
                zone::Policy::diff,
            ),
        };
        out.push(ZoneCopy {
            name: object.name.to_string(),
            admin,
            package,
            differences,
        });
    }
    Some(out)
}

/// sysctl configuration lines that turn IP forwarding off.
fn sysctl_sources() -> Vec<String> {
    let mut files = vec![PathBuf::from("/etc/sysctl.conf")];
    for dir in ["/etc/sysctl.d", "/run/sysctl.d", "/usr/lib/sysctl.d"] {
        if let Ok(entries) = fs::read_dir(dir) {
            let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            more.sort();
            files.extend(more);
        }
    }
    let mut out = Vec::new();
    for file in files {
        let Some(text) = read_small(&file) else {
            continue;
        };
        for line in text.lines() {
            let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            let squeezed = squeezed.replace('/', ".");
            if (squeezed.starts_with("net.ipv4.ip_forward=0")
                || squeezed.starts_with("net.ipv6.conf.all.forwarding=0"))
                && !line.trim_start().starts_with('#')
            {
                out.push(format!("{}: {}", file.display(), line.trim()));
            }
        }
    }
    out
}

/// Each bridge's ports, from sysfs.
fn bridge_ports(sys: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(sys) else {
        return out;
    };
    for e in entries.flatten() {
        let brif = e.path().join("brif");
        if let Ok(ports) = fs::read_dir(&brif) {
            let mut ports: Vec<String> = ports
                .flatten()
                .map(|p| p.file_name().to_string_lossy().into_owned())
                .collect();
            ports.sort();
            out.insert(e.file_name().to_string_lossy().into_owned(), ports);
        }
    }
    out
}

/// Tables that belong to neither firewalld nor libvirt, and DNAT rules outside firewalld.
///
/// Which firewall owns a table can only be told by its name, so this list is explicit: firewalld's
/// own tables (`firewalld`), libvirt's nftables backend (`libvirt_network`), virtzone's (`inet virtzone`,
/// and its forwards' `VIRTZONE_*` chains), and the iptables-nft
/// tables, where the rules of iptables users live. In those, libvirt's chains are `LIBVIRT_*`; with
/// firewalld's iptables backend its chains share the tables too, so they are only judged when firewalld
/// uses nftables (otherwise left out, never guessed).
pub fn foreign_rules(json: &str, backend: Option<Backend>) -> (Vec<String>, Vec<String>) {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return (Vec::new(), Vec::new());
    };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let xtables_names = ["filter", "nat", "mangle", "raw", "security"];
    let is_xtables = |fam: &str, table: &str| {
        (matches!(fam, "ip" | "ip6") && xtables_names.contains(&table))
            || (fam == "bridge" && matches!(table, "filter" | "nat" | "broute"))
    };
    let mut foreign = Vec::new();
    let mut dnat = Vec::new();
    let mut rules_per_chain: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let mut base_chains: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for item in &items {
        if let Some(c) = item.get("chain") {
            let (fam, table, name) = (
                c["family"].as_str().unwrap_or_default().to_string(),
                c["table"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
            );
            if let Some(hook) = c["hook"].as_str() {
                let policy = c["policy"].as_str().unwrap_or("accept");
                base_chains
                    .entry((fam.clone(), table.clone()))
                    .or_default()
                    .push(format!("{name} (hook {hook}, policy {policy})"));
            }
        }
        if let Some(r) = item.get("rule") {
            let (fam, table, chain) = (
                r["family"].as_str().unwrap_or_default().to_string(),
                r["table"].as_str().unwrap_or_default().to_string(),
                r["chain"].as_str().unwrap_or_default().to_string(),
            );
            let text = r["expr"].to_string();
            // libvirt's iptables backend hooks its LIBVIRT_* chains in with plain jumps, and
            // virtzone its forwards' VIRTZONE_* chains.
            if !text.contains("\"target\":\"LIBVIRT_") && !text.contains("\"target\":\"VIRTZONE_") {
                *rules_per_chain
                    .entry((fam.clone(), table.clone(), chain.clone()))
                    .or_default() += 1;
            }
            let is_dnat = text.contains("\"dnat\"") || text.contains("\"DNAT\"");
            if is_dnat && table != "firewalld" && !chain.starts_with("LIBVIRT") {
                let firewalld_chain =
                    backend == Some(Backend::Iptables) && is_xtables(&fam, &table);
                if !firewalld_chain {
                    dnat.push(format!("table {fam} {table}, chain {chain}: {text}"));
                }
            }
        }
    }
    for ((fam, table), chains) in &base_chains {
        if table == "firewalld"
            || table == crate::libvirt::firewall::NFT_TABLE
            || (fam == "inet" && table == crate::host::LOCALNET_GUARD)
            // virtzone's own NAT table (issue #21) carries libvirt's masquerade, not a firewall.
            || (fam == crate::forward::masquerade::FAMILY
                && table == crate::forward::masquerade::TABLE)
        {
            continue;
        }
        if is_xtables(fam, table) {
            if backend != Some(Backend::Nftables) {
                continue;
            }
            let busy: Vec<String> = rules_per_chain
                .iter()
                .filter(|((f, t, c), n)| {
                    f == fam
                        && t == table
                        && !c.starts_with("LIBVIRT")
                        && !c.starts_with("VIRTZONE_")
                        && **n > 0
                })
                .map(|((_, _, c), n)| format!("{c} ({n} rules)"))
                .collect();
            if !busy.is_empty() {
                foreign.push(format!("iptables table {fam} {table}: {}", busy.join(", ")));
            }
            continue;
        }
        // An empty table whose base chains accept changes nothing (firewalld's iptables backend
        // leaves such ebtables tables behind): only rules or a dropping policy count.
        let rules: usize = rules_per_chain
            .iter()
            .filter(|((f, t, _), _)| f == fam && t == table)
            .map(|(_, n)| *n)
            .sum();
        let dropping = chains.iter().any(|c| c.contains("policy drop"));
        if rules > 0 || dropping {
            foreign.push(format!(
                "nftables table {fam} {table}: {} ({rules} rules)",
                chains.join(", ")
            ));
        }
    }
    let libvirt = crate::libvirt::firewall::Rules {
        nft_table: base_chains
            .keys()
            .any(|(_, t)| t == crate::libvirt::firewall::NFT_TABLE),
        iptables_chains: items.iter().any(|i| {
            i.get("chain")
                .and_then(|c| c["name"].as_str())
                .is_some_and(|n| n.starts_with("LIBVIRT_"))
        }),
        ..Default::default()
    };
    if libvirt.both() {
        foreign.push(
            "libvirt's nftables table and leftover LIBVIRT_* iptables chains both exist (from a backend switch)".into(),
        );
    }
    (foreign, dnat)
}

/// Rules in iptables-legacy's tables, which nft cannot see.
fn legacy_rules() -> Vec<String> {
    let mut out = Vec::new();
    for tool in ["iptables-legacy-save", "ip6tables-legacy-save"] {
        let Ok(o) = crate::external::output_within(
            &mut std::process::Command::new(tool),
            None,
            crate::external::COMMAND_TIMEOUT,
        ) else {
            continue;
        };
        if !o.status.success() {
            continue;
        }
        let rules = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count();
        if rules > 0 {
            out.push(format!(
                "{tool}: {rules} rules in iptables-legacy tables (invisible to nft and to firewalld)"
            ));
        }
    }
    out
}

/// `StrictForwardPorts=` of firewalld.conf (default no).
pub fn strict_forward_ports(conf: &str) -> bool {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .rfind(|(k, _)| k.trim() == "StrictForwardPorts")
        .is_some_and(|(_, v)| matches!(v.trim().to_ascii_lowercase().as_str(), "yes" | "true"))
}

/// Reads [`MacFacts`] from `sys` (`/sys`), for the hooks at `hooks`.
pub fn mac_facts(sys: &Path, hooks: &[&Path]) -> MacFacts {
    let selinux = sys.join("fs/selinux");
    let trimmed = |p: &Path| read_small(p).map(|v| v.trim().to_string());
    let apparmor_libvirtd = read_small(&sys.join("kernel/security/apparmor/profiles")).map(|all| {
        all.lines()
            .filter(|l| {
                let name = l.rsplit_once(" (").map_or(*l, |(n, _)| n);
                name == "libvirtd" || name.ends_with("/libvirtd")
            })
            .map(String::from)
            .collect()
    });
    MacFacts {
        selinux_enforce: trimmed(&selinux.join("enforce")),
        virt_hooks_unconfined: trimmed(&selinux.join("booleans/virt_hooks_unconfined")),
        hook_labels: hooks
            .iter()
            .filter(|h| h.exists())
            .map(|h| (h.to_path_buf(), selinux_label(h)))
            .collect(),
        apparmor_libvirtd,
        hook_binary: hooks
            .first()
            .and_then(|h| read_small(h))
            .and_then(|script| hook_program(&script)),
    }
}

/// The xattr `security.selinux` of `path`, without its trailing NUL.
fn selinux_label(path: &Path) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(path, "security.selinux", &mut buf[..]).ok()?;
    let label = String::from_utf8_lossy(&buf[..n.min(buf.len())]);
    Some(label.trim_end_matches('\0').to_string())
}

/// The program a hook script hands over to: `exec PROGRAM hook …`.
pub fn hook_program(script: &str) -> Option<PathBuf> {
    script.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next()? == "exec").then_some(())?;
        let program = words.next()?;
        (words.next()? == "hook").then(|| PathBuf::from(program))
    })
}

fn hook_facts(path: &Path, daemons: &[&str]) -> HookFacts {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).ok();
    HookFacts {
        path: path.to_path_buf(),
        exists: meta.is_some(),
        executable: meta
            .as_ref()
            .is_some_and(|m| m.permissions().mode() & 0o111 != 0),
        installed_at: meta.and_then(|m| m.modified().ok()),
        libvirtd_started: libvirtd_started(daemons),
    }
}

/// When the running daemon called one of `daemons` (libvirtd, or the modular one) started: boot
/// time plus its start in clock ticks (`/proc/PID/stat` field 22).
fn libvirtd_started(daemons: &[&str]) -> Option<SystemTime> {
    let btime: u64 = read_small(Path::new("/proc/stat"))?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let own_netns = fs::read_link("/proc/self/ns/net").ok();
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| read_small(&e.path().join("comm")).is_some_and(|c| daemons.contains(&c.trim())))
        // The libvirtd whose networks these are shares our network namespace.
        .filter(|e| fs::read_link(e.path().join("ns/net")).ok() == own_netns)
        .filter_map(|e| {
            let stat = read_small(&e.path().join("stat"))?;
            let after = stat.rsplit_once(')')?.1;
            let start: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
            Some(
                SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(btime)
                    + std::time::Duration::from_millis(start * 1000 / ticks),
            )
        })
        .min()
}
