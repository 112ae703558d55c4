//! The validation of one forward's description, shared by `forward add`/`remove` (flags) and the
//! `[Forward]` sections of drop-in files (keys): the same value is accepted or refused with the
//! same sentence either way.

use std::net::IpAddr;

use super::model::{DomainForward, Forward, ForwardRule, PortMap};
use crate::cli::ForwardSpec;
use crate::names::NetworkName;

/// A forward to an address, or to a domain by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `--network NET --guest ADDR`.
    Guest(AddForward),
    /// `--domain DOMAIN [--network NET]`.
    Domain(AddDomainForward),
}

/// A `forward add` request, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddForward {
    /// The network.
    pub network: NetworkName,
    /// The guest.
    pub guest: IpAddr,
    /// What to forward.
    pub rule: ForwardRule,
    /// The opt-in to `route_localnet` that a loopback host address needs.
    pub route_localnet: bool,
}

impl AddForward {
    /// The forward it declares, numbered `id`.
    pub(super) fn forward(&self, id: u32) -> Forward {
        Forward {
            id,
            network: self.network.clone(),
            guest: self.guest,
            rule: self.rule,
        }
    }
}

/// A `forward add --domain` request, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddDomainForward {
    /// The libvirt domain.
    pub domain: String,
    /// Which of its networks (`None`: its only one virtzone knows).
    pub network: Option<NetworkName>,
    /// What to forward.
    pub rule: ForwardRule,
    /// The opt-in to `route_localnet` that a loopback host address needs.
    pub route_localnet: bool,
}

impl AddDomainForward {
    /// The forward it declares, numbered `id`.
    pub(super) fn forward(&self, id: u32) -> DomainForward {
        DomainForward {
            id,
            domain: self.domain.clone(),
            network: self.network.clone(),
            rule: self.rule,
        }
    }
}

/// `text` as an address; `what` names it in the error.
pub fn address(text: &str, what: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not an IPv4 or IPv6 address"))
}

/// `name` as a libvirt network name virtzone accepts ([`NetworkName::new`]); `Err` is one sentence.
pub fn network_name(name: &str) -> Result<NetworkName, String> {
    NetworkName::new(name).map_err(|e| e.to_string())
}

fn domain_name(name: &str) -> Result<String, String> {
    if crate::names::is_libvirt_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not a libvirt domain name virtzone accepts (letters, digits, -_.+, at most 64)"
        ))
    }
}

/// The request described by `spec` and `ports` (the pure checks; those against the recorded
/// networks are [`super::validate::validate`] and [`super::validate::validate_domain`]).
pub fn request(spec: &ForwardSpec, ports: &str) -> Result<Request, String> {
    let ports: PortMap = ports.parse()?;
    let host_address = spec
        .host_address
        .as_deref()
        .map(|a| address(a, "host address"))
        .transpose()?;
    let rule = ForwardRule::new(ports, host_address, spec.from_host, spec.hairpin);
    if let Some(domain) = &spec.domain {
        if spec.guest.is_some() {
            return Err(
                "--domain and --guest exclude each other: the domain's address is resolved by virtzone"
                    .into(),
            );
        }
        return Ok(Request::Domain(AddDomainForward {
            domain: domain_name(domain)?,
            network: spec.network.as_deref().map(network_name).transpose()?,
            rule,
            route_localnet: spec.route_localnet,
        }));
    }
    let (Some(network), Some(guest)) = (&spec.network, &spec.guest) else {
        return Err("a forward needs --network NET and --guest ADDR, or --domain DOMAIN".into());
    };
    Ok(Request::Guest(AddForward {
        network: network_name(network)?,
        guest: address(guest, "guest address")?,
        rule,
        route_localnet: spec.route_localnet,
    }))
}
