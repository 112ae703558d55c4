//! The vocabulary of forwards and allows: protocols, ports, the declared objects and their persisted
//! form. Parsing here is strict: anything malformed is a one-sentence error, never a guess.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::NetworkName;

/// A transport protocol firewalld can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// firewalld's and iptables' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => Err(format!(
                "protocol {other:?} is not one of tcp, udp and sctp"
            )),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port or an inclusive port range, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    /// First port.
    pub lo: u16,
    /// Last port (equal to `lo` for a single port).
    pub hi: u16,
}

impl Ports {
    /// How many ports.
    pub fn len(self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    /// Always false: a range holds at least one port (for clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    /// iptables' spelling of the range (`8000:8010`).
    pub fn iptables(self) -> String {
        if self.lo == self.hi {
            self.lo.to_string()
        } else {
            format!("{}:{}", self.lo, self.hi)
        }
    }
}

impl fmt::Display for Ports {
    /// firewalld's spelling: `8080` or `8000-8010`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

fn port(text: &str) -> Result<u16, String> {
    let valid = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u32>() {
        Ok(n) if valid && (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port {text:?} is not a number from 1 to 65535")),
    }
}

impl FromStr for Ports {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("port range {s:?} runs backwards"));
        }
        Ok(Ports { lo, hi })
    }
}

impl Serialize for Ports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `PROTO/HOSTPORT[:GUESTPORT]` of `forward add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMap {
    /// The protocol.
    pub proto: Proto,
    /// Ports on the host.
    pub host: Ports,
    /// Ports on the guest (the same as `host` when not given).
    pub guest: Ports,
}

impl FromStr for PortMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (proto, ports) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not PROTO/HOSTPORT[:GUESTPORT], e.g. tcp/8080:80"))?;
        let proto: Proto = proto.parse()?;
        let (host, guest) = match ports.split_once(':') {
            Some((h, g)) => (h.parse::<Ports>()?, g.parse::<Ports>()?),
            None => {
                let h = ports.parse::<Ports>()?;
                (h, h)
            }
        };
        // firewalld maps a range onto a range of the same length, or everything onto one port.
        if guest.len() != host.len() && guest.len() != 1 {
            return Err(format!(
                "guest ports {guest} must be one port or as many ports as host ports {host}"
            ));
        }
        Ok(PortMap { proto, host, guest })
    }
}

/// What a forward does, whatever it forwards to (a [`Forward`]'s guest address or a
/// [`DomainForward`]'s domain): protocol, ports, host address, and whom it serves besides
/// upstream clients. In the state file its fields sit beside the target's (`#[serde(flatten)]`),
/// as they did before this type existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRule {
    /// The protocol.
    pub proto: Proto,
    /// Ports on the host.
    pub host_port: Ports,
    /// Ports on the guest.
    pub guest_port: Ports,
    /// Only connections to this host address are forwarded (`None`: every address of the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_address: Option<IpAddr>,
    /// Also for connections the host itself opens to `host_address`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub from_host: bool,
    /// Also for the guests of the forward's network reaching it through the host's address.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hairpin: bool,
}

impl ForwardRule {
    /// The rule `forward add PROTO/HOST[:GUEST]` describes, with its host-side options.
    pub fn new(
        ports: PortMap,
        host_address: Option<IpAddr>,
        from_host: bool,
        hairpin: bool,
    ) -> Self {
        ForwardRule {
            proto: ports.proto,
            host_port: ports.host,
            guest_port: ports.guest,
            host_address,
            from_host,
            hairpin,
        }
    }

    /// What it claims on the host.
    pub fn host_side(&self) -> HostSide {
        HostSide {
            proto: self.proto,
            ports: self.host_port,
            address: self.host_address,
        }
    }

    /// `tcp/8080:80` for messages and listings.
    pub fn ports_text(&self) -> String {
        format!("{}/{}:{}", self.proto, self.host_port, self.guest_port)
    }
}

/// A forward virtzone was asked for: a rule to a guest address on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// Stable number, shown by `list` and accepted by `remove`.
    pub id: u32,
    /// The libvirt network the guest is on.
    pub network: NetworkName,
    /// The guest's address.
    pub guest: IpAddr,
    /// What it forwards.
    #[serde(flatten)]
    pub rule: ForwardRule,
}

/// A forward reads as its rule (`forward.proto`, `forward.host_port`): the planners, listings and
/// checks read the rule's fields of both kinds of forward alike.
impl std::ops::Deref for Forward {
    type Target = ForwardRule;
    fn deref(&self) -> &ForwardRule {
        &self.rule
    }
}

impl std::ops::DerefMut for Forward {
    fn deref_mut(&mut self) -> &mut ForwardRule {
        &mut self.rule
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

/// What a forward claims on the host: protocol, ports and (optionally) one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSide {
    /// The protocol.
    pub proto: Proto,
    /// Ports on the host.
    pub ports: Ports,
    /// The host address, `None` for all.
    pub address: Option<IpAddr>,
}

impl HostSide {
    /// Whether two forwards claim the same host port (they cannot both exist).
    pub fn clashes_with(&self, other: &HostSide) -> bool {
        self.proto == other.proto
            && self.ports.lo <= other.ports.hi
            && other.ports.lo <= self.ports.hi
            && (self.address.is_none() || other.address.is_none() || self.address == other.address)
    }
}

impl Forward {
    /// Whether two forwards claim the same host port (they cannot both exist).
    pub fn clashes_with(&self, other: &Forward) -> bool {
        self.host_side().clashes_with(&other.host_side())
    }

    /// Whether it describes the same forward as `other`, ignoring ids.
    pub fn same_as(&self, other: &Forward) -> bool {
        Forward {
            id: 0,
            ..self.clone()
        } == Forward {
            id: 0,
            ..other.clone()
        }
    }
}

/// A forward to a libvirt domain by name (`forward add --domain`): its guest address is resolved
/// while the domain runs, from the network's static DHCP hosts or dnsmasq's leases, and the forward
/// is then planned exactly like a [`Forward`] to that address (see `forward::domain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainForward {
    /// Stable number, shared with [`Forward`]'s ids.
    pub id: u32,
    /// The libvirt domain.
    pub domain: String,
    /// Which of the domain's networks (`None`: its only interface on a network virtzone knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkName>,
    /// What it forwards.
    #[serde(flatten)]
    pub rule: ForwardRule,
}

/// Reads as its rule, like [`Forward`].
impl std::ops::Deref for DomainForward {
    type Target = ForwardRule;
    fn deref(&self) -> &ForwardRule {
        &self.rule
    }
}

impl std::ops::DerefMut for DomainForward {
    fn deref_mut(&mut self) -> &mut ForwardRule {
        &mut self.rule
    }
}

impl DomainForward {
    /// Whether it describes the same forward as `other`, ignoring ids.
    pub fn same_as(&self, other: &DomainForward) -> bool {
        DomainForward {
            id: 0,
            ..self.clone()
        } == DomainForward {
            id: 0,
            ..other.clone()
        }
    }

    /// The plain forward it is while the domain's interface on `network` has address `guest`.
    pub fn resolved(&self, network: &NetworkName, guest: IpAddr) -> Forward {
        Forward {
            id: self.id,
            network: network.clone(),
            guest,
            rule: self.rule,
        }
    }
}

/// What `allow` opens: a firewalld service or a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Opening {
    /// A firewalld service by name.
    Service(String),
    /// A port or range.
    Port {
        /// The ports.
        port: Ports,
        /// The protocol.
        proto: Proto,
    },
}

impl Opening {
    /// Parses `SERVICE` or `PORT/PROTO`.
    pub fn parse(text: &str) -> Result<Opening, String> {
        if let Some((port, proto)) = text.split_once('/') {
            return Ok(Opening::Port {
                port: port.parse()?,
                proto: proto.parse()?,
            });
        }
        let ok = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
            && !text.starts_with(['-', '.']);
        if ok {
            Ok(Opening::Service(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is neither a firewalld service name nor PORT/PROTO, e.g. nfs or 2049/tcp"
            ))
        }
    }
}

impl fmt::Display for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opening::Service(s) => f.write_str(s),
            Opening::Port { port, proto } => write!(f, "{port}/{proto}"),
        }
    }
}

/// A host service opened to one network's guests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Allow {
    /// The libvirt network.
    pub network: NetworkName,
    /// What is opened.
    #[serde(flatten)]
    pub opening: Opening,
}

/// The current format of [`Declared`]; a newer file is refused, not misread. Version 2 added
/// `domain_forwards` (a version-1 reader would drop them on its next write); version 1 files are
/// read as version 2 without domain forwards.
pub const FORMAT_VERSION: u32 = 2;

/// Everything declared with `forward add` and `allow add` (the state file `forwards.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The id the next forward gets (ids are never reused).
    pub next_id: u32,
    /// The forwards.
    #[serde(default)]
    pub forwards: Vec<Forward>,
    /// The forwards to domains by name (format version 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_forwards: Vec<DomainForward>,
    /// The allows.
    #[serde(default)]
    pub allows: Vec<Allow>,
    /// The drop-in file each declared object comes from ([`forward_key`], [`allow_key`] → path);
    /// objects missing here were added with the CLI. Written by `virtzone apply` only.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sources: std::collections::BTreeMap<String, String>,
}

/// The key of forward `id` (either kind) in [`Declared::sources`].
pub fn forward_key(id: u32) -> String {
    format!("forward {id}")
}

/// The key of `allow` in [`Declared::sources`].
pub fn allow_key(allow: &Allow) -> String {
    format!("allow {} {}", allow.network, allow.opening)
}

impl Declared {
    /// The drop-in file forward `id` comes from, `None` for the CLI's.
    pub fn forward_source(&self, id: u32) -> Option<&str> {
        self.sources.get(&forward_key(id)).map(String::as_str)
    }

    /// The drop-in file `allow` comes from, `None` for the CLI's.
    pub fn allow_source(&self, allow: &Allow) -> Option<&str> {
        self.sources.get(&allow_key(allow)).map(String::as_str)
    }
}

impl Default for Declared {
    fn default() -> Self {
        Declared {
            version: FORMAT_VERSION,
            next_id: 1,
            forwards: Vec::new(),
            domain_forwards: Vec::new(),
            allows: Vec::new(),
            sources: Default::default(),
        }
    }
}

/// Whether `f` forwards the host's loopback address (only the host's own connections, with
/// `route_localnet` on the bridge; see docs/forwards.md).
pub fn is_localnet(f: &Forward) -> bool {
    f.host_address.is_some_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps() {
        let m: PortMap = "tcp/8080:80".parse().unwrap();
        assert_eq!((m.proto, m.host.lo, m.guest.lo), (Proto::Tcp, 8080, 80));
        let m: PortMap = "udp/5000".parse().unwrap();
        assert_eq!((m.host, m.guest), (m.host, m.host));
        let m: PortMap = "sctp/8000-8010:9000-9010".parse().unwrap();
        assert_eq!((m.host.len(), m.guest.iptables()), (11, "9000:9010".into()));
        assert!("tcp/8000-8010:80".parse::<PortMap>().is_ok());
        for bad in [
            "",
            "tcp",
            "tcp/",
            "icmp/80",
            "TCP/80",
            "tcp/0",
            "tcp/65536",
            "tcp/80:0",
            "tcp/-1",
            "tcp/90-80",
            "tcp/8000-8010:9000-9001",
            "tcp/+80",
            "tcp/080000",
            "tcp/80:",
            "tcp/ 80",
        ] {
            assert!(bad.parse::<PortMap>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn openings() {
        assert_eq!(
            Opening::parse("nfs").unwrap(),
            Opening::Service("nfs".into())
        );
        assert_eq!(
            Opening::parse("2049/tcp").unwrap().to_string(),
            "2049/tcp".to_string()
        );
        for bad in ["", "-x", "a b", "tcp/2049", "2049/icmp", "x;y", "../etc"] {
            assert!(Opening::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clashes() {
        let f = |id, lo, hi, addr: Option<&str>| Forward {
            id,
            network: "n".parse().unwrap(),
            guest: "192.0.2.5".parse().unwrap(),
            rule: ForwardRule {
                proto: Proto::Tcp,
                host_port: Ports { lo, hi },
                guest_port: Ports { lo, hi },
                host_address: addr.map(|a| a.parse().unwrap()),
                from_host: false,
                hairpin: false,
            },
        };
        assert!(f(1, 80, 90, None).clashes_with(&f(2, 90, 95, None)));
        assert!(!f(1, 80, 90, None).clashes_with(&f(2, 91, 95, None)));
        assert!(f(1, 80, 80, Some("198.51.100.1")).clashes_with(&f(2, 80, 80, None)));
        assert!(!f(1, 80, 80, Some("198.51.100.1")).clashes_with(&f(
            2,
            80,
            80,
            Some("198.51.100.2")
        )));
        assert!(f(1, 80, 80, None).same_as(&f(7, 80, 80, None)));
    }

    #[test]
    fn declared_round_trips() {
        let text = r#"{"version":1,"next_id":3,"forwards":[{"id":2,"network":"default",
            "guest":"192.0.2.5","proto":"tcp","host_port":"8080","guest_port":"80"}],
            "allows":[{"network":"default","service":"nfs"},
                      {"network":"default","port":{"port":"2049","proto":"udp"}}]}"#;
        let d: Declared = serde_json::from_str(text).unwrap();
        assert_eq!(d.forwards[0].host_port.lo, 8080);
        assert_eq!(d.allows.len(), 2);
        let again: Declared = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(again, d);
    }

    /// A `forwards.json` as written before [`ForwardRule`] existed (format version 2, every
    /// optional field of both kinds of forward set once) loads into the rules and is written back
    /// byte for byte: the rule's fields stay beside the target's.
    #[test]
    fn forwards_json_from_before_forward_rule_loads_and_is_written_the_same() {
        let text = concat!(
            r#"{"version":2,"next_id":4,"forwards":["#,
            r#"{"id":1,"network":"default","guest":"192.0.2.5","proto":"tcp","host_port":"8080","#,
            r#""guest_port":"80"},"#,
            r#"{"id":2,"network":"default","guest":"192.0.2.6","proto":"udp","host_port":"5000-5010","#,
            r#""guest_port":"6000-6010","host_address":"127.0.0.1","from_host":true,"hairpin":true}],"#,
            r#""domain_forwards":[{"id":3,"domain":"web","network":"default","proto":"tcp","#,
            r#""host_port":"8443","guest_port":"443","host_address":"198.51.100.1","from_host":true,"#,
            r#""hairpin":true}],"allows":[]}"#
        );
        let d: Declared = serde_json::from_str(text).unwrap();
        let loopback = &d.forwards[1];
        assert_eq!(
            loopback.rule,
            ForwardRule {
                proto: Proto::Udp,
                host_port: Ports { lo: 5000, hi: 5010 },
                guest_port: Ports { lo: 6000, hi: 6010 },
                host_address: Some("127.0.0.1".parse().unwrap()),
                from_host: true,
                hairpin: true,
            }
        );
        assert_eq!(
            (loopback.id, loopback.guest.to_string()),
            (2, "192.0.2.6".into())
        );
        assert_eq!(d.forwards[0].rule.host_address, None);
        assert!(!d.forwards[0].from_host && !d.forwards[0].hairpin);
        let web = &d.domain_forwards[0];
        assert_eq!(
            (
                web.domain.as_str(),
                web.network.as_ref().map(NetworkName::as_str)
            ),
            ("web", Some("default"))
        );
        assert_eq!(web.ports_text(), "tcp/8443:443");
        assert!(web.from_host && web.hairpin);
        assert_eq!(serde_json::to_string(&d).unwrap(), text);
        let resolved = web.resolved(&"default".parse().unwrap(), "192.0.2.7".parse().unwrap());
        assert_eq!(resolved.rule, web.rule);
    }
}
