//! The accepts forwards need where libvirt rejects new connections to its NAT guests (its iptables
//! chain `LIBVIRT_FWI`, its nftables chain `guest_input`): which guest ports of which bridge, grouped
//! into as few rules as each backend allows. The backends' spelling of them is in
//! [`super::iptables`] and [`super::nft`]. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::model::{is_localnet, Declared, Ports, Proto};
use super::network::Networks;
use crate::libvirt::ForwardMode;

/// The comment on each of virtzone's accepts (and its masquerades), in either backend.
pub const COMMENT: &str = "virtzone-fwd";

/// An accept for forwards to one guest port set of a running NAT network, in
/// [`super::iptables::CHAIN`] or libvirt's nftables chain `guest_input`. Forwards to the same guest
/// and protocol share a rule (`multiport`, up to 15 port slots, a range counting two): each rule is
/// one `iptables` run after every flush, so fewer rules heal faster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// The guest (IPv4: libvirt NATs IPv4 only; its IPv6 subnets are routed and accepted).
    pub guest: IpAddr,
    /// The network's bridge.
    pub bridge: String,
    /// The protocol.
    pub proto: Proto,
    /// The guest's ports (at most 15 slots).
    pub ports: Vec<Ports>,
}

/// `multiport` takes at most 15 ports, a range counting as two.
const MULTIPORT_SLOTS: u32 = 15;

/// The accepts the declared forwards need now: guests on running NAT networks, grouped by guest,
/// bridge and protocol.
pub fn accepts(declared: &Declared, networks: &Networks) -> Vec<Accept> {
    grouped_accepts(declared, networks, true)
}

/// The accepts for IPv6 guests of running NAT networks whose bridge libvirt's nftables chain
/// `guest_input` of `table ip6 libvirt_network` names (`bridges`): with `<nat ipv6='yes'>` libvirt
/// rejects new connections there as for IPv4 (for a routed IPv6 subnet its own accept comes first
/// and ours is merely redundant). libvirt's iptables backend never NATs IPv6, so nothing else needs
/// an IPv6 accept.
pub fn accepts6(
    declared: &Declared,
    networks: &Networks,
    bridges: &BTreeSet<String>,
) -> Vec<Accept> {
    grouped_accepts(declared, networks, false)
        .into_iter()
        .filter(|a| bridges.contains(&a.bridge))
        .collect()
}

fn grouped_accepts(declared: &Declared, networks: &Networks, v4: bool) -> Vec<Accept> {
    let mut groups: BTreeMap<(IpAddr, String, Proto), BTreeSet<Ports>> = BTreeMap::new();
    for f in declared
        .forwards
        .iter()
        .filter(|f| f.guest.is_ipv4() == v4 && !is_localnet(f))
    {
        let Some(rec) = networks.networks.get(&f.network) else {
            continue;
        };
        if rec.active && rec.forward == ForwardMode::Nat {
            groups
                .entry((f.guest, rec.bridge.to_string(), f.proto))
                .or_default()
                .insert(f.guest_port);
        }
    }
    let mut out = Vec::new();
    for ((guest, bridge, proto), ports) in groups {
        let mut chunk: Vec<Ports> = Vec::new();
        let mut slots = 0;
        for p in ports {
            let need = if p.lo == p.hi { 1 } else { 2 };
            if slots + need > MULTIPORT_SLOTS {
                out.push(Accept {
                    guest,
                    bridge: bridge.clone(),
                    proto,
                    ports: std::mem::take(&mut chunk),
                });
                slots = 0;
            }
            chunk.push(p);
            slots += need;
        }
        if !chunk.is_empty() {
            out.push(Accept {
                guest,
                bridge,
                proto,
                ports: chunk,
            });
        }
    }
    out
}
