//! Forwards to libvirt domains by name (`forward add --domain`): what the qemu hook records about
//! running domains, and the pure resolution of each domain forward to a guest address.
//!
//! The qemu hook records a running domain's interfaces on virtual networks (MAC and network, from
//! the XML libvirt passes on stdin), its UUID and the boot it runs in at `started`/`reconnect`, and
//! at `stopped end` marks it stopped, or forgets it when no forward names it (`domains.json`, next
//! to `networks.json`). A running domain's forward resolves through the chosen interface's MAC:
//! first the network's static DHCP `<host>` (recorded by the network hook), else dnsmasq's lease in
//! `LEASE_DIR/BRIDGE.status` — refused while the MAC holds several unexpired leases, or while the
//! kernel's neighbour table sees the address at another MAC (a guest can ask dnsmasq for a lease
//! with any MAC). A resolved forward is planned exactly like a `--guest` forward; an unresolved or
//! stopped one is planned as absent, and what was applied for it before (`applied`) is taken out.
//! Nothing here asks libvirt anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::model::{Declared, DomainForward, Forward};
use super::network::{NetworkRecord, Networks};
use crate::libvirt::Domain;
use crate::libvirt::ForwardMode;
use crate::names::NetworkName;
use crate::state::{Config, StateError};

/// The state file of running-domain facts.
pub const DOMAINS_FILE: &str = "domains.json";
/// Where libvirt's dnsmasq keeps its lease status files, unless configured otherwise.
pub const DEFAULT_LEASE_DIR: &str = "/var/lib/libvirt/dnsmasq";
/// Overrides `LeaseDirectory=` (as `VIRTZONE_STATE_DIR` overrides `StateDirectory=`).
pub const LEASE_DIR_ENV: &str = "VIRTZONE_LEASE_DIR";
/// A status file is read as a stream, keeping only the wanted MACs' leases; more than this is not
/// read (a parse error, as for a file that is not dnsmasq's).
const MAX_STATUS_STREAM: u64 = 64 << 20;
/// At most this many leases of the wanted MACs are kept from one status file.
const MAX_LEASES_KEPT: usize = 4096;
/// The same status-file warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(600);
/// Where Linux tells the id of the running boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// One interface of a domain on a libvirt virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The network.
    pub network: NetworkName,
    /// Its MAC address, lower-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A domain as the qemu hook last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// Between `started` (or `reconnect`) and `stopped`, in the boot `boot`.
    pub running: bool,
    /// Its UUID (lower-case), which tells a domain from a later one of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The boot id at the time of recording: a record of an earlier boot is of a domain that
    /// stopped with the host, whatever `running` says (no `stopped` hook runs in a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// Its interfaces on virtual networks.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
}

impl DomainRecord {
    /// The record of a running domain parsed from the hook's XML, in boot `boot`. Interfaces on
    /// networks no forward could name are left out.
    pub fn running(domain: &Domain, boot: Option<String>) -> DomainRecord {
        DomainRecord {
            running: true,
            uuid: domain.uuid.clone(),
            boot,
            interfaces: domain
                .interfaces
                .iter()
                .filter_map(|i| {
                    Some(Interface {
                        network: NetworkName::new(&i.network).ok()?,
                        mac: i.mac.clone(),
                    })
                })
                .collect(),
        }
    }

    /// Whether the domain runs now: recorded running, in this boot (`boot`: the running boot's id,
    /// `None` if unknown; a record without one is from a virtzone that did not store it).
    pub fn runs(&self, boot: Option<&str>) -> bool {
        self.running
            && match (self.boot.as_deref(), boot) {
                (Some(then), Some(now)) => then == now,
                _ => true,
            }
    }
}

/// Where a domain forward points while resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The network of the chosen interface.
    pub network: NetworkName,
    /// The guest's address.
    pub guest: IpAddr,
}

/// `domains.json`: the domains and what was last applied for each domain forward.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domains {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// name → record.
    #[serde(default)]
    pub domains: BTreeMap<String, DomainRecord>,
    /// Forward id → the target firewalld and iptables were last brought to (so a stopped domain's
    /// or a changed address's entries can be taken out).
    #[serde(default)]
    pub applied: BTreeMap<u32, Target>,
    /// Forward id → the UUID of the domain it was first resolved for: a later domain of the same
    /// name (another UUID) does not get the forward (docs/forwards.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uuids: BTreeMap<u32, String>,
}

fn one() -> u32 {
    1
}

impl Domains {
    /// Forgets the domains no forward needs: those not running now (stopped, or recorded in an
    /// earlier boot) that no domain forward of `declared` names. Records of running domains stay,
    /// so a forward added while one runs resolves at once.
    pub fn prune(&mut self, declared: &Declared, boot: Option<&str>) {
        let named: BTreeSet<&str> = declared
            .domain_forwards
            .iter()
            .map(|f| f.domain.as_str())
            .collect();
        self.domains
            .retain(|name, rec| rec.runs(boot) || named.contains(name.as_str()));
    }
}

/// The running boot's id; `None` where Linux does not tell it.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID).ok()?;
    let id = id.trim();
    (!id.is_empty() && id.len() <= 64).then(|| id.to_string())
}

/// A lease from dnsmasq's status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub ip: IpAddr,
    /// The client's MAC, lower-case.
    pub mac: String,
    /// Expiry as seconds since the epoch (0: never).
    pub expiry: u64,
}

#[derive(Deserialize)]
struct LeaseJson {
    #[serde(rename = "ip-address")]
    ip: Option<String>,
    #[serde(rename = "mac-address")]
    mac: Option<String>,
    #[serde(rename = "expiry-time", default)]
    expiry: Option<u64>,
}

impl LeaseJson {
    /// The lease, if it has a MAC and an address (DHCPv6 ones may not).
    fn lease(self) -> Option<Lease> {
        Some(Lease {
            ip: self.ip?.trim().parse().ok()?,
            mac: self.mac?.trim().to_ascii_lowercase(),
            expiry: self.expiry.unwrap_or(0),
        })
    }
}

/// The leases of a status file's array, one entry at a time, keeping those of `wanted` MACs
/// (`None`: all) up to [`MAX_LEASES_KEPT`].
struct Wanted<'a>(Option<&'a BTreeSet<String>>);

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Vec<Lease>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of leases")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Lease>, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = seq.next_element::<LeaseJson>()? {
            let Some(lease) = entry.lease() else { continue };
            if self.0.is_none_or(|w| w.contains(&lease.mac)) && out.len() < MAX_LEASES_KEPT {
                out.push(lease);
            }
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Vec<Lease>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Lease>, D::Error> {
        d.deserialize_seq(self)
    }
}

/// Parses libvirt's `BRIDGE.status` (a JSON array of leases) from `reader` as a stream, keeping
/// the leases of the `wanted` MACs (`None`: all); entries without MAC or address (e.g. DHCPv6
/// ones) are skipped. An empty file has no leases.
pub fn parse_status_from(
    reader: impl Read,
    wanted: Option<&BTreeSet<String>>,
) -> Result<Vec<Lease>, String> {
    let mut reader = BufReader::new(reader.take(MAX_STATUS_STREAM + 1));
    // Leading white space, and a file of nothing else (dnsmasq's helper creates it empty).
    loop {
        let buf = reader.fill_buf().map_err(|e| e.to_string())?;
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let done = blank < buf.len();
        reader.consume(blank);
        if done {
            break;
        }
    }
    let mut de = serde_json::Deserializer::from_reader(&mut reader);
    let leases = Wanted(wanted)
        .deserialize(&mut de)
        .and_then(|l| de.end().map(|()| l));
    match leases {
        // The cap cut the stream: say so rather than "EOF while parsing".
        Err(_) if reader.get_ref().limit() == 0 => {
            Err(format!("it is larger than {MAX_STATUS_STREAM} bytes"))
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// Parses libvirt's `BRIDGE.status` text, keeping every lease.
pub fn parse_status(text: &str) -> Result<Vec<Lease>, String> {
    parse_status_from(text.as_bytes(), None)
}

/// An entry of the kernel's neighbour table on a bridge, in a state that says the address is in
/// use at that MAC now (`REACHABLE`, `DELAY`, `PROBE`, `PERMANENT`; a `STALE` entry can be of a
/// guest long gone, since small tables are never collected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The address.
    pub ip: IpAddr,
    /// Its MAC, lower-case.
    pub mac: String,
}

#[derive(Deserialize)]
struct NeighbourJson {
    dst: Option<String>,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// Parses `ip -j neigh show dev BRIDGE`, keeping the entries that say the address is in use.
pub fn parse_neighbours(json: &str) -> Result<Vec<Neighbour>, String> {
    let raw: Vec<NeighbourJson> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .filter(|n| {
            n.state
                .iter()
                .any(|s| matches!(s.as_str(), "REACHABLE" | "DELAY" | "PROBE" | "PERMANENT"))
        })
        .filter_map(|n| {
            Some(Neighbour {
                ip: n.dst?.parse().ok()?,
                mac: n.lladdr?.to_ascii_lowercase(),
            })
        })
        .collect())
}

/// What resolution looks at besides the state files, gathered by [`observe`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Bridge → the leases of its status file (of the MACs forwards need).
    pub leases: BTreeMap<String, Vec<Lease>>,
    /// Bridge → its neighbour entries in use.
    pub neighbours: BTreeMap<String, Vec<Neighbour>>,
    /// Seconds since the epoch.
    pub now: u64,
    /// The running boot's id.
    pub boot: Option<String>,
}

/// How a domain forward stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Resolved: planned like a `--guest` forward to this target.
    Active(Target),
    /// The domain (or its network) is not running, or virtzone has not seen it: planned as absent.
    Inactive(String),
    /// The domain runs but its interface has no static host and no lease yet: planned as absent
    /// until dnsmasq hands out a lease.
    Waiting {
        /// The network of the chosen interface.
        network: NetworkName,
        /// Its MAC.
        mac: String,
    },
    /// The domain runs but which address is its own is in doubt (several unexpired leases for its
    /// MAC, or the address seen at another MAC): planned as absent, logged.
    Ambiguous(String),
    /// The domain runs but the forward cannot be resolved (which interface, or versions): planned as
    /// absent, logged.
    Unresolvable(String),
}

impl Status {
    /// `forward list`'s word.
    pub fn word(&self) -> &'static str {
        match self {
            Status::Active(_) => "active",
            Status::Inactive(_) | Status::Unresolvable(_) => "inactive",
            Status::Waiting { .. } => "waiting-for-address",
            Status::Ambiguous(_) => "ambiguous-address",
        }
    }

    /// Why it is not active, when there is more to say than the word.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Inactive(m) | Status::Unresolvable(m) | Status::Ambiguous(m) => Some(m),
            Status::Active(_) | Status::Waiting { .. } => None,
        }
    }
}

/// The interface `f` uses on a running domain: the one on `--network`, else the only one on a
/// network virtzone knows. `Err` is one sentence.
pub fn interface_for<'a>(
    f: &DomainForward,
    rec: &'a DomainRecord,
    networks: &Networks,
) -> Result<&'a Interface, String> {
    let candidates: Vec<&Interface> = match &f.network {
        Some(net) => rec
            .interfaces
            .iter()
            .filter(|i| &i.network == net)
            .collect(),
        None => rec
            .interfaces
            .iter()
            .filter(|i| networks.networks.contains_key(&i.network))
            .collect(),
    };
    match (candidates.as_slice(), &f.network) {
        ([one], _) => Ok(one),
        ([], Some(net)) => Err(format!(
            "domain {} has no interface on network {net}",
            f.domain
        )),
        ([], None) => Err(format!(
            "domain {} has no interface on a libvirt network virtzone knows",
            f.domain
        )),
        (_, Some(net)) => Err(format!(
            "domain {} has several interfaces on network {net}, and virtzone cannot tell which \
             one the forward means",
            f.domain
        )),
        (_, None) => Err(format!(
            "domain {} has several interfaces on libvirt networks; pass --network to choose one",
            f.domain
        )),
    }
}

/// Why no address was found for a MAC.
enum NoAddress {
    /// No static host and no lease (yet).
    Waiting,
    /// An address was found, but it is in doubt.
    Ambiguous(String),
    /// The static host is unusable.
    Unusable(String),
}

/// The address of `mac` on network `rec` (bridge neighbours `neigh`): its static host, else its
/// only unexpired lease inside the network's subnets (IPv4 preferred); in doubt when the MAC holds
/// several such leases of that IP version, or when the kernel sees the address at another MAC.
fn address_of(
    mac: &str,
    network: &str,
    rec: &NetworkRecord,
    leases: &[Lease],
    neigh: &[Neighbour],
    now: u64,
) -> Result<IpAddr, NoAddress> {
    let guest = |ip: IpAddr| rec.subnets.iter().any(|s| s.contains(ip)) && !rec.host.contains(&ip);
    let ip = if let Some(h) = rec.hosts.iter().find(|h| h.mac == mac) {
        if !guest(h.ip) {
            return Err(NoAddress::Unusable(format!(
                "network {network}'s static DHCP host for {mac} has address {}, which is not a \
                 guest address of the network's subnets, so virtzone does not use it; correct the \
                 <host> entry (virsh net-update)",
                h.ip
            )));
        }
        h.ip
    } else {
        let mine: BTreeSet<IpAddr> = leases
            .iter()
            .filter(|l| l.mac == mac && (l.expiry == 0 || l.expiry > now) && guest(l.ip))
            .map(|l| l.ip)
            .collect();
        let v4: Vec<&IpAddr> = mine.iter().filter(|ip| ip.is_ipv4()).collect();
        let pick: Vec<&IpAddr> = if v4.is_empty() {
            mine.iter().collect()
        } else {
            v4
        };
        match pick.as_slice() {
            [] => return Err(NoAddress::Waiting),
            [one] => **one,
            several => {
                let list: Vec<String> = several.iter().map(ToString::to_string).collect();
                return Err(NoAddress::Ambiguous(format!(
                    "{mac} holds {} unexpired leases on network {network} ({}), and a guest can \
                     ask for a lease with any MAC, so virtzone cannot tell which address is the \
                     domain's; give the domain a static DHCP host (docs/forwards.md)",
                    several.len(),
                    list.join(", ")
                )));
            }
        }
    };
    if let Some(other) = neigh.iter().find(|n| n.ip == ip && n.mac != mac) {
        return Err(NoAddress::Ambiguous(format!(
            "the host sees {ip} at MAC {}, not at the domain's {mac}, on network {network}, so \
             another guest uses the address",
            other.mac
        )));
    }
    Ok(ip)
}

/// Resolves one domain forward. `uuid`: the UUID of the domain it was first resolved for.
pub fn resolve(
    f: &DomainForward,
    domains: &Domains,
    networks: &Networks,
    seen: &Observed,
) -> Status {
    let Some(rec) = domains
        .domains
        .get(&f.domain)
        .filter(|r| r.runs(seen.boot.as_deref()))
    else {
        return Status::Inactive(format!("domain {} is not running", f.domain));
    };
    if let (Some(then), Some(now)) = (domains.uuids.get(&f.id), &rec.uuid) {
        if then != now {
            return Status::Unresolvable(format!(
                "domain {} is now another domain (UUID {now}) than the forward was made for \
                 (UUID {then}); remove the forward and add it again to forward to the new one",
                f.domain
            ));
        }
    }
    let iface = match interface_for(f, rec, networks) {
        Ok(i) => i,
        Err(e) => return Status::Unresolvable(e),
    };
    let Some(net) = networks.networks.get(&iface.network).filter(|n| n.active) else {
        return Status::Inactive(format!("network {} is not running", iface.network));
    };
    if net.forward == ForwardMode::None {
        return Status::Unresolvable(format!(
            "network {} is isolated, so libvirt lets no forwarded traffic reach domain {}",
            iface.network, f.domain
        ));
    }
    let Some(mac) = &iface.mac else {
        return Status::Unresolvable(format!(
            "domain {}'s interface on network {} has no MAC address",
            f.domain, iface.network
        ));
    };
    let bridge = net.bridge.as_str();
    let leases = seen.leases.get(bridge).map_or(&[][..], Vec::as_slice);
    let neigh = seen.neighbours.get(bridge).map_or(&[][..], Vec::as_slice);
    match address_of(mac, iface.network.as_str(), net, leases, neigh, seen.now) {
        Ok(ip) if f.host_address.is_some_and(|h| h.is_ipv4() != ip.is_ipv4()) => {
            Status::Unresolvable(format!(
                "domain {}'s address {ip} and host address {} are of different IP versions",
                f.domain,
                f.host_address.map_or(String::new(), |h| h.to_string())
            ))
        }
        Ok(ip) => Status::Active(Target {
            network: iface.network.clone(),
            guest: ip,
        }),
        Err(NoAddress::Waiting) => Status::Waiting {
            network: iface.network.clone(),
            mac: mac.clone(),
        },
        Err(NoAddress::Ambiguous(m)) => Status::Ambiguous(m),
        Err(NoAddress::Unusable(m)) => Status::Unresolvable(m),
    }
}

/// What the planner gets, and what to remember afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The declared state with every resolved domain forward as a plain forward (and no domain
    /// forwards): the planner's input.
    pub declared: Declared,
    /// Forwards whose earlier target is no longer wanted (stopped domain, new address, removed).
    pub gone: Vec<Forward>,
    /// Forward id → target now, to be stored as `applied` once applied.
    pub applied: BTreeMap<u32, Target>,
    /// Forward id → the UUID of its domain, to be stored as `uuids`.
    pub uuids: BTreeMap<u32, String>,
    /// Each domain forward's status, by id.
    pub statuses: BTreeMap<u32, Status>,
}

impl Resolution {
    /// Whether a running domain's forward waits for a lease (the daemon then polls the leases).
    pub fn waiting(&self) -> bool {
        self.statuses
            .values()
            .any(|s| matches!(s, Status::Waiting { .. } | Status::Ambiguous(_)))
    }
}

/// Resolves every domain forward of `declared`; `removed` are domain forwards just taken out
/// (their applied targets become `gone`).
pub fn effective(
    declared: &Declared,
    removed: &[DomainForward],
    domains: &Domains,
    networks: &Networks,
    seen: &Observed,
) -> Resolution {
    // The planner plans `forwards`; it looks at `domain_forwards` only to create virtzone's
    // policies ahead of a domain's first start (creating one means a reload, which has no place in
    // the qemu hook's budget).
    let mut plain = declared.clone();
    let mut applied = BTreeMap::new();
    let mut uuids = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for f in &declared.domain_forwards {
        let status = resolve(f, domains, networks, seen);
        if let Status::Active(t) = &status {
            plain.forwards.push(f.resolved(&t.network, t.guest));
            applied.insert(f.id, t.clone());
        }
        // The first domain a forward meets is the one it keeps.
        let running = domains
            .domains
            .get(&f.domain)
            .filter(|r| r.runs(seen.boot.as_deref()));
        if let Some(u) = domains
            .uuids
            .get(&f.id)
            .or_else(|| running.and_then(|r| r.uuid.as_ref()))
        {
            uuids.insert(f.id, u.clone());
        }
        statuses.insert(f.id, status);
    }
    let mut gone = Vec::new();
    for (id, old) in &domains.applied {
        if applied.get(id) == Some(old) {
            continue;
        }
        let f = declared
            .domain_forwards
            .iter()
            .chain(removed)
            .find(|f| f.id == *id);
        if let Some(f) = f {
            gone.push(f.resolved(&old.network, old.guest));
        }
    }
    Resolution {
        declared: plain,
        gone,
        applied,
        uuids,
        statuses,
    }
}

/// The lease directory: `$VIRTZONE_LEASE_DIR`, else `LeaseDirectory=`, else libvirt's default.
pub fn lease_dir() -> Result<PathBuf, StateError> {
    if let Some(p) = std::env::var_os(LEASE_DIR_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(Config::load()?
        .lease_directory
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LEASE_DIR)))
}

/// Logs `message` about `path` unless it was logged in the last [`WARN_EVERY`]: a broken status
/// file is read at every check.
fn warn_limited(path: &Path, message: &str) {
    static LAST: Mutex<BTreeMap<PathBuf, Instant>> = Mutex::new(BTreeMap::new());
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let due = last.get(path).is_none_or(|at| at.elapsed() >= WARN_EVERY);
    if due {
        last.insert(path.to_path_buf(), Instant::now());
        tracing::warn!("{}: {message}", path.display());
    }
}

/// Reads one status file's leases of the `wanted` MACs. A missing file has none; anything but a
/// regular file (a FIFO would block the reader for good) is refused.
fn read_status_file(path: &Path, wanted: &BTreeSet<String>) -> Result<Vec<Lease>, String> {
    use rustix::fs::{Mode, OFlags};
    // Never through a symlink (the file decides which guest a forward reaches), never blocking.
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    crate::state::regular(&fd).map_err(|_| "it is not a regular file".to_string())?;
    parse_status_from(std::fs::File::from(fd), Some(wanted))
        .map_err(|e| format!("not a dnsmasq lease status file: {e}"))
}

/// `ip -j neigh show dev BRIDGE`'s entries in use; none when `ip` cannot tell (the check is an
/// extra: leases decide).
fn read_neighbours(bridge: &str) -> Vec<Neighbour> {
    let out = crate::external::output_within(
        std::process::Command::new("ip").args(["-j", "neigh", "show", "dev", bridge]),
        None,
        crate::external::COMMAND_TIMEOUT,
    );
    match out {
        Ok(o) if o.status.success() => {
            parse_neighbours(&String::from_utf8_lossy(&o.stdout)).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Gathers what the running domains' forwards need: the leases of their MACs in the status files
/// of their bridges, the bridges' neighbours, the time and the boot. A missing or broken status
/// file counts as no leases (a broken one is logged, at most every ten minutes: the forward then
/// waits).
pub fn observe(
    dir: &Path,
    declared: &Declared,
    domains: &Domains,
    networks: &Networks,
) -> Observed {
    let boot = boot_id();
    let mut seen = Observed {
        now: now(),
        ..Observed::default()
    };
    let mut wanted: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let running = declared
        .domain_forwards
        .iter()
        .filter_map(|f| {
            domains
                .domains
                .get(&f.domain)
                .filter(|r| r.runs(boot.as_deref()))
        })
        .flat_map(|r| &r.interfaces);
    for iface in running {
        let (Some(net), Some(mac)) = (networks.networks.get(&iface.network), &iface.mac) else {
            continue;
        };
        wanted
            .entry(net.bridge.as_str())
            .or_default()
            .insert(mac.clone());
    }
    for (bridge, macs) in wanted {
        let path = dir.join(format!("{bridge}.status"));
        let leases = read_status_file(&path, &macs).unwrap_or_else(|e| {
            warn_limited(&path, &e);
            Vec::new()
        });
        seen.leases.insert(bridge.to_string(), leases);
        seen.neighbours
            .insert(bridge.to_string(), read_neighbours(bridge));
    }
    seen.boot = boot;
    seen
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::model::{ForwardRule, Ports, Proto};
    use crate::forward::network::{StaticHost, Subnet};
    use crate::names::BridgeName;

    fn df(id: u32, domain: &str, network: Option<&str>) -> DomainForward {
        DomainForward {
            id,
            domain: domain.into(),
            network: network.map(|n| n.parse().unwrap()),
            rule: ForwardRule {
                proto: Proto::Tcp,
                host_port: Ports { lo: 8080, hi: 8080 },
                guest_port: Ports { lo: 80, hi: 80 },
                host_address: None,
                from_host: false,
                hairpin: false,
            },
        }
    }

    fn net(bridge: &str, prefix: &str, hosts: &[(&str, &str)]) -> NetworkRecord {
        NetworkRecord {
            bridge: BridgeName::new(bridge).unwrap(),
            forward: ForwardMode::Nat,
            subnets: vec![format!("{prefix}.0/24").parse::<Subnet>().unwrap()],
            host: vec![format!("{prefix}.1").parse().unwrap()],
            active: true,
            hosts: hosts
                .iter()
                .map(|(m, i)| StaticHost {
                    mac: m.to_string(),
                    ip: i.parse().unwrap(),
                })
                .collect(),
            nat: None,
        }
    }

    fn world() -> (Domains, Networks) {
        let mut networks = Networks::default();
        networks.networks.insert(
            "n1".parse().unwrap(),
            net("virbr1", "192.0.2", &[("52:54:00:00:00:02", "192.0.2.20")]),
        );
        networks
            .networks
            .insert("n2".parse().unwrap(), net("virbr2", "198.51.100", &[]));
        let mut domains = Domains::default();
        let iface = |n: &str, m: &str| Interface {
            network: n.parse().unwrap(),
            mac: Some(m.into()),
        };
        domains.domains.insert(
            "one".into(),
            DomainRecord {
                running: true,
                uuid: None,
                boot: None,
                interfaces: vec![iface("n1", "52:54:00:00:00:01")],
            },
        );
        domains.domains.insert(
            "two".into(),
            DomainRecord {
                running: true,
                uuid: None,
                boot: None,
                interfaces: vec![
                    iface("n1", "52:54:00:00:00:02"),
                    iface("n2", "52:54:00:00:00:03"),
                ],
            },
        );
        (domains, networks)
    }

    /// What resolution sees at time `now`, with the leases of [`leases`].
    fn seen(now: u64) -> Observed {
        Observed {
            leases: leases(),
            now,
            ..Observed::default()
        }
    }

    fn leases() -> BTreeMap<String, Vec<Lease>> {
        let text = r#"[{"ip-address":"192.0.2.150","mac-address":"52:54:00:00:00:01",
            "hostname":"g","expiry-time":2000},
            {"ip-address":"192.0.2.151","mac-address":"52:54:00:00:00:01","expiry-time":500},
            {"ip-address":"2001:db8::5","iaid":"1","expiry-time":2000},
            {"ip-address":"198.51.100.9","mac-address":"52:54:00:00:00:03","expiry-time":2000}]"#;
        let all = parse_status(text).unwrap();
        assert_eq!(all.len(), 3);
        BTreeMap::from([("virbr1".to_string(), all.clone()), ("virbr2".into(), all)])
    }

    #[test]
    fn lease_then_static_host_then_waiting() {
        let (mut domains, networks) = world();
        // The unexpired lease, not the expired one.
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen(1000)),
            Status::Active(Target {
                network: "n1".parse().unwrap(),
                guest: "192.0.2.150".parse().unwrap()
            })
        );
        // A static host wins over leases; --network picks the interface.
        assert_eq!(
            resolve(&df(2, "two", Some("n1")), &domains, &networks, &seen(1000)),
            Status::Active(Target {
                network: "n1".parse().unwrap(),
                guest: "192.0.2.20".parse().unwrap()
            })
        );
        assert!(matches!(
            resolve(&df(2, "two", Some("n2")), &domains, &networks, &seen(1000)),
            Status::Active(Target { ref network, .. }) if network == "n2"
        ));
        // Several interfaces without --network, or none on the given one.
        assert!(matches!(
            resolve(&df(3, "two", None), &domains, &networks, &seen(1000)),
            Status::Unresolvable(m) if m.contains("--network")
        ));
        assert!(matches!(
            resolve(&df(3, "one", Some("n2")), &domains, &networks, &seen(1000)),
            Status::Unresolvable(_)
        ));
        // Every lease expired: waiting.
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen(3000)).word(),
            "waiting-for-address"
        );
        // Stopped or unknown: inactive.
        domains.domains.get_mut("one").unwrap().running = false;
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen(1000)).word(),
            "inactive"
        );
        assert_eq!(
            resolve(&df(1, "ghost", None), &domains, &networks, &seen(1000)).word(),
            "inactive"
        );
    }

    #[test]
    fn a_stopped_domain_gives_back_what_was_applied() {
        let (mut domains, networks) = world();
        let declared = Declared {
            domain_forwards: vec![df(4, "one", None)],
            ..Declared::default()
        };
        let r = effective(&declared, &[], &domains, &networks, &seen(1000));
        assert_eq!(r.declared.forwards.len(), 1);
        assert!(r.gone.is_empty());
        assert!(!r.waiting());
        domains.applied = r.applied.clone();

        domains.domains.get_mut("one").unwrap().running = false;
        let r = effective(&declared, &[], &domains, &networks, &seen(1000));
        assert!(r.declared.forwards.is_empty());
        assert_eq!(r.gone.len(), 1);
        assert_eq!(r.gone[0].guest.to_string(), "192.0.2.150");
        assert!(r.applied.is_empty());

        // Removed: its applied target goes too.
        domains.domains.get_mut("one").unwrap().running = true;
        let r = effective(
            &Declared::default(),
            &declared.domain_forwards,
            &domains,
            &networks,
            &seen(1000),
        );
        assert_eq!(r.gone.len(), 1);
        // Waiting for a lease.
        let r = effective(&declared, &[], &domains, &networks, &Observed::default());
        assert!(r.waiting());
    }

    #[test]
    fn status_files() {
        assert!(parse_status("").unwrap().is_empty());
        assert!(parse_status("[]").unwrap().is_empty());
        assert!(parse_status("{").is_err());
        let l = parse_status(r#"[{"ip-address":"192.0.2.5","mac-address":"52:54:00:AA:00:01"}]"#)
            .unwrap();
        assert_eq!((l[0].mac.as_str(), l[0].expiry), ("52:54:00:aa:00:01", 0));
    }

    #[test]
    fn several_leases_or_another_neighbour_put_the_address_in_doubt() {
        let (domains, networks) = world();
        let lease = |ip: &str, expiry| Lease {
            ip: ip.parse().unwrap(),
            mac: "52:54:00:00:00:01".into(),
            expiry,
        };
        let mut seen = Observed {
            leases: BTreeMap::from([(
                "virbr1".to_string(),
                vec![lease("192.0.2.150", 2000), lease("192.0.2.160", 2500)],
            )]),
            now: 1000,
            ..Observed::default()
        };
        let s = resolve(&df(1, "one", None), &domains, &networks, &seen);
        assert_eq!(s.word(), "ambiguous-address", "{s:?}");
        assert!(
            s.reason().unwrap().contains("192.0.2.150, 192.0.2.160"),
            "{s:?}"
        );
        // One expired: no doubt. A lease outside the subnets does not count either.
        seen.now = 2100;
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen).word(),
            "active"
        );
        seen.now = 1000;
        seen.leases.get_mut("virbr1").unwrap()[1] = lease("203.0.113.5", 2500);
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen).word(),
            "active"
        );
        // The kernel sees the address at another MAC.
        seen.neighbours.insert(
            "virbr1".into(),
            vec![Neighbour {
                ip: "192.0.2.150".parse().unwrap(),
                mac: "52:54:00:00:00:99".into(),
            }],
        );
        let s = resolve(&df(1, "one", None), &domains, &networks, &seen);
        assert_eq!(s.word(), "ambiguous-address", "{s:?}");
        // At the domain's own MAC: fine.
        seen.neighbours.get_mut("virbr1").unwrap()[0].mac = "52:54:00:00:00:01".into();
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen).word(),
            "active"
        );
    }

    #[test]
    fn neighbour_entries_in_use_only() {
        let json = r#"[{"dst":"192.0.2.5","dev":"virbr1","lladdr":"52:54:00:AA:00:01",
            "state":["REACHABLE"]},{"dst":"192.0.2.6","lladdr":"52:54:00:aa:00:02",
            "state":["STALE"]},{"dst":"192.0.2.7","state":["FAILED"]},
            {"dst":"192.0.2.8","lladdr":"52:54:00:aa:00:08","state":["PERMANENT"]}]"#;
        let n = parse_neighbours(json).unwrap();
        assert_eq!(
            n.iter().map(|n| n.mac.as_str()).collect::<Vec<_>>(),
            ["52:54:00:aa:00:01", "52:54:00:aa:00:08"]
        );
        assert!(parse_neighbours("nonsense").is_err());
    }

    #[test]
    fn a_static_host_outside_the_subnets_is_not_used() {
        let (domains, mut networks) = world();
        networks.networks.get_mut("n1").unwrap().hosts[0].ip = "203.0.113.20".parse().unwrap();
        let s = resolve(&df(2, "two", Some("n1")), &domains, &networks, &seen(1000));
        assert_eq!(s.word(), "inactive");
        assert!(s.reason().unwrap().contains("203.0.113.20"), "{s:?}");
    }

    #[test]
    fn records_of_another_boot_and_other_domains_of_the_name() {
        let (mut domains, networks) = world();
        let mut seen = seen(1000);
        seen.boot = Some("b2".into());
        let one = domains.domains.get_mut("one").unwrap();
        one.boot = Some("b1".into());
        one.uuid = Some("u1".into());
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &seen).word(),
            "inactive"
        );
        domains.domains.get_mut("one").unwrap().boot = Some("b2".into());
        let declared = Declared {
            domain_forwards: vec![df(1, "one", None)],
            ..Declared::default()
        };
        let r = effective(&declared, &[], &domains, &networks, &seen);
        assert_eq!(r.uuids, BTreeMap::from([(1, "u1".to_string())]));
        domains.uuids = r.uuids;
        domains.domains.get_mut("one").unwrap().uuid = Some("u2".into());
        let r = effective(&declared, &[], &domains, &networks, &seen);
        assert!(r.declared.forwards.is_empty());
        assert!(r.statuses[&1].reason().unwrap().contains("u2"));
        // The pin stays until the forward goes.
        assert_eq!(r.uuids, BTreeMap::from([(1, "u1".to_string())]));
        let r = effective(&Declared::default(), &[], &domains, &networks, &seen);
        assert!(r.uuids.is_empty());
    }

    #[test]
    fn prune_keeps_running_and_named_domains() {
        let (mut domains, _) = world();
        for r in domains.domains.values_mut() {
            r.running = false;
        }
        domains.domains.get_mut("two").unwrap().running = true;
        domains.domains.get_mut("two").unwrap().boot = Some("old".into());
        let declared = Declared::default();
        let mut kept = domains.clone();
        kept.prune(&declared, Some("old"));
        assert_eq!(kept.domains.keys().collect::<Vec<_>>(), ["two"]);
        // Of an earlier boot: gone too, unless a forward names it.
        let mut kept = domains.clone();
        kept.prune(&declared, Some("new"));
        assert!(kept.domains.is_empty());
        let named = Declared {
            domain_forwards: vec![df(1, "one", None)],
            ..Declared::default()
        };
        domains.prune(&named, Some("new"));
        assert_eq!(domains.domains.keys().collect::<Vec<_>>(), ["one"]);
    }

    #[test]
    fn status_files_are_streamed_for_the_wanted_macs() {
        // Larger than any cap a whole-file read had (4 MiB), the wanted lease last.
        let mut text = String::from("[");
        for i in 0..60_000u32 {
            text.push_str(&format!(
                r#"{{"ip-address":"10.{}.{}.{}","mac-address":"52:54:00:{:02x}:{:02x}:{:02x}","expiry-time":9,"hostname":"filler-{i}"}},"#,
                i >> 16,
                (i >> 8) & 255,
                i & 255,
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        text.push_str(r#"{"ip-address":"192.0.2.5","mac-address":"52:54:00:AA:00:01"}]"#);
        assert!(text.len() > 4 << 20, "{}", text.len());
        let wanted = BTreeSet::from(["52:54:00:aa:00:01".to_string()]);
        let l = parse_status_from(text.as_bytes(), Some(&wanted)).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].ip.to_string(), "192.0.2.5");
        assert!(parse_status_from(&b"  \n "[..], None).unwrap().is_empty());
        assert!(parse_status_from(&b"[] x"[..], None).is_err());
        assert!(parse_status_from(&b"[{"[..], None).is_err());
    }
}
