//! libvirt's side: its network XML and hookData, and the hook protocol's vocabulary.

pub mod firewall;
pub mod network;

pub use network::{parse_network_xml, ForwardMode, Network, NetworkXmlError};
