//! Service and protocol names, as firewalld resolves them through libc (`getservbyname`,
//! `getprotobyname`), read from `/etc/services` and `/etc/protocols` once per process.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Used when `/etc/protocols` is missing (minimal containers): the names firewalld users write.
const FALLBACK_PROTOCOLS: &[&str] = &[
    "ip",
    "icmp",
    "igmp",
    "ipip",
    "tcp",
    "egp",
    "pup",
    "udp",
    "idp",
    "ipv6",
    "ipv6-route",
    "ipv6-frag",
    "rsvp",
    "gre",
    "esp",
    "ah",
    "ipv6-icmp",
    "ipv6-nonxt",
    "ipv6-opts",
    "pim",
    "vrrp",
    "l2tp",
    "isis",
    "sctp",
    "fc",
    "mobility-header",
    "udplite",
    "mpls-in-ip",
    "hip",
    "shim6",
    "wesp",
    "rohc",
    "ethernet",
    "ospf",
    "encap",
    "etherip",
];

fn parse_services(text: &str) -> HashMap<String, u16> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(port) = port_proto
            .split('/')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        // getservbyname(name, NULL) returns the first entry that carries the name or an alias.
        for n in std::iter::once(name).chain(fields) {
            map.entry(n.to_string()).or_insert(port);
        }
    }
    map
}

fn parse_protocols(text: &str) -> HashSet<String> {
    let mut set = HashSet::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 || fields[1].parse::<u8>().is_err() {
            continue;
        }
        set.insert(fields[0].to_string());
        for alias in &fields[2..] {
            set.insert(alias.to_string());
        }
    }
    set
}

/// The port of a service name (`ssh` → 22), as `getservbyname(name, NULL)` finds it.
pub(crate) fn service_port(name: &str) -> Option<u16> {
    static SERVICES: OnceLock<HashMap<String, u16>> = OnceLock::new();
    SERVICES
        .get_or_init(|| {
            std::fs::read_to_string("/etc/services")
                .map(|t| parse_services(&t))
                .unwrap_or_default()
        })
        .get(name)
        .copied()
}

/// Whether `getprotobyname(name)` would know the protocol.
pub(crate) fn is_protocol_name(name: &str) -> bool {
    static PROTOCOLS: OnceLock<HashSet<String>> = OnceLock::new();
    PROTOCOLS
        .get_or_init(|| match std::fs::read_to_string("/etc/protocols") {
            Ok(t) => parse_protocols(&t),
            Err(_) => FALLBACK_PROTOCOLS.iter().map(|s| s.to_string()).collect(),
        })
        .contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_file_format() {
        let m = parse_services("ssh\t\t22/tcp\t\t\t# SSH\nhttp 80/tcp www # WWW\nhttp 80/udp\n");
        assert_eq!(m.get("ssh"), Some(&22));
        assert_eq!(m.get("www"), Some(&80));
        assert_eq!(m.get("nope"), None);
    }

    #[test]
    fn protocols_file_format() {
        let s = parse_protocols("icmp 1 ICMP # internet\nipv6-icmp 58 IPv6-ICMP\n#x 9\n");
        assert!(s.contains("icmp") && s.contains("IPv6-ICMP") && !s.contains("x"));
    }
}
