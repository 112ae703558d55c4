//! What virtzone knows about libvirt networks for forwards and allows: bridge, forward mode and
//! subnets, recorded by the network hook from libvirt's live XML (`started begin`, `stopped end`).
//! The hook never calls back into libvirt, and neither does anything reading this record.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::libvirt::{ForwardMode, Network};
use crate::names::{BridgeName, NetworkName};

/// The state file of network records.
pub const NETWORKS_FILE: &str = "networks.json";

/// An IP subnet (address with prefix length), e.g. `192.0.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// The subnet of `addr/prefix`, host bits cleared; `None` for an impossible prefix.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Subnet> {
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Subnet { addr, prefix })
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Subnet::new(ip, self.prefix).is_some_and(|s| s.addr == self.addr)
    }

    /// `ipv4` or `ipv6`, as rich rules spell the family.
    pub fn family(&self) -> &'static str {
        match self.addr {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a subnet like 192.0.2.0/24");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Subnet::new(addr, prefix).ok_or_else(bad)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One libvirt network as the hook last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its bridge.
    pub bridge: BridgeName,
    /// libvirt's forward mode, recorded as libvirt spells it (`nat`, `route`, `open`, `none`, …; a
    /// spelling this virtzone does not know is kept as it is).
    #[serde(with = "recorded_mode")]
    pub forward: ForwardMode,
    /// Its subnets, with the host's address on the bridge kept apart in `host`.
    pub subnets: Vec<Subnet>,
    /// The host's own addresses on the bridge (never a forward's guest).
    #[serde(default)]
    pub host: Vec<IpAddr>,
    /// Whether it is running (between `started` and `stopped`).
    pub active: bool,
    /// Static DHCP hosts (`<ip><dhcp><host mac=… ip=…>`), which resolve `--domain` forwards before
    /// any lease does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<StaticHost>,
    /// How libvirt masquerades it (NAT networks; `None` for other modes and in records of older
    /// virtzone releases, which get no NAT table of virtzone's until the hook records them again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatRecord>,
}

/// A NAT network's masquerade, as libvirt applies it (`<forward dev>`, `<nat>`), validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRecord {
    /// `<forward dev=…>`: libvirt NATs only out of this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// `<nat><address>`: libvirt SNATs to an address range rather than masquerading.
    #[serde(default)]
    pub address_range: bool,
    /// The source ports of TCP and UDP (libvirt's default 1024-65535).
    pub ports: (u16, u16),
    /// `<nat ipv6='yes'>`.
    #[serde(default)]
    pub ipv6: bool,
}

impl NatRecord {
    /// libvirt's port range when `<nat><port>` is absent.
    pub const DEFAULT_PORTS: (u16, u16) = (1024, 65535);

    /// Validates what the XML said.
    fn of(name: &str, nat: &crate::libvirt::ForwardNat) -> Result<NatRecord, String> {
        let dev = match &nat.dev {
            Some(d) => Some(
                BridgeName::new(d)
                    .map_err(|e| format!("network {name}: bad forward dev: {e}"))?
                    .to_string(),
            ),
            None => None,
        };
        let ports = match &nat.port {
            None => Self::DEFAULT_PORTS,
            Some((start, end)) => {
                let parse = |p: &str| {
                    p.parse::<u16>()
                        .map_err(|_| format!("network {name}: bad NAT port {p:?}"))
                };
                match (parse(start)?, parse(end)?) {
                    // libvirt treats an empty range as its default.
                    (0, 0) => Self::DEFAULT_PORTS,
                    (a, b) if a <= b => (a, b),
                    (a, b) => {
                        return Err(format!("network {name}: NAT ports {a}-{b} are reversed"))
                    }
                }
            }
        };
        Ok(NatRecord {
            dev,
            address_range: nat.address.is_some(),
            ports,
            ipv6: nat.ipv6,
        })
    }
}

/// A static DHCP host of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticHost {
    /// Its MAC address, lower-case.
    pub mac: String,
    /// The address libvirt's dnsmasq always gives it.
    pub ip: IpAddr,
}

/// All recorded networks, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Networks {
    /// Format version (1).
    #[serde(default = "one")]
    pub version: u32,
    /// name → record.
    #[serde(default, deserialize_with = "valid_names")]
    pub networks: BTreeMap<NetworkName, NetworkRecord>,
}

fn one() -> u32 {
    1
}

/// The records whose names [`NetworkName`] accepts. The hook of virtzone before the one name rule
/// recorded any name libvirt gave it; a name the rule now refuses is left out with a warning
/// rather than failing the whole file (such a network is libvirt's alone now: the hook stands
/// aside for it, and no forward can name it).
fn valid_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<NetworkName, NetworkRecord>, D::Error> {
    Ok(BTreeMap::<String, NetworkRecord>::deserialize(d)?
        .into_iter()
        .filter_map(|(name, rec)| match NetworkName::new(&name) {
            Ok(name) => Some((name, rec)),
            Err(e) => {
                tracing::warn!("{NETWORKS_FILE}: leaving out a record: {e}");
                None
            }
        })
        .collect())
}

/// A [`ForwardMode`] as libvirt's word for it, the form `networks.json` has always had.
mod recorded_mode {
    use super::ForwardMode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &ForwardMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(mode.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ForwardMode, D::Error> {
        Ok(ForwardMode::from_recorded(&String::deserialize(d)?))
    }
}

impl NetworkRecord {
    /// The record (marked active) of a network parsed from libvirt's live XML or the hook's hookData;
    /// `None` for a network without a libvirt bridge (nothing to forward to).
    pub fn of(net: &Network) -> Result<Option<NetworkRecord>, String> {
        let Some(bridge) = net.bridge.clone() else {
            return Ok(None);
        };
        let mut subnets = Vec::new();
        let mut host = Vec::new();
        let mut hosts = Vec::new();
        for ip in &net.ips {
            for h in ip.dhcp.iter().flat_map(|d| &d.host) {
                // IPv6 hosts are named by `id` or `name`, not by MAC: nothing to match a domain by.
                let (Some(mac), Some(addr)) = (&h.mac, &h.ip) else {
                    continue;
                };
                let mac = mac.trim().to_ascii_lowercase();
                if !crate::libvirt::domain::is_mac(&mac) {
                    return Err(format!("network {}: bad DHCP host MAC {mac:?}", net.name));
                }
                let ip: IpAddr = addr
                    .trim()
                    .parse()
                    .map_err(|_| format!("network {}: bad DHCP host address {addr:?}", net.name))?;
                hosts.push(StaticHost { mac, ip });
            }
            let Some(address) = &ip.address else { continue };
            let addr: IpAddr = address
                .parse()
                .map_err(|_| format!("network {}: bad address {address:?}", net.name))?;
            let prefix = match (&ip.prefix, &ip.netmask) {
                (Some(p), _) => p
                    .parse::<u8>()
                    .map_err(|_| format!("network {}: bad prefix {p:?}", net.name))?,
                (None, Some(mask)) => {
                    let m: std::net::Ipv4Addr = mask
                        .parse()
                        .map_err(|_| format!("network {}: bad netmask {mask:?}", net.name))?;
                    u32::from(m).count_ones() as u8
                }
                (None, None) if addr.is_ipv4() => 24,
                (None, None) => 64,
            };
            let subnet = Subnet::new(addr, prefix)
                .ok_or_else(|| format!("network {}: bad prefix {prefix}", net.name))?;
            subnets.push(subnet);
            host.push(addr);
        }
        let nat = net
            .nat
            .as_ref()
            .map(|n| NatRecord::of(net.name.as_str(), n))
            .transpose()?;
        Ok(Some(NetworkRecord {
            bridge,
            forward: net.forward.clone(),
            subnets,
            host,
            active: true,
            hosts,
            nat,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::libvirt::parse_network_xml;

    fn record_from_xml(xml: &str) -> Result<Option<NetworkRecord>, String> {
        NetworkRecord::of(&parse_network_xml(xml, None).map_err(|e| e.to_string())?)
    }

    #[test]
    fn reads_hook_data() {
        let xml = "<hookData><network><name>default</name><forward mode='nat'/>\
                   <bridge name='virbr0' stp='on'/>\
                   <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp>\
                   <range start='192.0.2.100' end='192.0.2.199'/>\
                   <host mac='52:54:00:AA:00:01' name='web' ip='192.0.2.10'/></dhcp></ip>\
                   <ip family='ipv6' address='2001:db8:5::1' prefix='64'/></network></hookData>";
        let rec = record_from_xml(xml).unwrap().unwrap();
        assert_eq!(rec.forward, ForwardMode::Nat);
        assert_eq!(
            rec.hosts,
            [StaticHost {
                mac: "52:54:00:aa:00:01".into(),
                ip: "192.0.2.10".parse().unwrap()
            }]
        );
        assert_eq!(rec.bridge.as_str(), "virbr0");
        assert_eq!(
            rec.subnets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.0.2.0/24", "2001:db8:5::/64"]
        );
        assert!(rec.subnets[0].contains("192.0.2.77".parse().unwrap()));
        assert!(!rec.subnets[0].contains("192.0.3.77".parse().unwrap()));
        assert!(!rec.subnets[0].contains("2001:db8:5::7".parse().unwrap()));
        let isolated = "<network><name>iso</name><bridge name='virbr9'/></network>";
        assert_eq!(
            record_from_xml(isolated).unwrap().unwrap().forward,
            ForwardMode::None
        );
        let hostbridge = "<network><name>br</name><forward mode='bridge'/></network>";
        assert_eq!(record_from_xml(hostbridge).unwrap(), None);
        assert!(record_from_xml("<network><name>x</name><bridge name='a/b'/></network>").is_err());
    }

    /// `networks.json` as virtzone wrote it before `NetworkName` and `ForwardMode` in records: it
    /// loads unchanged, a mode this virtzone does not know stays as it was, and a name the one
    /// rule refuses (the old hook recorded any name without control characters) leaves out its
    /// record only.
    #[test]
    fn loads_records_of_earlier_virtzone() {
        let text = r#"{"version":1,"networks":{
            "default":{"bridge":"virbr0","forward":"nat","subnets":["192.0.2.0/24"],
                       "host":["192.0.2.1"],"active":true},
            "routed":{"bridge":"virbr1","forward":"route","subnets":[],"active":false},
            "iso":{"bridge":"virbr2","forward":"none","subnets":[],"active":true},
            "My Lab":{"bridge":"virbr3","forward":"open","subnets":[],"active":true},
            "later":{"bridge":"virbr4","forward":"warp","subnets":[],"active":true},
            "-bad":{"bridge":"virbr5","forward":"nat","subnets":[],"active":true},
            "say \"hi\"":{"bridge":"virbr6","forward":"nat","subnets":[],"active":true}}}"#;
        let nets: Networks = serde_json::from_str(text).unwrap();
        let modes: Vec<(&str, &ForwardMode)> = nets
            .networks
            .iter()
            .map(|(name, rec)| (name.as_str(), &rec.forward))
            .collect();
        assert_eq!(
            modes,
            [
                ("My Lab", &ForwardMode::Open),
                ("default", &ForwardMode::Nat),
                ("iso", &ForwardMode::None),
                ("later", &ForwardMode::Unmanaged("warp".into())),
                ("routed", &ForwardMode::Route),
            ]
        );
        assert_eq!(nets.networks["default"].bridge.as_str(), "virbr0");
        // Written back in the same words.
        let again = serde_json::to_string(&nets).unwrap();
        for word in [
            r#""forward":"warp""#,
            r#""forward":"none""#,
            r#""forward":"nat""#,
        ] {
            assert!(again.contains(word), "{again}");
        }
        assert_eq!(serde_json::from_str::<Networks>(&again).unwrap(), nets);
    }
}
