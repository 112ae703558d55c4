//! Semantic comparison: what an installed zone or policy does differently from the expected one.
//!
//! Order never matters (firewalld places rules by priority and action, and 2.x keeps rich rules as a
//! set), overlapping or adjacent port ranges count as their union, and short name, description and
//! version carry no behaviour: they are reported separately by `cosmetic_diff`.

use std::fmt::Display;

use super::check::PortRange;
use super::model::{Body, Policy, Port, Zone};
use super::rich::RichRule;

/// `extra …` for entries only in `actual`, `missing …` for entries only in `expected`.
fn set_diff<T: Display>(what: &str, expected: &[T], actual: &[T], out: &mut Vec<String>) {
    let exp: Vec<String> = expected.iter().map(|x| x.to_string()).collect();
    let act: Vec<String> = actual.iter().map(|x| x.to_string()).collect();
    let mut extra: Vec<&String> = act.iter().filter(|x| !exp.contains(x)).collect();
    let mut missing: Vec<&String> = exp.iter().filter(|x| !act.contains(x)).collect();
    extra.sort();
    extra.dedup();
    missing.sort();
    missing.dedup();
    out.extend(extra.into_iter().map(|x| format!("extra {what} {x}")));
    out.extend(missing.into_iter().map(|x| format!("missing {what} {x}")));
}

/// Merges overlapping and adjacent ranges per protocol: `80-85` + `86-90` opens the same as `80-90`.
fn coalesce(ports: &[Port]) -> Vec<Port> {
    let mut sorted = ports.to_vec();
    sorted.sort();
    let mut out: Vec<Port> = Vec::new();
    for p in sorted {
        if let Some(last) = out.last_mut() {
            if last.protocol == p.protocol
                && u32::from(p.port.start) <= u32::from(last.port.end) + 1
            {
                last.port = PortRange {
                    start: last.port.start,
                    end: last.port.end.max(p.port.end),
                };
                continue;
            }
        }
        out.push(p);
    }
    out
}

impl Body {
    /// Services, ports, protocols, source ports, icmp-blocks and forward-ports, in that order.
    fn diff_entries(&self, actual: &Body, out: &mut Vec<String>) {
        set_diff("service", &self.services, &actual.services, out);
        set_diff(
            "port",
            &coalesce(&self.ports),
            &coalesce(&actual.ports),
            out,
        );
        set_diff("protocol", &self.protocols, &actual.protocols, out);
        set_diff(
            "source port",
            &coalesce(&self.source_ports),
            &coalesce(&actual.source_ports),
            out,
        );
        set_diff("icmp-block", &self.icmp_blocks, &actual.icmp_blocks, out);
        set_diff(
            "forward-port",
            &self.forward_ports,
            &actual.forward_ports,
            out,
        );
    }

    /// The rich rules, as a set of their text.
    fn diff_rules(&self, actual: &Body, out: &mut Vec<String>) {
        set_diff(
            "rich rule",
            &rule_strings(&self.rules),
            &rule_strings(&actual.rules),
            out,
        );
    }

    /// Short name, description and version: no behaviour.
    pub fn cosmetic_diff(&self, actual: &Body) -> Vec<String> {
        let mut out = Vec::new();
        text("short name", &self.short, &actual.short, &mut out);
        text(
            "description",
            &self.description,
            &actual.description,
            &mut out,
        );
        text("version", &self.version, &actual.version, &mut out);
        out
    }
}

fn rule_strings(rules: &[RichRule]) -> Vec<String> {
    rules.iter().map(|r| r.to_string()).collect()
}

fn flag(what: &str, expected: bool, actual: bool, out: &mut Vec<String>) {
    if expected != actual {
        let onoff = |b: bool| if b { "on" } else { "off" };
        out.push(format!(
            "{what} is {} (expected {})",
            onoff(actual),
            onoff(expected)
        ));
    }
}

fn value<T: PartialEq + Display>(what: &str, expected: T, actual: T, out: &mut Vec<String>) {
    if expected != actual {
        out.push(format!("{what} is {actual} (expected {expected})"));
    }
}

fn text(what: &str, expected: &str, actual: &str, out: &mut Vec<String>) {
    if expected != actual {
        out.push(format!("{what} is '{actual}' (expected '{expected}')"));
    }
}

impl Zone {
    /// How `other` behaves differently from `self`, one line per difference, e.g.
    /// `extra service http`, `missing rich rule rule priority="32767" reject`,
    /// `target is DROP (expected ACCEPT)`. Empty when both do the same; the name is not compared.
    pub fn diff(&self, other: &Zone) -> Vec<String> {
        let mut out = Vec::new();
        value(
            "target",
            self.target.as_str(),
            other.target.as_str(),
            &mut out,
        );
        value(
            "ingress-priority",
            self.ingress_priority,
            other.ingress_priority,
            &mut out,
        );
        value(
            "egress-priority",
            self.egress_priority,
            other.egress_priority,
            &mut out,
        );
        flag("forward", self.forward, other.forward, &mut out);
        flag("masquerade", self.masquerade, other.masquerade, &mut out);
        flag(
            "icmp-block-inversion",
            self.icmp_block_inversion,
            other.icmp_block_inversion,
            &mut out,
        );
        self.body.diff_entries(&other.body, &mut out);
        set_diff("interface", &self.interfaces, &other.interfaces, &mut out);
        set_diff("source", &self.sources, &other.sources, &mut out);
        self.body.diff_rules(&other.body, &mut out);
        out
    }

    /// Whether both zones make firewalld do the same (see [`Zone::diff`]).
    pub fn same_meaning(&self, other: &Zone) -> bool {
        self.diff(other).is_empty()
    }

    /// Differences that change nothing firewalld does: short name, description, version.
    pub fn cosmetic_diff(&self, other: &Zone) -> Vec<String> {
        self.body.cosmetic_diff(&other.body)
    }
}

impl Policy {
    /// How `other` behaves differently from `self` (see [`Zone::diff`]).
    pub fn diff(&self, other: &Policy) -> Vec<String> {
        let mut out = Vec::new();
        value(
            "target",
            self.target.as_str(),
            other.target.as_str(),
            &mut out,
        );
        value("priority", self.priority, other.priority, &mut out);
        set_diff(
            "ingress zone",
            &self.ingress_zones,
            &other.ingress_zones,
            &mut out,
        );
        set_diff(
            "egress zone",
            &self.egress_zones,
            &other.egress_zones,
            &mut out,
        );
        flag("masquerade", self.masquerade, other.masquerade, &mut out);
        self.body.diff_entries(&other.body, &mut out);
        self.body.diff_rules(&other.body, &mut out);
        out
    }

    /// Whether both policies make firewalld do the same.
    pub fn same_meaning(&self, other: &Policy) -> bool {
        self.diff(other).is_empty()
    }

    /// Differences that change nothing firewalld does: short name, description, version.
    pub fn cosmetic_diff(&self, other: &Policy) -> Vec<String> {
        self.body.cosmetic_diff(&other.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::check::PortProtocol;

    fn port(a: u16, b: u16) -> Port {
        Port {
            port: PortRange { start: a, end: b },
            protocol: PortProtocol::Tcp,
        }
    }

    #[test]
    fn adjacent_and_overlapping_ranges_merge() {
        let merged = coalesce(&[port(86, 90), port(80, 85), port(88, 88), port(100, 100)]);
        assert_eq!(merged, vec![port(80, 90), port(100, 100)]);
    }

    #[test]
    fn order_and_layout_do_not_matter() {
        let mut a = Zone::new("z");
        a.services = vec!["ssh".into(), "dns".into()];
        a.ports = vec![port(80, 85), port(86, 90)];
        let mut b = Zone::new("z");
        b.services = vec!["dns".into(), "ssh".into()];
        b.ports = vec![port(80, 90)];
        b.description = "other words".into();
        assert!(a.same_meaning(&b));
        assert_eq!(
            a.cosmetic_diff(&b),
            vec!["description is 'other words' (expected '')"]
        );
        b.services.push("http".into());
        b.forward = true;
        assert_eq!(
            a.diff(&b),
            vec!["forward is on (expected off)", "extra service http"]
        );
    }
}
