//! Zone and policy XML: a structural pass that mirrors firewalld's SAX reader (which elements and
//! attributes exist, which are required), serde documents for the mapping, and the conversion to
//! and from the typed model.
//!
//! Where firewalld only logs a warning and drops part of a file (a rule in the wrong place, an
//! unknown element, a duplicate), this reader refuses the file: the product must never ship or
//! trust a definition whose meaning firewalld would silently change.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde::{Deserialize, Serialize};

use super::check::{python_int, PortRange};
use super::error::{on, Check, ErrorCode, Fail, ObjectKind, ZoneError};
use super::model::{
    collapse_ws, Body, ForwardPort, Policy, PolicyTarget, Port, Zone, ZoneSource, ZoneTarget,
};
use super::rich::{
    invert_value, mss_value, nflog_u16, ActionKind, Family, Limit, RichRule, RuleAction, RuleAudit,
    RuleDestination, RuleElement, RuleLog, RuleSource,
};

// ---- structural pass -------------------------------------------------------------------------

/// Required and optional attributes per element: firewalld's `PARSER_REQUIRED_ELEMENT_ATTRS` and
/// `PARSER_OPTIONAL_ELEMENT_ATTRS` (2.x, which adds the zone priorities and `limit burst`).
fn attr_spec(
    kind: ObjectKind,
    element: &str,
) -> Option<(&'static [&'static str], &'static [&'static str])> {
    let spec: (&[&str], &[&str]) = match (kind, element) {
        (ObjectKind::Zone, "zone") => (
            &[],
            &[
                "name",
                "immutable",
                "target",
                "version",
                "ingress-priority",
                "egress-priority",
            ],
        ),
        (ObjectKind::Policy, "policy") => (&["target"], &["version", "priority"]),
        (ObjectKind::Zone, "forward" | "icmp-block-inversion") => (&[], &[]),
        (ObjectKind::Zone, "interface") => (&["name"], &[]),
        (ObjectKind::Zone, "masquerade") => (&[], &["enabled"]),
        (ObjectKind::Policy, "masquerade") => (&[], &[]),
        (ObjectKind::Policy, "ingress-zone" | "egress-zone") => (&["name"], &[]),
        (_, "short" | "description" | "rule" | "audit" | "accept" | "drop") => (
            &[],
            if element == "rule" {
                &["family", "priority"]
            } else {
                &[]
            },
        ),
        (_, "service" | "icmp-block" | "icmp-type") => (&["name"], &[]),
        (_, "port" | "source-port") => (&["port", "protocol"], &[]),
        (_, "forward-port") => (&["port", "protocol"], &["to-port", "to-addr"]),
        (_, "protocol") => (&["value"], &[]),
        (_, "source") => (&[], &["address", "mac", "invert", "family", "ipset"]),
        (_, "destination") => (&[], &["address", "invert", "ipset"]),
        (_, "log") => (&[], &["prefix", "level"]),
        (_, "nflog") => (&[], &["group", "prefix", "queue-size"]),
        (_, "reject") => (&[], &["type"]),
        (_, "mark") => (&["set"], &[]),
        (_, "limit") => (&["value"], &["burst"]),
        (_, "tcp-mss-clamp") => (&[], &["value"]),
        _ => return None,
    };
    Some(spec)
}

const RULE_CHILDREN: &[&str] = &[
    "source",
    "destination",
    "service",
    "port",
    "protocol",
    "icmp-block",
    "icmp-type",
    "masquerade",
    "forward-port",
    "source-port",
    "tcp-mss-clamp",
    "log",
    "nflog",
    "audit",
    "accept",
    "reject",
    "drop",
    "mark",
];
const LIMIT_PARENTS: &[&str] = &["log", "nflog", "audit", "accept", "reject", "drop", "mark"];

fn top_children(kind: ObjectKind) -> &'static [&'static str] {
    match kind {
        ObjectKind::Zone => &[
            "short",
            "description",
            "service",
            "port",
            "protocol",
            "source-port",
            "icmp-block",
            "icmp-block-inversion",
            "masquerade",
            "forward",
            "forward-port",
            "interface",
            "source",
            "rule",
        ],
        ObjectKind::Policy => &[
            "short",
            "description",
            "service",
            "port",
            "protocol",
            "source-port",
            "icmp-block",
            "masquerade",
            "forward-port",
            "ingress-zone",
            "egress-zone",
            "rule",
        ],
    }
}

/// Why `element` may not appear inside `parent` (`None` = the root).
fn placement_error(kind: ObjectKind, parent: Option<&str>, element: &str) -> Option<String> {
    let root = match kind {
        ObjectKind::Zone => "zone",
        ObjectKind::Policy => "policy",
    };
    match parent {
        None if element == root => None,
        None => Some(format!(
            "unexpected element (the root of a {kind} file is <{root}>)"
        )),
        Some(p) if p == root => {
            if top_children(kind).contains(&element) {
                None
            } else if RULE_CHILDREN.contains(&element) {
                Some("only allowed inside <rule>".into())
            } else if element == "limit" {
                Some("only allowed inside <log>, <nflog>, <audit> or an action".into())
            } else {
                Some(format!("not allowed inside <{root}>"))
            }
        }
        Some("rule") if RULE_CHILDREN.contains(&element) => None,
        Some(p) if element == "limit" && LIMIT_PARENTS.contains(&p) => None,
        Some(_) if element == "limit" => {
            Some("only allowed inside <log>, <nflog>, <audit> or an action".into())
        }
        Some(p) => Some(format!("not allowed inside <{p}>")),
    }
}

fn line_of(xml: &str, pos: u64) -> u32 {
    let end = usize::try_from(pos).unwrap_or(usize::MAX).min(xml.len());
    let newlines = xml.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    u32::try_from(newlines)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// Checks elements, attributes and nesting; returns the line of the root element and of each of
/// its children.
fn structure(kind: ObjectKind, name: &str, xml: &str) -> Result<(u32, Vec<u32>), ZoneError> {
    let fail = |line: u32, element: &str, reason: String| {
        let element = if element.is_empty() {
            String::new()
        } else {
            format!("<{element}>")
        };
        ZoneError::new(kind, name, ErrorCode::ParseError, element, reason).with_line(Some(line))
    };
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut root_line = 1;
    let mut top_lines = Vec::new();
    let mut seen_text_elems: Vec<&str> = Vec::new();
    loop {
        let pos = reader.buffer_position();
        let line = line_of(xml, pos);
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                let line = line_of(xml, reader.error_position());
                return Err(fail(line, "", format!("not a valid {kind} file: {e}")));
            }
        };
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let el = e.name().as_ref().to_string();
            if stack.is_empty() && root_seen {
                return Err(fail(
                    line,
                    &el,
                    format!("a second root element (a {kind} file has one)"),
                ));
            }
            check_attrs(kind, &el, e).map_err(|r| fail(line, &el, r))?;
            if let Some(reason) = placement_error(kind, stack.last().map(String::as_str), &el) {
                return Err(fail(line, &el, reason));
            }
            if stack.len() == 1 {
                top_lines.push(line);
                for t in ["short", "description"] {
                    if el == t {
                        if seen_text_elems.contains(&t) {
                            return Err(fail(line, &el, "given twice".into()));
                        }
                        seen_text_elems.push(t);
                    }
                }
            }
            if !root_seen {
                root_line = line;
            }
            root_seen = true;
            if !empty {
                stack.push(el);
            }
            continue;
        }
        match event {
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) => {
                let text = t.to_string();
                text_allowed(&stack, &text)
                    .map_err(|r| fail(line, stack.last().map_or("", |s| s), r))?;
            }
            Event::CData(t) => {
                let text = t.to_string();
                text_allowed(&stack, &text)
                    .map_err(|r| fail(line, stack.last().map_or("", |s| s), r))?;
            }
            Event::GeneralRef(r) => {
                let text = format!("&{};", &*r);
                text_allowed(&stack, &text)
                    .map_err(|r| fail(line, stack.last().map_or("", |s| s), r))?;
            }
            Event::DocType(_) => {
                return Err(fail(
                    line,
                    "",
                    "a DOCTYPE is not allowed in a firewalld file".into(),
                ))
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen {
        let root = if kind == ObjectKind::Zone {
            "zone"
        } else {
            "policy"
        };
        return Err(fail(
            1,
            "",
            format!("not a valid {kind} file: no <{root}> element"),
        ));
    }
    Ok((root_line, top_lines))
}

fn text_allowed(stack: &[String], text: &str) -> Result<(), String> {
    let in_text_elem = stack.len() == 2 && matches!(stack[1].as_str(), "short" | "description");
    if in_text_elem || text.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected text '{}'", text.trim()))
    }
}

fn check_attrs(kind: ObjectKind, element: &str, e: &BytesStart) -> Result<(), String> {
    let Some((required, optional)) = attr_spec(kind, element) else {
        return Err("unexpected element".into());
    };
    let mut present = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("bad attribute: {err}"))?;
        let key = attr.key.as_ref().to_string();
        if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
            return Err(format!("unexpected attribute {key}"));
        }
        attr.normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("attribute {key}: {err}"))?;
        present.push(key);
    }
    if let Some(missing) = required.iter().find(|r| !present.iter().any(|p| p == *r)) {
        return Err(format!("missing attribute {missing}"));
    }
    Ok(())
}

// ---- serde documents -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, Serialize)]
struct Empty {}

#[derive(Debug, Deserialize, Serialize)]
struct NameAttr {
    #[serde(rename = "@name")]
    name: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct ValueAttr {
    #[serde(rename = "@value")]
    value: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct PortElem {
    #[serde(rename = "@port")]
    port: String,
    #[serde(rename = "@protocol")]
    protocol: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct ForwardPortElem {
    #[serde(rename = "@port")]
    port: String,
    #[serde(rename = "@protocol")]
    protocol: String,
    #[serde(rename = "@to-port", skip_serializing_if = "Option::is_none")]
    to_port: Option<String>,
    #[serde(rename = "@to-addr", skip_serializing_if = "Option::is_none")]
    to_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct MasqueradeElem {
    /// Deprecated (firewalld ignores its value); never written.
    #[serde(rename = "@enabled", skip_serializing)]
    _enabled: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct SourceElem {
    #[serde(rename = "@address", skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(rename = "@mac", skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(rename = "@ipset", skip_serializing_if = "Option::is_none")]
    ipset: Option<String>,
    #[serde(rename = "@invert", skip_serializing_if = "Option::is_none")]
    invert: Option<String>,
    /// Deprecated (firewalld ignores it); never written.
    #[serde(rename = "@family", skip_serializing)]
    _family: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct DestinationElem {
    #[serde(rename = "@address", skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(rename = "@ipset", skip_serializing_if = "Option::is_none")]
    ipset: Option<String>,
    #[serde(rename = "@invert", skip_serializing_if = "Option::is_none")]
    invert: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct MssElem {
    #[serde(rename = "@value", skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct LimitElem {
    #[serde(rename = "@value")]
    value: String,
    #[serde(rename = "@burst", skip_serializing_if = "Option::is_none")]
    burst: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct LimitHolder {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<LimitElem>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct LogElem {
    #[serde(rename = "@prefix", skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(rename = "@level", skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<LimitElem>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct NflogElem {
    #[serde(rename = "@group", skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(rename = "@prefix", skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(rename = "@queue-size", skip_serializing_if = "Option::is_none")]
    queue_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<LimitElem>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct RejectElem {
    #[serde(rename = "@type", skip_serializing_if = "Option::is_none")]
    reject_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<LimitElem>,
}

#[derive(Debug, Deserialize, Serialize)]
struct MarkElem {
    #[serde(rename = "@set")]
    set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<LimitElem>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum RuleChild {
    Source(SourceElem),
    Destination(DestinationElem),
    Service(NameAttr),
    Port(PortElem),
    Protocol(ValueAttr),
    IcmpBlock(NameAttr),
    IcmpType(NameAttr),
    Masquerade(MasqueradeElem),
    ForwardPort(ForwardPortElem),
    SourcePort(PortElem),
    TcpMssClamp(MssElem),
    Log(LogElem),
    Nflog(NflogElem),
    Audit(LimitHolder),
    Accept(LimitHolder),
    Reject(RejectElem),
    Drop(LimitHolder),
    Mark(MarkElem),
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct RuleElem {
    #[serde(rename = "@family", skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    #[serde(rename = "@priority", skip_serializing_if = "Option::is_none")]
    priority: Option<String>,
    #[serde(rename = "$value", default)]
    children: Vec<RuleChild>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum ZoneChild {
    Short(String),
    Description(String),
    Service(NameAttr),
    Port(PortElem),
    Protocol(ValueAttr),
    IcmpBlock(NameAttr),
    Masquerade(MasqueradeElem),
    ForwardPort(ForwardPortElem),
    SourcePort(PortElem),
    Rule(RuleElem),
    Interface(NameAttr),
    Source(SourceElem),
    IcmpBlockInversion(Empty),
    Forward(Empty),
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename = "zone")]
struct ZoneDoc {
    #[serde(rename = "@version", skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(rename = "@target", skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(rename = "@ingress-priority", skip_serializing_if = "Option::is_none")]
    ingress_priority: Option<String>,
    #[serde(rename = "@egress-priority", skip_serializing_if = "Option::is_none")]
    egress_priority: Option<String>,
    /// Deprecated (firewalld ignores them); never written.
    #[serde(rename = "@name", skip_serializing)]
    _name: Option<String>,
    #[serde(rename = "@immutable", skip_serializing)]
    _immutable: Option<String>,
    #[serde(rename = "$value", default)]
    children: Vec<ZoneChild>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum PolicyChild {
    Short(String),
    Description(String),
    Service(NameAttr),
    Port(PortElem),
    Protocol(ValueAttr),
    IcmpBlock(NameAttr),
    Masquerade(Empty),
    ForwardPort(ForwardPortElem),
    SourcePort(PortElem),
    Rule(RuleElem),
    IngressZone(NameAttr),
    EgressZone(NameAttr),
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename = "policy")]
struct PolicyDoc {
    #[serde(rename = "@version", skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(rename = "@priority", skip_serializing_if = "Option::is_none")]
    priority: Option<String>,
    #[serde(rename = "@target")]
    target: String,
    #[serde(rename = "$value", default)]
    children: Vec<PolicyChild>,
}

/// The children zones and policies share (the [`Body`]), in firewalld's writing order.
enum BodyChild {
    Short(String),
    Description(String),
    Service(NameAttr),
    Port(PortElem),
    Protocol(ValueAttr),
    IcmpBlock(NameAttr),
    Masquerade,
    ForwardPort(ForwardPortElem),
    SourcePort(PortElem),
    Rule(RuleElem),
}

/// Converts between a document's children and the shared ones, so that the body is read and written
/// once for both documents.
macro_rules! body_children {
    ($child:ident, $masquerade:expr) => {
        impl $child {
            /// The shared child, or the document's own child back.
            fn split(self) -> Result<BodyChild, $child> {
                Ok(match self {
                    $child::Short(t) => BodyChild::Short(t),
                    $child::Description(t) => BodyChild::Description(t),
                    $child::Service(n) => BodyChild::Service(n),
                    $child::Port(p) => BodyChild::Port(p),
                    $child::Protocol(v) => BodyChild::Protocol(v),
                    $child::IcmpBlock(n) => BodyChild::IcmpBlock(n),
                    $child::Masquerade(_) => BodyChild::Masquerade,
                    $child::ForwardPort(f) => BodyChild::ForwardPort(f),
                    $child::SourcePort(p) => BodyChild::SourcePort(p),
                    $child::Rule(r) => BodyChild::Rule(r),
                    own => return Err(own),
                })
            }
        }

        impl From<BodyChild> for $child {
            fn from(c: BodyChild) -> Self {
                match c {
                    BodyChild::Short(t) => $child::Short(t),
                    BodyChild::Description(t) => $child::Description(t),
                    BodyChild::Service(n) => $child::Service(n),
                    BodyChild::Port(p) => $child::Port(p),
                    BodyChild::Protocol(v) => $child::Protocol(v),
                    BodyChild::IcmpBlock(n) => $child::IcmpBlock(n),
                    BodyChild::Masquerade => $child::Masquerade($masquerade),
                    BodyChild::ForwardPort(f) => $child::ForwardPort(f),
                    BodyChild::SourcePort(p) => $child::SourcePort(p),
                    BodyChild::Rule(r) => $child::Rule(r),
                }
            }
        }
    };
}

body_children!(ZoneChild, MasqueradeElem::default());
body_children!(PolicyChild, Empty {});

// ---- XML → model -----------------------------------------------------------------------------

/// Where each model entry came from, so a later check can name the line.
#[derive(Default)]
struct Lines(HashMap<(String, usize), u32>);

impl Lines {
    fn note(&mut self, element: &str, index: usize, line: Option<u32>) {
        if let Some(l) = line {
            self.0.insert((element.to_string(), index), l);
        }
    }

    fn of(&self, fail: &Fail) -> Option<u32> {
        fail.index
            .and_then(|i| self.0.get(&(fail.element.clone(), i)).copied())
    }
}

impl Body {
    /// Adds one shared child read from XML, noting its line; `Err` is the element and firewalld's
    /// complaint.
    fn read_child(
        &mut self,
        child: BodyChild,
        lines: &mut Lines,
        line: Option<u32>,
    ) -> Result<(), (&'static str, (ErrorCode, String))> {
        let at = |element: &'static str| move |e| (element, e);
        match child {
            BodyChild::Short(t) => self.short = collapse_ws(&t),
            BodyChild::Description(t) => self.description = collapse_ws(&t),
            BodyChild::Service(n) => {
                lines.note("service", self.services.len(), line);
                self.services.push(n.name);
            }
            BodyChild::Port(p) => {
                lines.note("port", self.ports.len(), line);
                self.ports
                    .push(Port::parse(&p.port, &p.protocol).map_err(at("port"))?);
            }
            BodyChild::Protocol(v) => {
                lines.note("protocol", self.protocols.len(), line);
                self.protocols.push(v.value);
            }
            BodyChild::SourcePort(p) => {
                lines.note("source-port", self.source_ports.len(), line);
                self.source_ports
                    .push(Port::parse(&p.port, &p.protocol).map_err(at("source-port"))?);
            }
            BodyChild::IcmpBlock(n) => {
                lines.note("icmp-block", self.icmp_blocks.len(), line);
                self.icmp_blocks.push(n.name);
            }
            BodyChild::Masquerade => {
                lines.note("masquerade", 0, line);
                self.masquerade = true;
            }
            BodyChild::ForwardPort(f) => {
                lines.note("forward-port", self.forward_ports.len(), line);
                self.forward_ports
                    .push(forward_port(f).map_err(at("forward-port"))?);
            }
            BodyChild::Rule(r) => {
                lines.note("rule", self.rules.len(), line);
                self.rules.push(rule_from_xml(r).map_err(at("rule"))?);
            }
        }
        Ok(())
    }

    /// The shared children, in firewalld's element order.
    fn children(&self) -> Vec<BodyChild> {
        let mut c = Vec::new();
        if !self.short.is_empty() {
            c.push(BodyChild::Short(self.short.clone()));
        }
        if !self.description.is_empty() {
            c.push(BodyChild::Description(self.description.clone()));
        }
        c.extend(
            self.services
                .iter()
                .map(|s| BodyChild::Service(NameAttr { name: s.clone() })),
        );
        c.extend(self.ports.iter().map(|p| BodyChild::Port(port_elem(p))));
        c.extend(
            self.protocols
                .iter()
                .map(|p| BodyChild::Protocol(ValueAttr { value: p.clone() })),
        );
        c.extend(
            self.icmp_blocks
                .iter()
                .map(|b| BodyChild::IcmpBlock(NameAttr { name: b.clone() })),
        );
        if self.masquerade {
            c.push(BodyChild::Masquerade);
        }
        c.extend(
            self.forward_ports
                .iter()
                .map(|f| BodyChild::ForwardPort(forward_port_elem(f))),
        );
        c.extend(
            self.source_ports
                .iter()
                .map(|p| BodyChild::SourcePort(port_elem(p))),
        );
        c.extend(self.rules.iter().map(|r| BodyChild::Rule(rule_to_xml(r))));
        c
    }
}

fn limit(l: Option<LimitElem>) -> Check<Option<Limit>> {
    l.map(|l| Limit::parse(&l.value, l.burst.as_deref()))
        .transpose()
}

fn attr_int(attr: &str, value: &str) -> Check<i32> {
    let n = python_int(value).ok_or_else(|| {
        (
            ErrorCode::InvalidPriority,
            format!("{attr} '{value}' is not an integer"),
        )
    })?;
    // Out-of-range values must still be reported as such by the range check.
    Ok(i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX }))
}

fn rule_from_xml(r: RuleElem) -> Check<RichRule> {
    use ErrorCode::InvalidRule;
    let mut rule = RichRule {
        family: r.family.as_deref().map(Family::parse).transpose()?,
        priority: match &r.priority {
            Some(p) => attr_int("priority", p)?,
            None => 0,
        },
        ..RichRule::default()
    };
    let more = |what: &str| Err((InvalidRule, format!("more than one {what} in the rule")));
    for child in r.children {
        let element = match child {
            RuleChild::Source(s) => {
                if rule.source.is_some() {
                    return more("<source>");
                }
                let src = RuleSource {
                    invert: s
                        .invert
                        .as_deref()
                        .map(invert_value)
                        .transpose()?
                        .unwrap_or(false),
                    address: s.address.filter(|a| !a.is_empty()),
                    mac: s
                        .mac
                        .filter(|m| !m.is_empty())
                        .map(|m| m.to_ascii_uppercase()),
                    ipset: s.ipset.filter(|i| !i.is_empty()),
                };
                rule.source = Some(src);
                None
            }
            RuleChild::Destination(d) => {
                if rule.destination.is_some() {
                    return more("<destination>");
                }
                rule.destination = Some(RuleDestination {
                    invert: d
                        .invert
                        .as_deref()
                        .map(invert_value)
                        .transpose()?
                        .unwrap_or(false),
                    address: d.address.filter(|a| !a.is_empty()),
                    ipset: d.ipset.filter(|i| !i.is_empty()),
                });
                None
            }
            RuleChild::Service(n) => Some(RuleElement::Service { name: n.name }),
            RuleChild::Port(p) => Some(RuleElement::Port {
                port: p.port,
                protocol: p.protocol,
            }),
            RuleChild::Protocol(v) => Some(RuleElement::Protocol { value: v.value }),
            RuleChild::IcmpBlock(n) => Some(RuleElement::IcmpBlock { name: n.name }),
            RuleChild::IcmpType(n) => Some(RuleElement::IcmpType { name: n.name }),
            RuleChild::Masquerade(_) => Some(RuleElement::Masquerade),
            RuleChild::ForwardPort(f) => Some(RuleElement::ForwardPort {
                port: f.port,
                protocol: f.protocol,
                to_port: f.to_port.filter(|p| !p.is_empty()),
                to_addr: f.to_addr.filter(|a| !a.is_empty()),
            }),
            RuleChild::SourcePort(p) => Some(RuleElement::SourcePort {
                port: p.port,
                protocol: p.protocol,
            }),
            RuleChild::TcpMssClamp(m) => Some(RuleElement::TcpMssClamp {
                value: mss_value(m.value.as_deref()),
            }),
            RuleChild::Log(l) => {
                if rule.log.is_some() {
                    return more("log");
                }
                if l.prefix.as_deref() == Some("") {
                    return Err((ErrorCode::InvalidLogPrefix, "log prefix is empty".into()));
                }
                rule.log = Some(RuleLog::Log {
                    prefix: l.prefix,
                    level: l.level,
                    limit: limit(l.limit)?,
                });
                None
            }
            RuleChild::Nflog(l) => {
                if rule.log.is_some() {
                    return more("log");
                }
                if l.prefix.as_deref() == Some("") {
                    return Err((ErrorCode::InvalidLogPrefix, "nflog prefix is empty".into()));
                }
                rule.log = Some(RuleLog::Nflog {
                    group: nflog_u16("group", l.group.as_deref())?,
                    prefix: l.prefix,
                    queue_size: nflog_u16("queue-size", l.queue_size.as_deref())?,
                    limit: limit(l.limit)?,
                });
                None
            }
            RuleChild::Audit(a) => {
                if rule.audit.is_some() {
                    return more("<audit>");
                }
                rule.audit = Some(RuleAudit {
                    limit: limit(a.limit)?,
                });
                None
            }
            RuleChild::Accept(_)
            | RuleChild::Drop(_)
            | RuleChild::Reject(_)
            | RuleChild::Mark(_)
                if rule.action.is_some() =>
            {
                return more("action");
            }
            RuleChild::Accept(a) => {
                rule.action = Some(RuleAction {
                    kind: ActionKind::Accept,
                    limit: limit(a.limit)?,
                });
                None
            }
            RuleChild::Drop(a) => {
                rule.action = Some(RuleAction {
                    kind: ActionKind::Drop,
                    limit: limit(a.limit)?,
                });
                None
            }
            RuleChild::Reject(a) => {
                rule.action = Some(RuleAction {
                    kind: ActionKind::Reject {
                        reject_type: a.reject_type.filter(|t| !t.is_empty()),
                    },
                    limit: limit(a.limit)?,
                });
                None
            }
            RuleChild::Mark(a) => {
                rule.action = Some(RuleAction {
                    kind: ActionKind::Mark { set: a.set },
                    limit: limit(a.limit)?,
                });
                None
            }
        };
        if let Some(e) = element {
            if let Some(old) = &rule.element {
                return Err((
                    InvalidRule,
                    format!(
                        "more than one element. There cannot be both '{}' and '{}' in one rule.",
                        old.keyword(),
                        e.keyword()
                    ),
                ));
            }
            rule.element = Some(e);
        }
    }
    Ok(rule)
}

fn forward_port(f: ForwardPortElem) -> Check<ForwardPort> {
    let p = Port::parse(&f.port, &f.protocol)?;
    let to_port = match f.to_port.as_deref() {
        None | Some("") => None,
        Some(t) => Some(PortRange::parse(t).map_err(|e| (ErrorCode::InvalidPort, e))?),
    };
    Ok(ForwardPort {
        port: p.port,
        protocol: p.protocol,
        to_port,
        to_addr: f.to_addr.filter(|a| !a.is_empty()),
    })
}

fn zone_source(s: SourceElem) -> Check<ZoneSource> {
    let bad = |r: &str| Err((ErrorCode::InvalidSource, r.to_string()));
    if s.invert.is_some() {
        return bad("invert is only allowed on the source of a <rule>");
    }
    if s.mac.is_some() {
        return bad(
            "a zone source takes a MAC address as address=, not mac= (firewalld ignores mac= here)",
        );
    }
    match (s.address, s.ipset) {
        (Some(a), None) => Ok(ZoneSource::Address(a)),
        (None, Some(i)) => Ok(ZoneSource::Ipset(i)),
        (Some(_), Some(_)) => bad("a source has an address or an ipset, not both"),
        (None, None) => bad("a source needs an address or an ipset"),
    }
}

fn deserialize<T: for<'de> Deserialize<'de>>(
    kind: ObjectKind,
    name: &str,
    xml: &str,
) -> Result<T, ZoneError> {
    quick_xml::de::from_str(xml).map_err(|e| {
        ZoneError::new(
            kind,
            name,
            ErrorCode::ParseError,
            "",
            format!("not a valid {kind} file: {e}"),
        )
    })
}

/// Parses and checks zone XML. `name` is the zone name (firewalld takes it from the file name).
pub fn parse_zone(name: &str, xml: &str) -> Result<Zone, ZoneError> {
    zone_from_xml(name, xml)
}

/// Parses and checks policy XML. `name` is the policy name (from the file name).
pub fn parse_policy(name: &str, xml: &str) -> Result<Policy, ZoneError> {
    policy_from_xml(name, xml)
}

/// Parses zone XML (see [`super::parse_zone`]).
pub(crate) fn zone_from_xml(name: &str, xml: &str) -> Result<Zone, ZoneError> {
    let kind = ObjectKind::Zone;
    let err = |f: Fail, line: Option<u32>| f.into_error(kind, name).with_line(line);
    // The name comes first, as in firewalld's zone_reader().
    let mut zone = Zone::new(name);
    super::check::check_object_name("zone", name, super::check::MAX_ZONE_NAME_LEN)
        .map_err(|e| err(on("", e), None))?;
    let (root_line, top_lines) = structure(kind, name, xml)?;
    let doc: ZoneDoc = deserialize(kind, name, xml)?;
    let root_line = Some(root_line);
    zone.version = doc.version.unwrap_or_default();
    if let Some(t) = &doc.target {
        zone.target = ZoneTarget::parse(t).map_err(|e| err(on("zone", e), root_line))?;
    }
    for (attr, value, slot) in [
        (
            "ingress-priority",
            &doc.ingress_priority,
            &mut zone.ingress_priority,
        ),
        (
            "egress-priority",
            &doc.egress_priority,
            &mut zone.egress_priority,
        ),
    ] {
        if let Some(v) = value {
            *slot = attr_int(attr, v).map_err(|e| err(on("zone", e), root_line))?;
        }
    }
    let mut lines = Lines::default();
    for (i, child) in doc.children.into_iter().enumerate() {
        let line = top_lines.get(i).copied();
        let at = |element: &str, e: (ErrorCode, String)| err(on(element, e), line);
        let own = match child.split() {
            Ok(shared) => {
                zone.body
                    .read_child(shared, &mut lines, line)
                    .map_err(|(element, e)| at(element, e))?;
                continue;
            }
            Err(own) => own,
        };
        match own {
            ZoneChild::Interface(n) => {
                lines.note("interface", zone.interfaces.len(), line);
                zone.interfaces.push(n.name);
            }
            ZoneChild::Source(s) => {
                lines.note("source", zone.sources.len(), line);
                zone.sources
                    .push(zone_source(s).map_err(|e| at("source", e))?);
            }
            ZoneChild::IcmpBlockInversion(_) => zone.icmp_block_inversion = true,
            ZoneChild::Forward(_) => zone.forward = true,
            // Shared children went to the body above.
            _ => {}
        }
    }
    zone.check().map_err(|f| {
        let line = lines
            .of(&f)
            .or(if f.element == "zone" { root_line } else { None });
        err(f, line)
    })?;
    Ok(zone)
}

/// Parses policy XML (see [`super::parse_policy`]).
pub(crate) fn policy_from_xml(name: &str, xml: &str) -> Result<Policy, ZoneError> {
    let kind = ObjectKind::Policy;
    let err = |f: Fail, line: Option<u32>| f.into_error(kind, name).with_line(line);
    let mut policy = Policy::new(name);
    super::check::check_object_name("policy", name, super::check::MAX_POLICY_NAME_LEN)
        .map_err(|e| err(on("", e), None))?;
    let (root_line, top_lines) = structure(kind, name, xml)?;
    let doc: PolicyDoc = deserialize(kind, name, xml)?;
    let root_line = Some(root_line);
    policy.version = doc.version.unwrap_or_default();
    policy.target =
        PolicyTarget::parse(&doc.target).map_err(|e| err(on("policy", e), root_line))?;
    if let Some(p) = &doc.priority {
        policy.priority = attr_int("priority", p).map_err(|e| err(on("policy", e), root_line))?;
    }
    let mut lines = Lines::default();
    for (i, child) in doc.children.into_iter().enumerate() {
        let line = top_lines.get(i).copied();
        let own = match child.split() {
            Ok(shared) => {
                policy
                    .body
                    .read_child(shared, &mut lines, line)
                    .map_err(|(element, e)| err(on(element, e), line))?;
                continue;
            }
            Err(own) => own,
        };
        match own {
            PolicyChild::IngressZone(n) => {
                lines.note("ingress-zone", policy.ingress_zones.len(), line);
                policy.ingress_zones.push(n.name);
            }
            PolicyChild::EgressZone(n) => {
                lines.note("egress-zone", policy.egress_zones.len(), line);
                policy.egress_zones.push(n.name);
            }
            // Shared children went to the body above.
            _ => {}
        }
    }
    policy.check().map_err(|mut f| {
        if f.element == "masquerade" && f.index.is_none() {
            f.index = Some(0);
        }
        let line = lines.of(&f).or(if f.element == "policy" {
            root_line
        } else {
            None
        });
        err(f, line)
    })?;
    Ok(policy)
}

// ---- model → XML -----------------------------------------------------------------------------

fn limit_elem(l: &Option<Limit>) -> Option<LimitElem> {
    l.as_ref().map(|l| LimitElem {
        value: l.value.clone(),
        burst: l.burst.map(|b| b.to_string()),
    })
}

fn rule_to_xml(r: &RichRule) -> RuleElem {
    let mut children = Vec::new();
    if let Some(s) = &r.source {
        children.push(RuleChild::Source(SourceElem {
            address: s.address.clone(),
            mac: s.mac.clone(),
            ipset: s.ipset.clone(),
            invert: s.invert.then(|| "True".to_string()),
            _family: None,
        }));
    }
    if let Some(d) = &r.destination {
        children.push(RuleChild::Destination(DestinationElem {
            address: d.address.clone(),
            ipset: d.ipset.clone(),
            invert: d.invert.then(|| "True".to_string()),
        }));
    }
    if let Some(e) = &r.element {
        let port = |port: &String, protocol: &String| PortElem {
            port: port.clone(),
            protocol: protocol.clone(),
        };
        children.push(match e {
            RuleElement::Service { name } => RuleChild::Service(NameAttr { name: name.clone() }),
            RuleElement::Port { port: p, protocol } => RuleChild::Port(port(p, protocol)),
            RuleElement::Protocol { value } => RuleChild::Protocol(ValueAttr {
                value: value.clone(),
            }),
            RuleElement::IcmpBlock { name } => {
                RuleChild::IcmpBlock(NameAttr { name: name.clone() })
            }
            RuleElement::IcmpType { name } => RuleChild::IcmpType(NameAttr { name: name.clone() }),
            RuleElement::Masquerade => RuleChild::Masquerade(MasqueradeElem::default()),
            RuleElement::ForwardPort {
                port,
                protocol,
                to_port,
                to_addr,
            } => RuleChild::ForwardPort(ForwardPortElem {
                port: port.clone(),
                protocol: protocol.clone(),
                to_port: to_port.clone(),
                to_addr: to_addr.clone(),
            }),
            RuleElement::SourcePort { port: p, protocol } => {
                RuleChild::SourcePort(port(p, protocol))
            }
            RuleElement::TcpMssClamp { value } => RuleChild::TcpMssClamp(MssElem {
                value: value.clone(),
            }),
        });
    }
    match &r.log {
        Some(RuleLog::Log {
            prefix,
            level,
            limit,
        }) => children.push(RuleChild::Log(LogElem {
            prefix: prefix.clone(),
            level: level.clone(),
            limit: limit_elem(limit),
        })),
        Some(RuleLog::Nflog {
            group,
            prefix,
            queue_size,
            limit,
        }) => children.push(RuleChild::Nflog(NflogElem {
            group: group.map(|g| g.to_string()),
            prefix: prefix.clone(),
            queue_size: queue_size.map(|q| q.to_string()),
            limit: limit_elem(limit),
        })),
        None => {}
    }
    if let Some(a) = &r.audit {
        children.push(RuleChild::Audit(LimitHolder {
            limit: limit_elem(&a.limit),
        }));
    }
    if let Some(a) = &r.action {
        let limit = limit_elem(&a.limit);
        children.push(match &a.kind {
            ActionKind::Accept => RuleChild::Accept(LimitHolder { limit }),
            ActionKind::Drop => RuleChild::Drop(LimitHolder { limit }),
            ActionKind::Reject { reject_type } => RuleChild::Reject(RejectElem {
                reject_type: reject_type.clone(),
                limit,
            }),
            ActionKind::Mark { set } => RuleChild::Mark(MarkElem {
                set: set.clone(),
                limit,
            }),
        });
    }
    RuleElem {
        family: r.family.map(|f| f.as_str().to_string()),
        priority: (r.priority != 0).then(|| r.priority.to_string()),
        children,
    }
}

fn port_elem(p: &Port) -> PortElem {
    PortElem {
        port: p.port.to_string(),
        protocol: p.protocol.as_str().to_string(),
    }
}

fn forward_port_elem(f: &ForwardPort) -> ForwardPortElem {
    ForwardPortElem {
        port: f.port.to_string(),
        protocol: f.protocol.as_str().to_string(),
        to_port: f.to_port.map(|p| p.to_string()),
        to_addr: f.to_addr.clone(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn serialize<T: Serialize>(doc: &T) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    let mut ser = quick_xml::se::Serializer::new(&mut out);
    ser.indent(' ', 2);
    // Only element names and strings of our own making go in, and a String sink cannot fail.
    doc.serialize(ser)
        .expect("zone and policy documents always serialise");
    out.push('\n');
    out
}

/// Zone XML in firewalld's element order.
pub(crate) fn zone_to_xml(z: &Zone) -> String {
    let mut c: Vec<ZoneChild> = z.body.children().into_iter().map(Into::into).collect();
    c.extend(
        z.interfaces
            .iter()
            .map(|i| ZoneChild::Interface(NameAttr { name: i.clone() })),
    );
    c.extend(z.sources.iter().map(|s| {
        ZoneChild::Source(match s {
            ZoneSource::Address(a) => SourceElem {
                address: Some(a.clone()),
                ..SourceElem::default()
            },
            ZoneSource::Ipset(i) => SourceElem {
                ipset: Some(i.clone()),
                ..SourceElem::default()
            },
        })
    }));
    if z.icmp_block_inversion {
        c.push(ZoneChild::IcmpBlockInversion(Empty {}));
    }
    if z.forward {
        c.push(ZoneChild::Forward(Empty {}));
    }
    serialize(&ZoneDoc {
        version: non_empty(&z.version),
        target: (z.target != ZoneTarget::Default).then(|| z.target.as_str().to_string()),
        ingress_priority: (z.ingress_priority != 0).then(|| z.ingress_priority.to_string()),
        egress_priority: (z.egress_priority != 0).then(|| z.egress_priority.to_string()),
        _name: None,
        _immutable: None,
        children: c,
    })
}

/// Policy XML in firewalld's element order.
pub(crate) fn policy_to_xml(p: &Policy) -> String {
    let mut c: Vec<PolicyChild> = p.body.children().into_iter().map(Into::into).collect();
    c.extend(
        p.ingress_zones
            .iter()
            .map(|z| PolicyChild::IngressZone(NameAttr { name: z.clone() })),
    );
    c.extend(
        p.egress_zones
            .iter()
            .map(|z| PolicyChild::EgressZone(NameAttr { name: z.clone() })),
    );
    serialize(&PolicyDoc {
        version: non_empty(&p.version),
        priority: (p.priority != super::model::DEFAULT_POLICY_PRIORITY)
            .then(|| p.priority.to_string()),
        target: p.target.as_str().to_string(),
        children: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::xml::{parse_policy, parse_zone};

    #[test]
    fn deprecated_attributes_are_accepted_and_dropped() {
        let z = parse_zone(
            "old",
            r#"<zone name="old" immutable="yes" target="{chain}_{zone}">
                 <masquerade enabled="Yes"/>
                 <source address="192.0.2.0/24" family="ipv4"/>
               </zone>"#,
        )
        .unwrap();
        assert_eq!(z.target, ZoneTarget::Default);
        assert!(z.masquerade);
        assert_eq!(z.sources, [ZoneSource::Address("192.0.2.0/24".into())]);
        let xml = z.to_xml();
        assert!(!xml.contains("immutable") && !xml.contains("family") && !xml.contains("enabled"));
    }

    #[test]
    fn text_is_collapsed_and_escaped() {
        let z = parse_zone(
            "t",
            "<zone>\n <short> A  &amp; B </short>\n <description>\n  one\n  two\n </description>\n</zone>",
        )
        .unwrap();
        assert_eq!(
            (z.short.as_str(), z.description.as_str()),
            ("A & B", "one two")
        );
        assert!(z.to_xml().contains("<short>A &amp; B</short>"));
    }

    #[test]
    fn structure_errors_point_at_the_line() {
        let err = |xml: &str| parse_zone("t", xml).unwrap_err();
        let e = err("<?xml version=\"1.0\"?>\n<!-- c -->\n<zone>\n  <rule>\n    <limit value=\"1/m\"/>\n  </rule>\n</zone>");
        assert_eq!(e.line(), Some(5));
        assert_eq!(
            e.to_string(),
            "zone 't', line 5: <limit>: only allowed inside <log>, <nflog>, <audit> or an action"
        );
        let e = err("<zone target=\"\"/>");
        assert_eq!(e.code(), ErrorCode::InvalidTarget);
        let e = err("<zone/><zone/>");
        assert!(e.to_string().contains("a second root element"), "{e}");
        let e =
            err("<zone><service name=\"ssh\"><port port=\"1\" protocol=\"tcp\"/></service></zone>");
        assert_eq!(e.element(), "<port>");
        assert_eq!(e.reason(), "not allowed inside <service>");
        let e = err("<!DOCTYPE zone [<!ENTITY x \"y\">]><zone/>");
        assert_eq!(e.code(), ErrorCode::ParseError);
        let e = parse_policy("p", "<policy target=\"ACCEPT\"><forward/></policy>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy 'p', line 1: <forward>: unexpected element"
        );
    }

    #[test]
    fn zone_file_without_forward_has_forward_off() {
        assert!(!parse_zone("t", "<zone/>").unwrap().forward);
        assert!(parse_zone("t", "<zone><forward/></zone>").unwrap().forward);
    }

    #[test]
    fn rule_children_in_any_order_render_in_firewalld_order() {
        let z = parse_zone(
            "t",
            r#"<zone><rule family="ipv4"><accept/><service name="ssh"/><source address="192.0.2.1" invert="true"/></rule></zone>"#,
        )
        .unwrap();
        assert_eq!(
            z.rules[0].to_string(),
            r#"rule family="ipv4" source NOT address="192.0.2.1" service name="ssh" accept"#
        );
    }

    /// Found by `fuzz::zone_xml` and `fuzz::policy_xml`: element names with control characters
    /// reached the message raw.
    #[test]
    fn errors_show_control_characters_escaped() {
        let e = parse_zone("t", "<zon\u{85}e/>").unwrap_err().to_string();
        assert_eq!(e, "zone 't', line 1: <zon\\u{85}e>: unexpected element");
        let e = parse_policy(
            "p",
            "<policy target=\"ACCEPT\">\n<service\u{15}name=\"dns\"/></policy>",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "policy 'p', line 2: <service\\u{15}name=\"dns\">: unexpected element"
        );
        let e = parse_zone("a\nb", "<zone/>").unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }

    /// Found by `fuzz::policy_xml`: a rule's value with a control character parsed from XML, but
    /// its text form (how virtzone sends rules to firewalld) lost it, so the policy failed to load
    /// over D-Bus instead of being refused here.
    #[test]
    fn rule_values_with_control_characters_are_refused() {
        let e = parse_policy(
            "p",
            "<policy target=\"DROP\"><rule><service name=\"\0\"/><accept/></rule></policy>",
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRule, "{e}");
        let e = parse_zone(
            "z",
            "<zone><rule family=\"ipv4\"><log prefix=\"a&#10;b\"/><accept/></rule></zone>",
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRule, "{e}");
    }
}
