//! libvirt's side: its network XML and hookData, and the hook protocol's vocabulary.

pub mod domain;
pub mod firewall;
pub mod network;

pub use domain::{parse_domain_xml, Domain, DomainInterface};
pub use network::{
    parse_network_xml, DhcpHost, ForwardMode, ForwardNat, Network, NetworkDhcp, NetworkXmlError,
};
