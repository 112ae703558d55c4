//! libvirt's `<domain>` XML as the qemu hook receives it on stdin: only the domain's name and its
//! interfaces on virtual networks (`<interface type='network'>`, with their MAC and network) are
//! read; everything else is ignored, so newer libvirt XML keeps parsing.

use serde::Deserialize;

use super::network::{root_element, NetworkXmlError, MAX_XML_BYTES};

/// A domain's facts for forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The domain's name.
    pub name: String,
    /// Its `<uuid>`, lower-case (`None` if absent or not a UUID).
    pub uuid: Option<String>,
    /// Its interfaces on libvirt virtual networks, in document order.
    pub interfaces: Vec<DomainInterface>,
}

/// One `<interface type='network'>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInterface {
    /// `<source network=…>`.
    pub network: String,
    /// `<mac address=…>`, lower-case (`None` if libvirt wrote none, which it does not for a live
    /// domain).
    pub mac: Option<String>,
}

#[derive(Deserialize)]
struct DomainXml {
    name: String,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    devices: Option<DevicesXml>,
}

#[derive(Deserialize)]
struct DevicesXml {
    #[serde(default)]
    interface: Vec<InterfaceXml>,
}

#[derive(Deserialize)]
struct InterfaceXml {
    #[serde(rename = "@type")]
    kind: Option<String>,
    source: Option<SourceXml>,
    mac: Option<MacXml>,
}

#[derive(Deserialize)]
struct SourceXml {
    #[serde(rename = "@network")]
    network: Option<String>,
}

#[derive(Deserialize)]
struct MacXml {
    #[serde(rename = "@address")]
    address: Option<String>,
}

/// Whether `mac` is six colon-separated hex octets.
pub fn is_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `uuid` is a UUID as libvirt writes it (8-4-4-4-12 hex digits).
fn is_uuid(uuid: &str) -> bool {
    let parts: Vec<&str> = uuid.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses a `<domain>` document (the qemu hook's stdin, `virsh dumpxml`). Refuses what is too
/// large, has a DOCTYPE, or is not a domain; a malformed MAC is refused rather than never matching.
pub fn parse_domain_xml(xml: &str) -> Result<Domain, NetworkXmlError> {
    let malformed = |e: quick_xml::DeError| NetworkXmlError::Malformed(e.to_string());
    if xml.len() > MAX_XML_BYTES {
        return Err(NetworkXmlError::Malformed(format!(
            "it is larger than {MAX_XML_BYTES} bytes"
        )));
    }
    let root = root_element(xml)?;
    if root != "domain" {
        return Err(NetworkXmlError::Malformed(format!(
            "the root element is <{root}>, expected <domain>"
        )));
    }
    let raw: DomainXml = quick_xml::de::from_str(xml).map_err(malformed)?;
    let name = raw.name.trim().to_string();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(NetworkXmlError::Malformed(format!(
            "the domain name {:?} is empty or has control characters",
            raw.name
        )));
    }
    let mut interfaces = Vec::new();
    for i in raw.devices.map(|d| d.interface).unwrap_or_default() {
        if i.kind.as_deref() != Some("network") {
            continue;
        }
        let Some(network) = i.source.and_then(|s| s.network).filter(|n| !n.is_empty()) else {
            continue;
        };
        let mac = match i.mac.and_then(|m| m.address) {
            Some(m) if is_mac(m.trim()) => Some(m.trim().to_ascii_lowercase()),
            Some(m) => {
                return Err(NetworkXmlError::Malformed(format!(
                    "interface on network {network} has MAC address {m:?}, which is not one"
                )))
            }
            None => None,
        };
        interfaces.push(DomainInterface { network, mac });
    }
    let uuid = raw
        .uuid
        .map(|u| u.trim().to_ascii_lowercase())
        .filter(|u| is_uuid(u));
    Ok(Domain {
        name,
        uuid,
        interfaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_interfaces_on_networks_only() {
        let xml = "<domain type='qemu' id='3'><name>web</name>\
                   <uuid>8F1C7A2E-0000-4000-8000-00000000AB01</uuid><memory>1</memory><devices>\
                   <interface type='network'><mac address='52:54:00:AA:bb:01'/>\
                   <source network='default' portid='x' bridge='virbr0'/><target dev='vnet0'/></interface>\
                   <interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source bridge='br0'/></interface>\
                   <interface type='network'><source network='lan'/></interface>\
                   </devices></domain>";
        let d = parse_domain_xml(xml).unwrap();
        assert_eq!(d.name, "web");
        assert_eq!(
            d.uuid.as_deref(),
            Some("8f1c7a2e-0000-4000-8000-00000000ab01")
        );
        assert_eq!(
            d.interfaces,
            [
                DomainInterface {
                    network: "default".into(),
                    mac: Some("52:54:00:aa:bb:01".into())
                },
                DomainInterface {
                    network: "lan".into(),
                    mac: None
                }
            ]
        );
        let none = parse_domain_xml("<domain><name>x</name></domain>").unwrap();
        assert!(none.interfaces.is_empty());
        assert_eq!(none.uuid, None);
    }

    #[test]
    fn refuses_what_is_not_a_domain() {
        for bad in [
            "",
            "<network><name>x</name></network>",
            "<!DOCTYPE domain [<!ENTITY a 'b'>]><domain><name>&a;</name></domain>",
            "<domain><name> </name></domain>",
            "<domain><name>x</name><devices><interface type='network'><mac address='zz'/>\
             <source network='n'/></interface></devices></domain>",
        ] {
            assert!(parse_domain_xml(bad).is_err(), "{bad:?}");
        }
        let huge = format!(
            "<domain><name>x</name>{}</domain>",
            " ".repeat(MAX_XML_BYTES)
        );
        assert!(parse_domain_xml(&huge).is_err());
    }

    /// Found by `fuzz::domain_xml`: a control character of the document reached the message raw.
    #[test]
    fn malformed_documents_are_refused_in_one_line() {
        let err = parse_domain_xml("<domain><name>x</name><\u{e}domain>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\\u{e}domain"), "{err}");
        assert!(!err.chars().any(char::is_control), "{err:?}");
    }
}
