//! The checks of a forward before anything is recorded: `forward add`'s request against the
//! recorded networks (and, for `--domain`, the running domain), the host side every forward shares,
//! and a host port another forward already claims. Pure, apart from asking the kernel whether an
//! address is this host's (`is_local`).

use std::net::IpAddr;

use super::domain::{self, Domains};
use super::error::{refused, ForwardError};
use super::model::{self, Declared, ForwardRule};
use super::network::Networks;
use super::request::{AddDomainForward, AddForward};
use crate::change::Reason;
use crate::libvirt::ForwardMode;

/// Whether `addr` is one of this host's addresses (binding to it succeeds only then).
pub(super) fn is_local(addr: IpAddr) -> bool {
    std::net::UdpSocket::bind((addr, 0)).is_ok()
}

/// Checks `req` against the recorded networks: the pure validation of `forward add`.
pub fn validate(
    req: &AddForward,
    networks: &Networks,
    local: impl Fn(IpAddr) -> bool,
) -> Result<(), ForwardError> {
    let Some(rec) = networks.networks.get(&req.network) else {
        return Err(ForwardError::Usage(format!(
            "virtzone knows no libvirt network {:?}: start it with virtzone's network hook installed \
             (virsh net-start {0}), then try again",
            req.network
        )));
    };
    if rec.forward == ForwardMode::None {
        return Err(refused(Reason::NetworkIsolated, format!(
            "network {} is isolated, so libvirt lets no forwarded traffic reach its guests; use a NAT or \
             routed network",
            req.network
        )));
    }
    if !rec.subnets.iter().any(|s| s.contains(req.guest)) || rec.host.contains(&req.guest) {
        let subnets: Vec<String> = rec.subnets.iter().map(ToString::to_string).collect();
        return Err(ForwardError::Usage(format!(
            "guest address {} is not a guest address of network {} (subnets {})",
            req.guest,
            req.network,
            if subnets.is_empty() {
                "none".to_string()
            } else {
                subnets.join(", ")
            }
        )));
    }
    if let Some(host) = req.rule.host_address {
        if host.is_ipv4() != req.guest.is_ipv4() {
            return Err(ForwardError::Usage(format!(
                "host address {host} and guest address {} are of different IP versions",
                req.guest
            )));
        }
    }
    check_host_side(&req.rule, req.route_localnet, local)
}

/// The checks of `--host-address`, `--from-host` and `--route-localnet` every forward gets.
pub(super) fn check_host_side(
    rule: &ForwardRule,
    route_localnet: bool,
    local: impl Fn(IpAddr) -> bool,
) -> Result<(), ForwardError> {
    let (host_address, from_host) = (rule.host_address, rule.from_host);
    if route_localnet && host_address.is_none() {
        return Err(ForwardError::Usage(
            "--route-localnet is only for a loopback --host-address such as 127.0.0.1".into(),
        ));
    }
    if from_host && host_address.is_none() {
        return Err(ForwardError::Usage(
            "--from-host needs --host-address: without a destination, a forward of the host's own \
             connections would capture them to that port on every server"
                .into(),
        ));
    }
    if let Some(host) = host_address {
        if host.is_loopback() {
            if host.is_ipv6() {
                return Err(ForwardError::Usage(format!(
                    "host address {host} cannot be forwarded: Linux never routes the IPv6 loopback \
                     address off the host; use another address of the host"
                )));
            }
            if !route_localnet {
                return Err(ForwardError::Usage(format!(
                    "host address {host} is a loopback address, which needs route_localnet on the \
                     network's bridge, a known risk (guests could reach the host's loopback-only \
                     services; virtzone's guard drops that traffic): pass --route-localnet to accept \
                     it, or use another address of the host"
                )));
            }
            if !from_host {
                return Err(ForwardError::Usage(format!(
                    "only the host itself can connect to {host}: a forward of a loopback address \
                     needs --from-host"
                )));
            }
        } else if route_localnet {
            return Err(ForwardError::Usage(format!(
                "--route-localnet is only for a loopback --host-address such as 127.0.0.1, not {host}"
            )));
        }
        if !local(host) {
            return Err(ForwardError::Usage(format!(
                "host address {host} is not an address of this host"
            )));
        }
    }
    Ok(())
}

/// The pure validation of `forward add --domain`: the network (if named) must be known, the host
/// side valid, and a running domain's interface choice clear now (a stopped domain's is checked,
/// and logged, when it starts).
pub fn validate_domain(
    req: &AddDomainForward,
    networks: &Networks,
    domains: &Domains,
    local: impl Fn(IpAddr) -> bool,
) -> Result<(), ForwardError> {
    if let Some(net) = &req.network {
        let Some(rec) = networks.networks.get(net) else {
            return Err(ForwardError::Usage(format!(
                "virtzone knows no libvirt network {net:?}: start it with virtzone's network hook \
                 installed (virsh net-start {net}), then try again"
            )));
        };
        if rec.forward == ForwardMode::None {
            return Err(refused(
                Reason::NetworkIsolated,
                format!(
                "network {net} is isolated, so libvirt lets no forwarded traffic reach its guests; \
                 use a NAT or routed network"
            ),
            ));
        }
    }
    check_host_side(&req.rule, req.route_localnet, local)?;
    let boot = domain::boot_id();
    if let Some(rec) = domains
        .domains
        .get(&req.domain)
        .filter(|r| r.runs(boot.as_deref()))
    {
        domain::interface_for(&req.forward(0), rec, networks).map_err(ForwardError::Usage)?;
    }
    Ok(())
}

/// Refuses (exit 1) a forward whose host port another forward already claims.
pub(super) fn clash_check(declared: &Declared, new: &model::HostSide) -> Result<(), ForwardError> {
    let plain = declared
        .forwards
        .iter()
        .map(|f| (f.id, f.host_side(), f.guest.to_string()));
    let by_domain = declared
        .domain_forwards
        .iter()
        .map(|f| (f.id, f.host_side(), format!("domain {}", f.domain)));
    if let Some((id, _, to)) = plain.chain(by_domain).find(|(_, h, _)| h.clashes_with(new)) {
        return Err(refused(
            Reason::HostPortTaken,
            format!(
                "host port {}/{} is already forwarded by forward {id} (to {to}); remove it first \
             (virtzone forward remove {id})",
                new.proto, new.ports
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::domain::{DomainRecord, Interface};
    use crate::forward::network::{NetworkRecord, Subnet};

    fn req(domain: &str, network: Option<&str>) -> AddDomainForward {
        AddDomainForward {
            domain: domain.into(),
            network: network.map(|n| n.parse().unwrap()),
            rule: ForwardRule::new("tcp/8080:80".parse().unwrap(), None, false, false),
            route_localnet: false,
        }
    }

    fn world() -> (Networks, Domains) {
        let mut networks = Networks::default();
        for (name, bridge) in [("n1", "virbr1"), ("n2", "virbr2")] {
            networks.networks.insert(
                name.parse().unwrap(),
                NetworkRecord {
                    bridge: crate::names::BridgeName::new(bridge).unwrap(),
                    forward: ForwardMode::Nat,
                    subnets: vec!["192.0.2.0/24".parse::<Subnet>().unwrap()],
                    host: vec![],
                    active: true,
                    hosts: vec![],
                    nat: None,
                },
            );
        }
        let iface = |n: &str| Interface {
            network: n.parse().unwrap(),
            mac: Some("52:54:00:00:00:01".into()),
        };
        let mut domains = Domains::default();
        domains.domains.insert(
            "two".into(),
            DomainRecord {
                running: true,
                uuid: None,
                boot: None,
                interfaces: vec![iface("n1"), iface("n2")],
            },
        );
        domains.domains.insert(
            "off".into(),
            DomainRecord {
                running: false,
                uuid: None,
                boot: None,
                interfaces: vec![iface("n1"), iface("n2")],
            },
        );
        (networks, domains)
    }

    #[test]
    fn domain_forwards_are_checked_at_add_time_only_while_the_domain_runs() {
        let (networks, domains) = world();
        let local = |_| true;
        let usage = |r: Result<(), ForwardError>| matches!(r, Err(ForwardError::Usage(_)));
        // Running with two interfaces: --network is needed, and must be one of them.
        assert!(usage(validate_domain(
            &req("two", None),
            &networks,
            &domains,
            local
        )));
        assert!(validate_domain(&req("two", Some("n2")), &networks, &domains, local).is_ok());
        assert!(usage(validate_domain(
            &req("two", Some("nosuch")),
            &networks,
            &domains,
            local
        )));
        // Stopped (or never seen): checked when it starts.
        assert!(validate_domain(&req("off", None), &networks, &domains, local).is_ok());
        assert!(validate_domain(&req("new", None), &networks, &domains, local).is_ok());
        // The host side as for --guest forwards.
        let mut r = req("off", None);
        r.rule.from_host = true;
        assert!(usage(validate_domain(&r, &networks, &domains, local)));
        r.rule.host_address = Some("203.0.113.7".parse().unwrap());
        assert!(usage(validate_domain(&r, &networks, &domains, |_| false)));
    }
}
