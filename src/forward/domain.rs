//! Forwards to libvirt domains by name (`forward add --domain`): what the qemu hook records about
//! running domains, and the pure resolution of each domain forward to a guest address.
//!
//! The qemu hook records a domain's interfaces on virtual networks (MAC and network, from the XML
//! libvirt passes on stdin) at `started`/`reconnect` and marks it stopped at `stopped end`
//! (`domains.json`, next to `networks.json`). A running domain's forward resolves through the
//! chosen interface's MAC: first the network's static DHCP `<host>` (recorded by the network hook),
//! else dnsmasq's lease in `LEASE_DIR/BRIDGE.status`. A resolved forward is planned exactly like a
//! `--guest` forward; an unresolved or stopped one is planned as absent, and what was applied for
//! it before (`applied`) is taken out. Nothing here asks libvirt anything.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{Declared, DomainForward, Forward};
use super::network::{NetworkRecord, Networks};
use crate::libvirt::Domain;
use crate::state::{Config, StateError};

/// The state file of running-domain facts.
pub const DOMAINS_FILE: &str = "domains.json";
/// Where libvirt's dnsmasq keeps its lease status files, unless configured otherwise.
pub const DEFAULT_LEASE_DIR: &str = "/var/lib/libvirt/dnsmasq";
/// Overrides `LeaseDirectory=` (as `VIRTZONE_STATE_DIR` overrides `StateDirectory=`).
pub const LEASE_DIR_ENV: &str = "VIRTZONE_LEASE_DIR";
/// A status file larger than this is not dnsmasq's.
const MAX_STATUS_FILE: u64 = 4 << 20;

/// One interface of a domain on a libvirt virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The network.
    pub network: String,
    /// Its MAC address, lower-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A domain as the qemu hook last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// Between `started` (or `reconnect`) and `stopped`.
    pub running: bool,
    /// Its interfaces on virtual networks.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
}

impl DomainRecord {
    /// The record of a running domain parsed from the hook's XML.
    pub fn running(domain: &Domain) -> DomainRecord {
        DomainRecord {
            running: true,
            interfaces: domain
                .interfaces
                .iter()
                .map(|i| Interface {
                    network: i.network.clone(),
                    mac: i.mac.clone(),
                })
                .collect(),
        }
    }
}

/// Where a domain forward points while resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The network of the chosen interface.
    pub network: String,
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
}

fn one() -> u32 {
    1
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

/// Parses libvirt's `BRIDGE.status` (a JSON array of leases); entries without MAC or address (e.g.
/// DHCPv6 ones) are skipped.
pub fn parse_status(text: &str) -> Result<Vec<Lease>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<LeaseJson> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(raw
        .into_iter()
        .filter_map(|l| {
            Some(Lease {
                ip: l.ip?.trim().parse().ok()?,
                mac: l.mac?.trim().to_ascii_lowercase(),
                expiry: l.expiry.unwrap_or(0),
            })
        })
        .collect())
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
        network: String,
        /// Its MAC.
        mac: String,
    },
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

/// The address of `mac` on network `rec`: its static host, else its newest unexpired lease (IPv4
/// preferred) inside the network's subnets.
fn address_of(mac: &str, rec: &NetworkRecord, leases: &[Lease], now: u64) -> Option<IpAddr> {
    if let Some(h) = rec.hosts.iter().find(|h| h.mac == mac) {
        return Some(h.ip);
    }
    leases
        .iter()
        .filter(|l| l.mac == mac && (l.expiry == 0 || l.expiry > now))
        .filter(|l| rec.subnets.iter().any(|s| s.contains(l.ip)) && !rec.host.contains(&l.ip))
        .max_by_key(|l| (l.ip.is_ipv4(), l.expiry))
        .map(|l| l.ip)
}

/// Resolves one domain forward. `leases`: bridge name → the leases of its status file.
pub fn resolve(
    f: &DomainForward,
    domains: &Domains,
    networks: &Networks,
    leases: &BTreeMap<String, Vec<Lease>>,
    now: u64,
) -> Status {
    let Some(rec) = domains.domains.get(&f.domain).filter(|r| r.running) else {
        return Status::Inactive(format!("domain {} is not running", f.domain));
    };
    let iface = match interface_for(f, rec, networks) {
        Ok(i) => i,
        Err(e) => return Status::Unresolvable(e),
    };
    let Some(net) = networks.networks.get(&iface.network).filter(|n| n.active) else {
        return Status::Inactive(format!("network {} is not running", iface.network));
    };
    if net.forward == "none" {
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
    let empty = Vec::new();
    let lease_list = leases.get(net.bridge.as_str()).unwrap_or(&empty);
    match address_of(mac, net, lease_list, now) {
        Some(ip) if f.host_address.is_some_and(|h| h.is_ipv4() != ip.is_ipv4()) => {
            Status::Unresolvable(format!(
                "domain {}'s address {ip} and host address {} are of different IP versions",
                f.domain,
                f.host_address.map_or(String::new(), |h| h.to_string())
            ))
        }
        Some(ip) => Status::Active(Target {
            network: iface.network.clone(),
            guest: ip,
        }),
        None => Status::Waiting {
            network: iface.network.clone(),
            mac: mac.clone(),
        },
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
    /// Each domain forward's status, by id.
    pub statuses: BTreeMap<u32, Status>,
}

impl Resolution {
    /// Whether a running domain's forward waits for a lease (the daemon then polls the leases).
    pub fn waiting(&self) -> bool {
        self.statuses
            .values()
            .any(|s| matches!(s, Status::Waiting { .. }))
    }
}

/// Resolves every domain forward of `declared`; `removed` are domain forwards just taken out
/// (their applied targets become `gone`).
pub fn effective(
    declared: &Declared,
    removed: &[DomainForward],
    domains: &Domains,
    networks: &Networks,
    leases: &BTreeMap<String, Vec<Lease>>,
    now: u64,
) -> Resolution {
    // The planner plans `forwards`; it looks at `domain_forwards` only to create virtzone's
    // policies ahead of a domain's first start (creating one means a reload, which has no place in
    // the qemu hook's budget).
    let mut plain = declared.clone();
    let mut applied = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for f in &declared.domain_forwards {
        let status = resolve(f, domains, networks, leases, now);
        if let Status::Active(t) = &status {
            plain.forwards.push(f.resolved(&t.network, t.guest));
            applied.insert(f.id, t.clone());
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

/// Reads the status files of the bridges running domains' forwards may need. A missing or broken
/// file counts as no leases (a broken one is reported on stderr: the forward then waits).
pub fn read_leases(
    dir: &Path,
    declared: &Declared,
    domains: &Domains,
    networks: &Networks,
) -> BTreeMap<String, Vec<Lease>> {
    let mut out = BTreeMap::new();
    let wanted = declared
        .domain_forwards
        .iter()
        .filter_map(|f| domains.domains.get(&f.domain).filter(|r| r.running))
        .flat_map(|r| &r.interfaces)
        .filter_map(|i| networks.networks.get(&i.network));
    for net in wanted {
        let bridge = net.bridge.as_str();
        if out.contains_key(bridge) {
            continue;
        }
        let path = dir.join(format!("{bridge}.status"));
        let mut text = String::new();
        // Never through a symlink: the file decides which guest a forward reaches.
        let leases = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .and_then(|f| f.take(MAX_STATUS_FILE).read_to_string(&mut text))
        {
            Ok(_) => parse_status(&text).unwrap_or_else(|e| {
                tracing::warn!("{}: not a dnsmasq lease status file: {e}", path.display());
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        out.insert(bridge.to_string(), leases);
    }
    out
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
    use crate::forward::model::{Ports, Proto};
    use crate::forward::network::{StaticHost, Subnet};
    use crate::names::BridgeName;

    fn df(id: u32, domain: &str, network: Option<&str>) -> DomainForward {
        DomainForward {
            id,
            domain: domain.into(),
            network: network.map(String::from),
            proto: Proto::Tcp,
            host_port: Ports { lo: 8080, hi: 8080 },
            guest_port: Ports { lo: 80, hi: 80 },
            host_address: None,
            from_host: false,
            hairpin: false,
        }
    }

    fn net(bridge: &str, prefix: &str, hosts: &[(&str, &str)]) -> NetworkRecord {
        NetworkRecord {
            bridge: BridgeName::new(bridge).unwrap(),
            forward: "nat".into(),
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
        }
    }

    fn world() -> (Domains, Networks) {
        let mut networks = Networks::default();
        networks.networks.insert(
            "n1".into(),
            net("virbr1", "192.0.2", &[("52:54:00:00:00:02", "192.0.2.20")]),
        );
        networks
            .networks
            .insert("n2".into(), net("virbr2", "198.51.100", &[]));
        let mut domains = Domains::default();
        let iface = |n: &str, m: &str| Interface {
            network: n.into(),
            mac: Some(m.into()),
        };
        domains.domains.insert(
            "one".into(),
            DomainRecord {
                running: true,
                interfaces: vec![iface("n1", "52:54:00:00:00:01")],
            },
        );
        domains.domains.insert(
            "two".into(),
            DomainRecord {
                running: true,
                interfaces: vec![
                    iface("n1", "52:54:00:00:00:02"),
                    iface("n2", "52:54:00:00:00:03"),
                ],
            },
        );
        (domains, networks)
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
        let l = leases();
        // The unexpired lease, not the expired one.
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &l, 1000),
            Status::Active(Target {
                network: "n1".into(),
                guest: "192.0.2.150".parse().unwrap()
            })
        );
        // A static host wins over leases; --network picks the interface.
        assert_eq!(
            resolve(&df(2, "two", Some("n1")), &domains, &networks, &l, 1000),
            Status::Active(Target {
                network: "n1".into(),
                guest: "192.0.2.20".parse().unwrap()
            })
        );
        assert!(matches!(
            resolve(&df(2, "two", Some("n2")), &domains, &networks, &l, 1000),
            Status::Active(Target { ref network, .. }) if network == "n2"
        ));
        // Several interfaces without --network, or none on the given one.
        assert!(matches!(
            resolve(&df(3, "two", None), &domains, &networks, &l, 1000),
            Status::Unresolvable(m) if m.contains("--network")
        ));
        assert!(matches!(
            resolve(&df(3, "one", Some("n2")), &domains, &networks, &l, 1000),
            Status::Unresolvable(_)
        ));
        // Every lease expired: waiting.
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &l, 3000).word(),
            "waiting-for-address"
        );
        // Stopped or unknown: inactive.
        domains.domains.get_mut("one").unwrap().running = false;
        assert_eq!(
            resolve(&df(1, "one", None), &domains, &networks, &l, 1000).word(),
            "inactive"
        );
        assert_eq!(
            resolve(&df(1, "ghost", None), &domains, &networks, &l, 1000).word(),
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
        let r = effective(&declared, &[], &domains, &networks, &leases(), 1000);
        assert_eq!(r.declared.forwards.len(), 1);
        assert!(r.gone.is_empty());
        assert!(!r.waiting());
        domains.applied = r.applied.clone();

        domains.domains.get_mut("one").unwrap().running = false;
        let r = effective(&declared, &[], &domains, &networks, &leases(), 1000);
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
            &leases(),
            1000,
        );
        assert_eq!(r.gone.len(), 1);
        // Waiting for a lease.
        let r = effective(&declared, &[], &domains, &networks, &BTreeMap::new(), 1000);
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
}
