//! libvirt's `<network>` XML, alone or wrapped in the hook's `<hookData>`.
//!
//! Only what decides a bridge's zone is read: the network's name, its bridge's `name` and `zone`, and the
//! forward mode. Everything else libvirt writes is ignored, so newer libvirt XML keeps parsing.

use serde::{Deserialize, Serialize};

use crate::names::{BridgeName, NameError, NetworkName, ZoneName};

/// The largest document accepted; libvirt's live network XML is a few KiB.
pub(crate) const MAX_XML_BYTES: usize = 1 << 20;

/// How a network forwards guest traffic (libvirt's `<forward mode=…>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// No `<forward>` element: an isolated network.
    None,
    /// NAT to the host's uplinks (also `<forward/>` without a mode).
    Nat,
    /// Routed without NAT.
    Route,
    /// Forwarded with no firewall rules from libvirt at all.
    Open,
    /// A host bridge libvirt does not own (`bridge`), or a macvtap/hostdev mode
    /// (`private`, `vepa`, `passthrough`, `hostdev`): no libvirt bridge, nothing to zone.
    Unmanaged(String),
}

impl ForwardMode {
    fn from_attr(mode: Option<&str>) -> Result<Self, String> {
        Ok(match mode {
            None | Some("nat") => ForwardMode::Nat,
            Some("route") => ForwardMode::Route,
            Some("open") => ForwardMode::Open,
            Some(m @ ("bridge" | "private" | "vepa" | "passthrough" | "hostdev")) => {
                ForwardMode::Unmanaged(m.to_string())
            }
            Some(other) => return Err(other.to_string()),
        })
    }

    /// The mode spelled as [`ForwardMode::as_str`] spells it (the forwards' network records keep
    /// it so); an unknown spelling is `Unmanaged`.
    pub fn from_recorded(text: &str) -> Self {
        match text {
            "none" => ForwardMode::None,
            other => ForwardMode::from_attr(Some(other))
                .unwrap_or_else(|_| ForwardMode::Unmanaged(other.to_string())),
        }
    }

    /// libvirt's spelling (`none` for an isolated network).
    pub fn as_str(&self) -> &str {
        match self {
            ForwardMode::None => "none",
            ForwardMode::Nat => "nat",
            ForwardMode::Route => "route",
            ForwardMode::Open => "open",
            ForwardMode::Unmanaged(m) => m,
        }
    }

    /// Whether libvirt creates and owns the network's bridge in this mode.
    pub fn has_libvirt_bridge(&self) -> bool {
        !matches!(self, ForwardMode::Unmanaged(_))
    }
}

/// The parts of a libvirt network that decide its bridge's zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// The network's name.
    pub name: NetworkName,
    /// Its bridge (`<bridge name=…>`); always present for modes with a libvirt bridge.
    pub bridge: Option<BridgeName>,
    /// An explicitly requested zone (`<bridge zone=…>`).
    pub zone: Option<ZoneName>,
    /// The forward mode.
    pub forward: ForwardMode,
    /// Its `<ip>` elements, as libvirt wrote them (forwards derive the network's subnets from them).
    pub ips: Vec<NetworkIp>,
    /// The host devices of `<forward><interface dev=…/></forward>`: a macvtap network's (bridge,
    /// private, vepa, passthrough) uplinks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_devs: Vec<String>,
    /// How libvirt masquerades a NAT network (`<forward dev=…>` and `<nat>`); `None` for other
    /// modes. virtzone's own NAT table copies it (src/forward/nat.rs).
    pub nat: Option<ForwardNat>,
}

/// How a network of forward mode `bridge` (or a macvtap mode) attaches its guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridged<'a> {
    /// Guests' taps are ports of this host bridge (`<forward mode='bridge'/><bridge name='br0'/>`):
    /// the bridge's zone and br_netfilter decide their traffic.
    HostBridge(&'a BridgeName),
    /// Guests sit on macvtap devices of these host devices: their frames never cross a host
    /// bridge, so neither a zone nor br_netfilter sees traffic between guests and the LAN.
    Macvtap(&'a [String]),
}

/// A NAT network's `<forward dev=…><nat ipv6=…><address start end/><port start end/></nat>`, as
/// libvirt wrote it (unvalidated, like [`NetworkIp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ForwardNat {
    /// `<forward dev=…>`: libvirt NATs only out of this interface.
    pub dev: Option<String>,
    /// `<nat><address start end/>`: SNAT to these addresses instead of a masquerade.
    pub address: Option<(String, String)>,
    /// `<nat><port start end/>`: the source ports (libvirt's default 1024-65535 without it).
    pub port: Option<(String, String)>,
    /// `<nat ipv6='yes'>`: IPv6 is NATed too.
    pub ipv6: bool,
}

/// One `<ip>` element of a network, unvalidated: only forwards need the values, and they say which
/// one is wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIp {
    /// `family` (`ipv4`, the default, or `ipv6`).
    #[serde(rename = "@family", default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// `address`: the host's address on the bridge.
    #[serde(rename = "@address", default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `netmask` (IPv4).
    #[serde(rename = "@netmask", default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// `prefix`.
    #[serde(rename = "@prefix", default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `<dhcp>`: its static `<host>` entries resolve `--domain` forwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<NetworkDhcp>,
}

/// An `<ip>`'s `<dhcp>` element: only its static hosts matter to virtzone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDhcp {
    /// `<host mac=… ip=…>` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<DhcpHost>,
}

/// A static DHCP host of a network (`<host mac=… name=… ip=…>`), unvalidated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpHost {
    /// `mac` (IPv4 hosts; IPv6 ones have `id` or `name` instead).
    #[serde(rename = "@mac", default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `ip`.
    #[serde(rename = "@ip", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl Network {
    /// How the guests of a network without a libvirt bridge are attached; `None` for libvirt's own
    /// bridges and for modes with no host device (`hostdev`).
    pub fn bridged(&self) -> Option<Bridged<'_>> {
        let ForwardMode::Unmanaged(mode) = &self.forward else {
            return None;
        };
        match (&self.bridge, mode.as_str()) {
            (Some(b), "bridge") => Some(Bridged::HostBridge(b)),
            (None, "bridge" | "private" | "vepa" | "passthrough")
                if !self.forward_devs.is_empty() =>
            {
                Some(Bridged::Macvtap(&self.forward_devs))
            }
            _ => None,
        }
    }

    /// Whether the network has an IPv6 address.
    pub fn has_ipv6(&self) -> bool {
        self.ips.iter().any(|ip| {
            ip.family.as_deref() == Some("ipv6")
                || ip
                    .address
                    .as_deref()
                    .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        })
    }
}

/// Why a network document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkXmlError {
    /// Not well-formed, or not shaped like libvirt's network XML.
    #[error("the network XML is malformed: {}", crate::names::visible(.0))]
    Malformed(String),
    /// A bridge or zone name in it is invalid.
    #[error("the network XML names an {0}")]
    Name(#[from] NameError),
    /// A network whose mode needs a bridge names none.
    #[error("network {0:?} has no <bridge name=…>; pass --bridge or use libvirt's live XML (virsh net-dumpxml)")]
    NoBridge(String),
    /// A forward mode virtzone does not know (a later libvirt's).
    #[error("the network XML has forward mode {0:?}, which virtzone does not know")]
    UnknownForwardMode(String),
    /// `<bridge zone=…>` names a zone virtzone's stricter name rule refuses (firewalld may accept it).
    #[error("the network XML requests an {0}")]
    Zone(NameError),
    /// The network's name is one libvirt accepts but virtzone cannot carry ([`NetworkName::new`]).
    #[error("the network XML has an {0}")]
    NetworkName(NameError),
}

#[derive(Deserialize)]
struct HookDataXml {
    network: NetworkXml,
}

#[derive(Deserialize)]
struct NetworkXml {
    name: String,
    bridge: Option<BridgeXml>,
    forward: Option<ForwardXml>,
    #[serde(default)]
    ip: Vec<NetworkIp>,
}

#[derive(Deserialize)]
struct BridgeXml {
    #[serde(rename = "@name")]
    name: Option<String>,
    #[serde(rename = "@zone")]
    zone: Option<String>,
}

#[derive(Deserialize)]
struct ForwardXml {
    #[serde(rename = "@mode")]
    mode: Option<String>,
    #[serde(rename = "@dev")]
    dev: Option<String>,
    nat: Option<NatXml>,
    #[serde(default)]
    interface: Vec<ForwardInterfaceXml>,
}

#[derive(Deserialize)]
struct ForwardInterfaceXml {
    #[serde(rename = "@dev")]
    dev: Option<String>,
}

#[derive(Deserialize)]
struct NatXml {
    #[serde(rename = "@ipv6")]
    ipv6: Option<String>,
    address: Option<RangeXml>,
    port: Option<RangeXml>,
}

#[derive(Deserialize)]
struct RangeXml {
    #[serde(rename = "@start")]
    start: Option<String>,
    #[serde(rename = "@end")]
    end: Option<String>,
}

impl RangeXml {
    fn pair(self) -> (String, String) {
        (
            self.start.unwrap_or_default().trim().to_string(),
            self.end.unwrap_or_default().trim().to_string(),
        )
    }
}

/// The name of the document's root element.
pub(crate) fn root_element(xml: &str) -> Result<String, NetworkXmlError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Ok(e.name().into_inner().to_string());
            }
            Ok(Event::DocType(_)) => {
                return Err(NetworkXmlError::Malformed(
                    "a DOCTYPE is not allowed".into(),
                ));
            }
            Ok(Event::Eof) => {
                return Err(NetworkXmlError::Malformed(
                    "it contains no XML element".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(NetworkXmlError::Malformed(e.to_string())),
        }
    }
}

/// Parses libvirt's `<network>` XML, the hook's `<hookData><network>…</network></hookData>`, or
/// libvirt's `<networkstatus>` record of a running network.
///
/// `bridge_override` supplies or replaces the bridge name (the CLI's `--bridge`). A network whose mode
/// has a libvirt bridge must end up with one.
pub fn parse_network_xml(
    xml: &str,
    bridge_override: Option<&BridgeName>,
) -> Result<Network, NetworkXmlError> {
    let malformed = |e: quick_xml::DeError| NetworkXmlError::Malformed(e.to_string());
    if xml.len() > MAX_XML_BYTES {
        return Err(NetworkXmlError::Malformed(format!(
            "it is larger than {MAX_XML_BYTES} bytes"
        )));
    }
    let raw = match root_element(xml)?.as_str() {
        "network" => quick_xml::de::from_str::<NetworkXml>(xml).map_err(malformed)?,
        // libvirt's own record of a running network (/run/libvirt/network/NAME.xml) wraps it likewise.
        "hookData" | "networkstatus" => {
            quick_xml::de::from_str::<HookDataXml>(xml)
                .map_err(malformed)?
                .network
        }
        other => {
            return Err(NetworkXmlError::Malformed(format!(
                "the root element is <{other}>, expected <network> or <hookData>"
            )))
        }
    };
    let name = NetworkName::new(raw.name.trim()).map_err(NetworkXmlError::NetworkName)?;
    let (forward, nat, forward_devs) = match raw.forward {
        None => (ForwardMode::None, None, Vec::new()),
        Some(f) => {
            let mode = ForwardMode::from_attr(f.mode.as_deref().map(str::trim))
                .map_err(NetworkXmlError::UnknownForwardMode)?;
            let (ipv6, address, port) = match f.nat {
                Some(n) => (
                    n.ipv6.as_deref().is_some_and(|v| v.trim() == "yes"),
                    n.address.map(RangeXml::pair),
                    n.port.map(RangeXml::pair),
                ),
                None => (false, None, None),
            };
            let nat = (mode == ForwardMode::Nat).then(|| ForwardNat {
                dev: f
                    .dev
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty()),
                address,
                port,
                ipv6,
            });
            let devs = f
                .interface
                .into_iter()
                .filter_map(|i| i.dev)
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty() && !d.chars().any(char::is_control))
                .collect();
            (mode, nat, devs)
        }
    };
    let (bridge_attr, zone_attr) = match raw.bridge {
        Some(b) => (b.name, b.zone),
        None => (None, None),
    };
    let bridge = match (
        bridge_override,
        bridge_attr.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(b)) => Some(BridgeName::new(b)?),
        (None, None) => None,
    };
    let zone = zone_attr
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(ZoneName::new)
        .transpose()
        .map_err(NetworkXmlError::Zone)?;
    if bridge.is_none() && forward.has_libvirt_bridge() {
        return Err(NetworkXmlError::NoBridge(name.to_string()));
    }
    Ok(Network {
        name,
        bridge,
        zone,
        forward,
        ips: raw.ip,
        forward_devs,
        nat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Network, NetworkXmlError> {
        parse_network_xml(xml, None)
    }

    #[test]
    fn default_network() {
        let n = parse(
            "<network><name>default</name><uuid>x</uuid><forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>\
             <bridge name='virbr0' stp='on' delay='0'/><mac address='52:54:00:0a:cd:21'/>\
             <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.2' end='192.0.2.254'/></dhcp></ip></network>",
        )
        .unwrap();
        assert_eq!(n.name, "default");
        assert_eq!(n.bridge.unwrap().as_str(), "virbr0");
        assert_eq!(n.zone, None);
        assert_eq!(n.forward, ForwardMode::Nat);
        assert_eq!(
            n.nat,
            Some(ForwardNat {
                port: Some(("1024".into(), "65535".into())),
                ..ForwardNat::default()
            })
        );
    }

    #[test]
    fn how_libvirt_nats() {
        let n = parse(
            "<network><name>n</name><forward mode='nat' dev='eth1'><nat ipv6='yes'>\
             <address start='203.0.113.1' end='203.0.113.9'/></nat></forward>\
             <bridge name='virbr9'/></network>",
        )
        .unwrap();
        assert_eq!(
            n.nat,
            Some(ForwardNat {
                dev: Some("eth1".into()),
                address: Some(("203.0.113.1".into(), "203.0.113.9".into())),
                port: None,
                ipv6: true,
            })
        );
        let routed = parse(
            "<network><name>r</name><forward mode='route'/><bridge name='virbr9'/></network>",
        );
        assert_eq!(routed.unwrap().nat, None);
    }

    #[test]
    fn bridged_networks_name_their_host_bridge_or_macvtap_devices() {
        let n = parse(
            "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>",
        )
        .unwrap();
        assert_eq!(
            n.bridged(),
            Some(Bridged::HostBridge(&BridgeName::new("br0").unwrap()))
        );
        let n = parse(
            "<network><name>tap</name><forward mode='bridge'><interface dev='eth0'/>\
             <interface dev='eth1'/></forward></network>",
        )
        .unwrap();
        assert_eq!(n.forward_devs, ["eth0", "eth1"]);
        assert_eq!(
            n.bridged(),
            Some(Bridged::Macvtap(&["eth0".to_string(), "eth1".to_string()]))
        );
        for libvirt_owned in ["<forward mode='nat'/>", "<forward mode='route'/>", ""] {
            let n = parse(&format!(
                "<network><name>n</name>{libvirt_owned}<bridge name='virbr3'/></network>"
            ))
            .unwrap();
            assert_eq!(n.bridged(), None);
        }
    }

    #[test]
    fn modes_and_zone() {
        let cases = [
            ("", ForwardMode::None),
            ("<forward/>", ForwardMode::Nat),
            ("<forward mode='route'/>", ForwardMode::Route),
            ("<forward mode='open'/>", ForwardMode::Open),
            (
                "<forward mode='bridge'/>",
                ForwardMode::Unmanaged("bridge".into()),
            ),
            (
                "<forward mode='passthrough'><interface dev='eth0'/></forward>",
                ForwardMode::Unmanaged("passthrough".into()),
            ),
        ];
        for (fwd, mode) in cases {
            let xml = format!(
                "<network><name>n</name>{fwd}<bridge name='br1' zone='trusted'/></network>"
            );
            let n = parse(&xml).unwrap();
            assert_eq!(n.forward, mode, "{xml}");
            assert_eq!(n.zone.as_ref().map(|z| z.as_str()), Some("trusted"));
        }
    }

    #[test]
    fn hook_data() {
        let n = parse(
            "<hookData><network><name>routed</name><forward mode='route'/><bridge name='virbr9'/></network>\
             <networkport><uuid>u</uuid></networkport></hookData>",
        )
        .unwrap();
        assert_eq!(
            (n.name.as_str(), n.bridge.unwrap().as_str()),
            ("routed", "virbr9")
        );
    }

    #[test]
    fn bridge_override() {
        let br = BridgeName::new("virbr7").unwrap();
        let n = parse_network_xml("<network><name>x</name></network>", Some(&br)).unwrap();
        assert_eq!(n.bridge, Some(br));
    }

    #[test]
    fn unmanaged_needs_no_bridge() {
        let n = parse("<network><name>x</name><forward mode='vepa'/></network>").unwrap();
        assert_eq!(n.bridge, None);
    }

    #[test]
    fn refused() {
        for (xml, want) in [
            ("", "no XML element"),
            ("<network>", "malformed"),
            ("not xml at all", "no XML element"),
            ("<domain><name>x</name></domain>", "root element is <domain>"),
            ("<network><bridge name='virbr0'/></network>", "malformed"),
            ("<network><name></name><bridge name='virbr0'/></network>", "empty"),
            ("<network><name>x</name></network>", "no <bridge name"),
            ("<network><name>x</name><bridge name='a/b'/></network>", "invalid bridge name"),
            ("<network><name>x</name><bridge name='virbr0' zone='../x'/></network>", "invalid zone name"),
            ("<network><name>x</name><bridge name='1234567890123456'/></network>", "16 bytes"),
            ("<network><name>x</name><forward mode='warp'/><bridge name='b'/></network>", "forward mode \"warp\", which virtzone does not know"),
            ("<!DOCTYPE network [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><network><name>&e;</name></network>", "DOCTYPE"),
            ("<hookData><networkport/></hookData>", "malformed"),
        ] {
            let err = parse(xml).unwrap_err().to_string();
            assert!(err.contains(want), "{xml:?}: {err}");
        }
    }

    /// Found by `fuzz::network_xml`: quick-xml's message quoted the document's newline raw.
    #[test]
    fn malformed_documents_are_refused_in_one_line() {
        let err = parse("<network>\n  <name>rout</ilter\n  <forward mode='route'/>\n</network>\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the network XML is malformed:"), "{err}");
        assert!(err.contains("</ilter\\n  <forward"), "{err}");
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }
}
