//! Rich rules: the typed model, firewalld's text form (`rule family="ipv4" … accept`) in both
//! directions, and the checks of firewalld's `Rich_Rule.check()` (`firewall/core/rich.py`).
//!
//! The text form is what firewalld's D-Bus API carries (`rules_str` / `rich_rules`), so rendering
//! follows `Rich_Rule.__str__()` of firewalld 1.x exactly, and parsing accepts what firewalld's
//! lexer accepts (shell-style quoting, attributes in any order inside their element).

use std::fmt;

use super::check::{
    self, check_ipset_name, check_port, check_protocol, is_ipv4, is_ipv4_net, is_ipv6, is_ipv6_net,
    is_mac, PortProtocol, PRIORITY_MAX, PRIORITY_MIN,
};
use super::error::{Check, ErrorCode};

/// IPv4 reject types firewalld accepts (`REJECT_TYPES` in `firewall/core/base.py`).
const REJECT_TYPES_IPV4: &[&str] = &[
    "icmp-host-prohibited",
    "host-prohib",
    "icmp-net-unreachable",
    "net-unreach",
    "icmp-host-unreachable",
    "host-unreach",
    "icmp-port-unreachable",
    "port-unreach",
    "icmp-proto-unreachable",
    "proto-unreach",
    "icmp-net-prohibited",
    "net-prohib",
    "tcp-reset",
    "tcp-rst",
    "icmp-admin-prohibited",
    "admin-prohib",
];
/// IPv6 reject types firewalld accepts.
const REJECT_TYPES_IPV6: &[&str] = &[
    "icmp6-adm-prohibited",
    "adm-prohibited",
    "icmp6-no-route",
    "no-route",
    "icmp6-addr-unreachable",
    "addr-unreach",
    "icmp6-port-unreachable",
    "port-unreach",
    "tcp-reset",
];
/// Log levels firewalld accepts.
pub(crate) const LOG_LEVELS: &[&str] = &[
    "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
];

/// `rule family=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `ipv4`
    Ipv4,
    /// `ipv6`
    Ipv6,
}

impl Family {
    /// firewalld's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// `ipv4` or `ipv6`, with firewalld's error text otherwise.
    pub fn parse(text: &str) -> Check<Self> {
        match text {
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            _ => Err((
                ErrorCode::InvalidFamily,
                format!(
                    "'family' attribute cannot have '{text}' value. Use 'ipv4' or 'ipv6' instead."
                ),
            )),
        }
    }
}

/// `source [NOT] address=…|mac=…|ipset=…`. Exactly one of the three must be set (checked by
/// [`RichRule::check`], as firewalld does, so a conflicting file gets a precise message).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RuleSource {
    /// `NOT` / `invert="true"`.
    pub invert: bool,
    /// An IPv4/IPv6 address or network of the rule's family.
    pub address: Option<String>,
    /// A MAC address (kept upper-case, as firewalld stores it).
    pub mac: Option<String>,
    /// An ipset name.
    pub ipset: Option<String>,
}

/// `destination [NOT] address=…|ipset=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RuleDestination {
    /// `NOT` / `invert="true"`.
    pub invert: bool,
    /// An IPv4/IPv6 address or network of the rule's family.
    pub address: Option<String>,
    /// An ipset name.
    pub ipset: Option<String>,
}

/// The one thing a rule matches or does besides its action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleElement {
    /// `service name=…`
    Service {
        /// Service name.
        name: String,
    },
    /// `port port=… protocol=…` (the port text is kept as written, like firewalld does).
    Port {
        /// Port, range or service name.
        port: String,
        /// tcp, udp, sctp or dccp.
        protocol: String,
    },
    /// `protocol value=…`
    Protocol {
        /// Protocol name or number.
        value: String,
    },
    /// `icmp-block name=…`
    IcmpBlock {
        /// ICMP type name.
        name: String,
    },
    /// `icmp-type name=…`
    IcmpType {
        /// ICMP type name.
        name: String,
    },
    /// `masquerade`
    Masquerade,
    /// `forward-port port=… protocol=… [to-port=…] [to-addr=…]`
    ForwardPort {
        /// Port or range.
        port: String,
        /// tcp, udp, sctp or dccp.
        protocol: String,
        /// Destination port, if changed.
        to_port: Option<String>,
        /// Destination address, if changed.
        to_addr: Option<String>,
    },
    /// `source-port port=… protocol=…`
    SourcePort {
        /// Port or range.
        port: String,
        /// tcp, udp, sctp or dccp.
        protocol: String,
    },
    /// `tcp-mss-clamp [value=…]`; `None` is firewalld's default `pmtu`.
    TcpMssClamp {
        /// A size of at least 536, or `None` for `pmtu`.
        value: Option<String>,
    },
}

impl RuleElement {
    /// The element's keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            RuleElement::Service { .. } => "service",
            RuleElement::Port { .. } => "port",
            RuleElement::Protocol { .. } => "protocol",
            RuleElement::IcmpBlock { .. } => "icmp-block",
            RuleElement::IcmpType { .. } => "icmp-type",
            RuleElement::Masquerade => "masquerade",
            RuleElement::ForwardPort { .. } => "forward-port",
            RuleElement::SourcePort { .. } => "source-port",
            RuleElement::TcpMssClamp { .. } => "tcp-mss-clamp",
        }
    }
}

/// `limit value="RATE/DURATION" [burst=N]` (burst: firewalld 2.x).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Normalised to `N/s|m|h|d`, as firewalld stores it.
    pub value: String,
    /// 1..10000000; `None` when absent or 0.
    pub burst: Option<u32>,
}

impl Limit {
    /// Validates and normalises like `Rich_Limit` (`1/minute` → `1/m`).
    pub fn parse(value: &str, burst: Option<&str>) -> Check<Self> {
        let bad = |why: &str| Err((ErrorCode::InvalidLimit, format!("limit '{value}' {why}")));
        let Some((rate, duration)) = value.split_once('/') else {
            return bad("is not RATE/DURATION");
        };
        if duration.contains('/') {
            return bad("is not RATE/DURATION");
        }
        let Some(rate) = check::python_int(rate) else {
            return bad("has no integer rate");
        };
        let d = match duration.trim() {
            "s" | "second" => 's',
            "m" | "minute" => 'm',
            "h" | "hour" => 'h',
            "d" | "day" => 'd',
            _ => return bad("needs a duration of s, m, h or d"),
        };
        if rate < 1 {
            return bad("needs a rate of at least 1");
        }
        let mult: i64 = match d {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86400,
        };
        if 10000 * mult / rate == 0 {
            return bad("is too fast");
        }
        if rate == 1 && d == 'd' {
            // iptables rejects 1/d, so firewalld does too.
            return bad("is too slow");
        }
        let burst = match burst {
            None => None,
            Some(b) => match check::python_int(b) {
                Some(0) => None,
                Some(n) if (1..=10_000_000).contains(&n) => Some(n as u32),
                _ => {
                    return Err((
                        ErrorCode::InvalidLimit,
                        format!("limit burst '{b}' is not an integer in 0..10000000"),
                    ))
                }
            },
        };
        Ok(Limit {
            value: format!("{rate}/{d}"),
            burst,
        })
    }
}

/// `log …` or `nflog …`: a rule has at most one of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleLog {
    /// `log [prefix=…] [level=…] [limit …]`
    Log {
        /// 1..127 characters.
        prefix: Option<String>,
        /// One of emerg, alert, crit, error, warning, notice, info, debug.
        level: Option<String>,
        /// Rate limit.
        limit: Option<Limit>,
    },
    /// `nflog [group=…] [prefix=…] [queue-size=…] [limit …]`
    Nflog {
        /// Netlink group, `None` for 0.
        group: Option<u16>,
        /// 1..127 characters.
        prefix: Option<String>,
        /// Queue threshold, `None` for 0.
        queue_size: Option<u16>,
        /// Rate limit.
        limit: Option<Limit>,
    },
}

/// `audit [limit …]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RuleAudit {
    /// Rate limit.
    pub limit: Option<Limit>,
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// `accept`
    Accept,
    /// `reject [type=…]` (a type needs a rule family).
    Reject {
        /// ICMP reject type.
        reject_type: Option<String>,
    },
    /// `drop`
    Drop,
    /// `mark set=VALUE[/MASK]`
    Mark {
        /// uint32 or uint32/uint32.
        set: String,
    },
}

/// The action with its optional rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleAction {
    /// The verdict.
    pub kind: ActionKind,
    /// Rate limit.
    pub limit: Option<Limit>,
}

impl RuleAction {
    /// An action without limit.
    pub fn new(kind: ActionKind) -> Self {
        RuleAction { kind, limit: None }
    }

    fn keyword(&self) -> &'static str {
        match self.kind {
            ActionKind::Accept => "accept",
            ActionKind::Reject { .. } => "reject",
            ActionKind::Drop => "drop",
            ActionKind::Mark { .. } => "mark",
        }
    }
}

/// A firewalld rich rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RichRule {
    /// `family=` (required for addresses and forward-port).
    pub family: Option<Family>,
    /// −32768..32767; 0 = firewalld's classic log/deny/allow placement.
    pub priority: i32,
    /// Source match.
    pub source: Option<RuleSource>,
    /// Destination match.
    pub destination: Option<RuleDestination>,
    /// What the rule matches or does besides its action.
    pub element: Option<RuleElement>,
    /// Logging.
    pub log: Option<RuleLog>,
    /// Auditing.
    pub audit: Option<RuleAudit>,
    /// Verdict.
    pub action: Option<RuleAction>,
}

fn rule_err<T>(code: ErrorCode, reason: impl Into<String>) -> Check<T> {
    Err((code, reason.into()))
}

impl RichRule {
    /// Parses firewalld's text form, then [`check`](Self::check)s it.
    pub fn parse(text: &str) -> Check<Self> {
        let rule = parse_rule(text)?;
        rule.check()?;
        Ok(rule)
    }

    /// The checks firewalld makes before it accepts a rule (`Rich_Rule.check()` of 1.x, plus the
    /// value checks 2.x makes when it builds the rule).
    pub fn check(&self) -> Check {
        use ErrorCode::*;
        // firewalld reads rules over D-Bus (and from firewall-cmd) in their text form, which drops
        // control characters: a value holding one (possible in XML) would mean something else there.
        if self.to_string().chars().any(char::is_control) {
            return rule_err(
                InvalidRule,
                "a value holds a control character, which firewalld's rule syntax drops",
            );
        }
        let addr_ok = |a: &str| match self.family {
            Some(Family::Ipv4) => is_ipv4_net(a),
            Some(Family::Ipv6) => is_ipv6_net(a),
            None => false,
        };
        if self.family.is_none() {
            if self.source.as_ref().is_some_and(|s| s.address.is_some()) {
                return rule_err(
                    MissingFamily,
                    "a source address needs a rule family (family=\"ipv4\" or \"ipv6\")",
                );
            }
            if self.destination.is_some() {
                return rule_err(
                    MissingFamily,
                    "a destination needs a rule family (family=\"ipv4\" or \"ipv6\")",
                );
            }
            if matches!(self.element, Some(RuleElement::ForwardPort { .. })) {
                return rule_err(
                    MissingFamily,
                    "forward-port needs a rule family (family=\"ipv4\" or \"ipv6\")",
                );
            }
        }
        if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&self.priority) {
            return rule_err(
                InvalidPriority,
                format!(
                    "priority {} is outside {PRIORITY_MIN}..{PRIORITY_MAX}",
                    self.priority
                ),
            );
        }
        if self.element.is_none() && (self.log.is_none() || self.priority == 0) {
            if self.action.is_none() {
                return rule_err(InvalidRule, "no element, no action");
            }
            if self.source.is_none() && self.destination.is_none() && self.priority == 0 {
                return rule_err(
                    InvalidRule,
                    "no element, no source, no destination (a catch-all rule needs a non-zero priority)",
                );
            }
        }
        let needs_verdict = !matches!(
            self.element,
            Some(
                RuleElement::IcmpBlock { .. }
                    | RuleElement::ForwardPort { .. }
                    | RuleElement::Masquerade
                    | RuleElement::TcpMssClamp { .. }
            )
        );
        if needs_verdict && self.log.is_none() && self.audit.is_none() && self.action.is_none() {
            return rule_err(InvalidRule, "no action, no log, no audit");
        }
        if let Some(src) = &self.source {
            match (&src.address, &src.mac, &src.ipset) {
                (Some(_), Some(_), _) => return rule_err(InvalidRule, "source: address and mac"),
                (Some(_), _, Some(_)) => return rule_err(InvalidRule, "source: address and ipset"),
                (None, Some(_), Some(_)) => return rule_err(InvalidRule, "source: mac and ipset"),
                (Some(a), None, None) if !addr_ok(a) => {
                    return rule_err(
                        InvalidAddr,
                        format!(
                            "source address '{a}' is not a valid {} address",
                            family_name(self.family)
                        ),
                    )
                }
                (None, Some(m), None) if !is_mac(m) => {
                    return rule_err(InvalidMac, format!("source mac '{m}' is not a MAC address"))
                }
                (None, None, Some(s)) => check_ipset_name(s)?,
                (None, None, None) => {
                    return rule_err(InvalidRule, "source: no address, mac and ipset")
                }
                _ => {}
            }
        }
        if let Some(dst) = &self.destination {
            match (&dst.address, &dst.ipset) {
                (Some(_), Some(_)) => {
                    return rule_err(InvalidDestination, "destination: address and ipset")
                }
                (Some(a), None) if !addr_ok(a) => {
                    return rule_err(
                        InvalidAddr,
                        format!(
                            "destination address '{a}' is not a valid {} address",
                            family_name(self.family)
                        ),
                    )
                }
                (None, Some(s)) => check_ipset_name(s)?,
                (None, None) => {
                    return rule_err(InvalidDestination, "destination: no address or ipset")
                }
                _ => {}
            }
        }
        self.check_element()?;
        match &self.log {
            Some(RuleLog::Log {
                prefix,
                level,
                limit,
            }) => {
                check_log_prefix(prefix.as_deref())?;
                if let Some(l) = level {
                    if !LOG_LEVELS.contains(&l.as_str()) {
                        return rule_err(
                            InvalidLogLevel,
                            format!("log level '{l}' is not one of {}", LOG_LEVELS.join(", ")),
                        );
                    }
                }
                check_limit(limit)?;
            }
            Some(RuleLog::Nflog { prefix, limit, .. }) => {
                check_log_prefix(prefix.as_deref())?;
                check_limit(limit)?;
            }
            None => {}
        }
        if let Some(audit) = &self.audit {
            if !matches!(
                self.action.as_ref().map(|a| &a.kind),
                Some(ActionKind::Accept | ActionKind::Reject { .. } | ActionKind::Drop)
            ) {
                return rule_err(
                    InvalidAuditType,
                    "audit needs an accept, reject or drop action",
                );
            }
            check_limit(&audit.limit)?;
        }
        if let Some(action) = &self.action {
            match &action.kind {
                ActionKind::Reject {
                    reject_type: Some(t),
                } => {
                    let valid = match self.family {
                        None => {
                            return rule_err(
                                InvalidRule,
                                "When using reject type you must specify also rule family.",
                            )
                        }
                        Some(Family::Ipv4) => REJECT_TYPES_IPV4,
                        Some(Family::Ipv6) => REJECT_TYPES_IPV6,
                    };
                    if !valid.contains(&t.as_str()) {
                        return rule_err(
                            InvalidRule,
                            format!("Wrong reject type {t}. Use one of: {}.", valid.join(", ")),
                        );
                    }
                }
                ActionKind::Mark { set } => {
                    let ok = match set.split_once('/') {
                        Some((v, m)) => {
                            !m.contains('/') && check::is_uint32(v) && check::is_uint32(m)
                        }
                        None => check::is_uint32(set),
                    };
                    if !ok {
                        return rule_err(
                            InvalidMark,
                            format!("mark '{set}' is not VALUE or VALUE/MASK (uint32)"),
                        );
                    }
                }
                _ => {}
            }
            check_limit(&action.limit)?;
        }
        Ok(())
    }

    fn check_element(&self) -> Check {
        use ErrorCode::*;
        let Some(element) = &self.element else {
            return Ok(());
        };
        let port_proto = |port: &str, protocol: &str| -> Check {
            check_port(port)?;
            PortProtocol::parse(protocol).map(|_| ())
        };
        match element {
            RuleElement::Service { name } if name.is_empty() => {
                rule_err(InvalidService, "service name is empty")
            }
            RuleElement::Port { port, protocol } | RuleElement::SourcePort { port, protocol } => {
                port_proto(port, protocol)
            }
            RuleElement::Protocol { value } => check_protocol(value),
            RuleElement::Masquerade => {
                if self.action.is_some() {
                    return rule_err(InvalidRule, "masquerade and action");
                }
                if self.source.as_ref().is_some_and(|s| s.mac.is_some()) {
                    return rule_err(InvalidRule, "masquerade and mac source");
                }
                Ok(())
            }
            RuleElement::IcmpBlock { name } => {
                if name.is_empty() {
                    return rule_err(InvalidIcmptype, "icmp-block name is empty");
                }
                if self.action.is_some() {
                    return rule_err(InvalidRule, "icmp-block and action");
                }
                Ok(())
            }
            RuleElement::IcmpType { name } if name.is_empty() => {
                rule_err(InvalidIcmptype, "icmp-type name is empty")
            }
            RuleElement::ForwardPort {
                port,
                protocol,
                to_port,
                to_addr,
            } => {
                port_proto(port, protocol)?;
                if to_port.is_none() && to_addr.is_none() {
                    return rule_err(InvalidPort, "forward-port needs to-port or to-addr");
                }
                if let Some(p) = to_port {
                    check_port(p)?;
                }
                if let Some(a) = to_addr {
                    let ok = match self.family {
                        Some(Family::Ipv4) => is_ipv4(a),
                        Some(Family::Ipv6) => is_ipv6(a),
                        None => false,
                    };
                    if !ok {
                        return rule_err(
                            InvalidAddr,
                            format!(
                                "to-addr '{a}' is not a single {} address",
                                family_name(self.family)
                            ),
                        );
                    }
                }
                if self.action.is_some() {
                    return rule_err(InvalidRule, "forward-port and action");
                }
                Ok(())
            }
            RuleElement::TcpMssClamp { value } => {
                if let Some(a) = &self.action {
                    return rule_err(
                        InvalidRule,
                        format!("tcp-mss-clamp and {} are mutually exclusive", a.keyword()),
                    );
                }
                match value {
                    Some(v) if !check::is_tcp_mss_clamp(v) => rule_err(
                        InvalidRule,
                        format!(
                            "tcp-mss-clamp value '{v}' is not 'pmtu' or a size of at least 536"
                        ),
                    ),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// firewalld's text form (`Rich_Rule.__str__()`); parses back to an equal rule.
    pub fn to_rule_string(&self) -> String {
        self.to_string()
    }
}

fn family_name(f: Option<Family>) -> &'static str {
    f.map_or("(no family)", Family::as_str)
}

fn check_log_prefix(prefix: Option<&str>) -> Check {
    match prefix {
        Some(p) if p.is_empty() || p.chars().count() > 127 => rule_err(
            ErrorCode::InvalidLogPrefix,
            "log prefix must have 1 to 127 characters",
        ),
        _ => Ok(()),
    }
}

fn check_limit(limit: &Option<Limit>) -> Check {
    if let Some(l) = limit {
        let burst = l.burst.map(|b| b.to_string());
        let again = Limit::parse(&l.value, burst.as_deref())?;
        if &again != l {
            // firewalld stores the short form; a long one would not compare equal after a round trip.
            return rule_err(
                ErrorCode::InvalidLimit,
                format!("limit '{}' must be written as '{}'", l.value, again.value),
            );
        }
    }
    Ok(())
}

/// A double-quoted value; `"` and `\` are escaped so firewalld's shell-style lexer reads it back.
struct Q<'a>(&'a str);

impl fmt::Display for Q<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit value={}", Q(&self.value))?;
        if let Some(b) = self.burst {
            write!(f, " burst={b}")?;
        }
        Ok(())
    }
}

fn opt_limit(f: &mut fmt::Formatter<'_>, limit: &Option<Limit>) -> fmt::Result {
    match limit {
        Some(l) => write!(f, " {l}"),
        None => Ok(()),
    }
}

fn opt_attr(f: &mut fmt::Formatter<'_>, name: &str, value: &Option<String>) -> fmt::Result {
    match value {
        Some(v) => write!(f, " {name}={}", Q(v)),
        None => Ok(()),
    }
}

impl fmt::Display for RichRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rule")?;
        if self.priority != 0 {
            write!(f, " priority=\"{}\"", self.priority)?;
        }
        if let Some(fam) = self.family {
            write!(f, " family=\"{}\"", fam.as_str())?;
        }
        if let Some(s) = &self.source {
            f.write_str(if s.invert { " source NOT" } else { " source" })?;
            if let Some(a) = &s.address {
                write!(f, " address={}", Q(a))?;
            } else if let Some(m) = &s.mac {
                write!(f, " mac={}", Q(m))?;
            } else if let Some(i) = &s.ipset {
                write!(f, " ipset={}", Q(i))?;
            }
        }
        if let Some(d) = &self.destination {
            f.write_str(if d.invert {
                " destination NOT"
            } else {
                " destination"
            })?;
            if let Some(a) = &d.address {
                write!(f, " address={}", Q(a))?;
            } else if let Some(i) = &d.ipset {
                write!(f, " ipset={}", Q(i))?;
            }
        }
        if let Some(e) = &self.element {
            match e {
                RuleElement::Service { name } => write!(f, " service name={}", Q(name))?,
                RuleElement::Port { port, protocol } => {
                    write!(f, " port port={} protocol={}", Q(port), Q(protocol))?
                }
                RuleElement::Protocol { value } => write!(f, " protocol value={}", Q(value))?,
                RuleElement::IcmpBlock { name } => write!(f, " icmp-block name={}", Q(name))?,
                RuleElement::IcmpType { name } => write!(f, " icmp-type name={}", Q(name))?,
                RuleElement::Masquerade => f.write_str(" masquerade")?,
                RuleElement::ForwardPort {
                    port,
                    protocol,
                    to_port,
                    to_addr,
                } => {
                    write!(f, " forward-port port={} protocol={}", Q(port), Q(protocol))?;
                    opt_attr(f, "to-port", to_port)?;
                    opt_attr(f, "to-addr", to_addr)?;
                }
                RuleElement::SourcePort { port, protocol } => {
                    write!(f, " source-port port={} protocol={}", Q(port), Q(protocol))?
                }
                RuleElement::TcpMssClamp { value } => {
                    f.write_str(" tcp-mss-clamp")?;
                    opt_attr(f, "value", value)?;
                }
            }
        }
        match &self.log {
            Some(RuleLog::Log {
                prefix,
                level,
                limit,
            }) => {
                f.write_str(" log")?;
                opt_attr(f, "prefix", prefix)?;
                opt_attr(f, "level", level)?;
                opt_limit(f, limit)?;
            }
            Some(RuleLog::Nflog {
                group,
                prefix,
                queue_size,
                limit,
            }) => {
                f.write_str(" nflog")?;
                opt_attr(f, "group", &group.map(|g| g.to_string()))?;
                opt_attr(f, "prefix", prefix)?;
                opt_attr(f, "queue-size", &queue_size.map(|q| q.to_string()))?;
                opt_limit(f, limit)?;
            }
            None => {}
        }
        if let Some(a) = &self.audit {
            f.write_str(" audit")?;
            opt_limit(f, &a.limit)?;
        }
        if let Some(a) = &self.action {
            match &a.kind {
                ActionKind::Accept => f.write_str(" accept")?,
                ActionKind::Drop => f.write_str(" drop")?,
                ActionKind::Reject { reject_type } => {
                    f.write_str(" reject")?;
                    opt_attr(f, "type", reject_type)?;
                }
                // firewalld writes the mark unquoted.
                ActionKind::Mark { set } => write!(f, " mark set={set}")?,
            }
            opt_limit(f, &a.limit)?;
        }
        Ok(())
    }
}

/// Normalises a `tcp-mss-clamp` value: firewalld treats absent, `pmtu` and `None` alike.
pub(crate) fn mss_value(v: Option<&str>) -> Option<String> {
    match v {
        None | Some("pmtu") | Some("None") | Some("") => None,
        Some(v) => Some(v.to_string()),
    }
}

/// Parses an nflog group or queue size (`checkUINT16`), 0 meaning "not set".
pub(crate) fn nflog_u16(what: &str, v: Option<&str>) -> Check<Option<u16>> {
    match v {
        None => Ok(None),
        Some(t) => match check::uint16(t) {
            Some(0) => Ok(None),
            Some(n) => Ok(Some(n)),
            None => {
                let code = if what == "group" {
                    ErrorCode::InvalidNflogGroup
                } else {
                    ErrorCode::InvalidNflogQueue
                };
                Err((
                    code,
                    format!("nflog '{what}' must be an integer between 0 and 65535, not '{t}'"),
                ))
            }
        },
    }
}

/// Parses an `invert` attribute (`yes`/`true` like firewalld; anything but `no`/`false` is refused).
pub(crate) fn invert_value(v: &str) -> Check<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => rule_err(
            ErrorCode::InvalidRule,
            format!("invert '{v}' is not yes/true/no/false"),
        ),
    }
}

// ---- text form parser ------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Token {
    Elem(String),
    Attr(String, String),
}

/// `shlex.split()` in POSIX mode, as firewalld's `splitArgs()` uses it.
fn shell_split(text: &str) -> Check<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    in_word = true;
                }
                None => return rule_err(ErrorCode::InvalidRule, "no escaped character after '\\'"),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => return rule_err(ErrorCode::InvalidRule, "no closing quotation"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\')) => cur.push(n),
                            Some(n) => {
                                cur.push('\\');
                                cur.push(n);
                            }
                            None => {
                                return rule_err(ErrorCode::InvalidRule, "no closing quotation")
                            }
                        },
                        Some(n) => cur.push(n),
                        None => return rule_err(ErrorCode::InvalidRule, "no closing quotation"),
                    }
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

const RULE_ATTRS: &[&str] = &[
    "priority",
    "family",
    "address",
    "mac",
    "ipset",
    "invert",
    "value",
    "port",
    "protocol",
    "to-port",
    "to-addr",
    "name",
    "group",
    "prefix",
    "level",
    "queue-size",
    "type",
    "set",
    "burst",
];

fn lex(text: &str) -> Check<Vec<Token>> {
    // stripNonPrintableCharacters(): drop C0 and C1 control characters.
    let cleaned: String = text
        .chars()
        .filter(|c| !((*c as u32) < 32 || (127..160).contains(&(*c as u32))))
        .collect();
    let mut tokens = Vec::new();
    for word in shell_split(&cleaned)? {
        if word.contains('=') {
            let parts: Vec<&str> = word.split('=').collect();
            if parts.len() != 2 || parts[0].is_empty() || parts[1].is_empty() {
                return rule_err(
                    ErrorCode::InvalidRule,
                    format!("cannot read '{word}': an attribute is NAME=VALUE with a non-empty value without '='"),
                );
            }
            if !RULE_ATTRS.contains(&parts[0]) {
                return rule_err(
                    ErrorCode::InvalidRule,
                    format!("bad attribute '{}'", parts[0]),
                );
            }
            tokens.push(Token::Attr(parts[0].to_string(), parts[1].to_string()));
        } else {
            tokens.push(Token::Elem(word));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// What follows an element keyword: its `name=value` pairs, whether `NOT` was given, its limit.
type ElementAttrs = (Vec<(String, String)>, bool, Option<Limit>);

impl Parser {
    fn peek_attr(&self, allowed: &[&str]) -> Option<(String, String)> {
        match self.tokens.get(self.pos) {
            Some(Token::Attr(n, v)) if allowed.contains(&n.as_str()) => {
                Some((n.clone(), v.clone()))
            }
            _ => None,
        }
    }

    fn peek_elem(&self, name: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Elem(e)) if e == name)
    }

    /// Reads the attributes of `element` (and `NOT` / a `limit` where allowed), in any order.
    fn attrs(
        &mut self,
        element: &str,
        allowed: &[&str],
        allow_not: bool,
        allow_limit: bool,
    ) -> Check<ElementAttrs> {
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut not = false;
        let mut limit = None;
        loop {
            if let Some((n, v)) = self.peek_attr(allowed) {
                if attrs.iter().any(|(k, _)| *k == n) {
                    return rule_err(
                        ErrorCode::InvalidRule,
                        format!("'{element}' has '{n}' twice"),
                    );
                }
                attrs.push((n, v));
                self.pos += 1;
            } else if allow_not && (self.peek_elem("NOT") || self.peek_elem("not")) {
                not = true;
                self.pos += 1;
            } else if allow_limit && self.peek_elem("limit") {
                if limit.is_some() {
                    return rule_err(
                        ErrorCode::InvalidRule,
                        format!("'{element}' has more than one limit"),
                    );
                }
                self.pos += 1;
                let mut value = None;
                let mut burst = None;
                while let Some((n, v)) = self.peek_attr(&["value", "burst"]) {
                    let slot = if n == "value" { &mut value } else { &mut burst };
                    if slot.is_some() {
                        return rule_err(
                            ErrorCode::InvalidRule,
                            format!("'limit' has '{n}' twice"),
                        );
                    }
                    *slot = Some(v);
                    self.pos += 1;
                }
                let Some(value) = value else {
                    return rule_err(
                        ErrorCode::InvalidRule,
                        "invalid 'limit' element: it needs value=RATE/DURATION",
                    );
                };
                limit = Some(Limit::parse(&value, burst.as_deref())?);
            } else {
                return Ok((attrs, not, limit));
            }
        }
    }
}

fn get(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn need(element: &str, attrs: &[(String, String)], name: &str) -> Check<String> {
    get(attrs, name).ok_or_else(|| {
        (
            ErrorCode::InvalidRule,
            format!("invalid '{element}' element: it needs {name}=…"),
        )
    })
}

fn parse_rule(text: &str) -> Check<RichRule> {
    use ErrorCode::InvalidRule;
    let tokens = lex(text)?;
    let mut p = Parser { tokens, pos: 0 };
    match p.tokens.first() {
        None => return rule_err(InvalidRule, "empty rule"),
        Some(Token::Elem(e)) if e == "rule" => p.pos = 1,
        Some(Token::Attr(n, _)) if n == "family" || n == "priority" => {
            return rule_err(
                InvalidRule,
                format!("'{n}' outside of rule. Use 'rule {n}=...'."),
            )
        }
        Some(Token::Attr(n, _)) => {
            return rule_err(
                InvalidRule,
                format!("'{n}' outside of any element. Use 'rule <element> {n}= ...'."),
            )
        }
        Some(Token::Elem(e)) => {
            return rule_err(
                InvalidRule,
                format!("'{e}' outside of rule. Use 'rule ... {e} ...'."),
            )
        }
    }
    let mut rule = RichRule::default();
    while p.pos < p.tokens.len() {
        let tok = &p.tokens[p.pos];
        p.pos += 1;
        let name = match tok {
            Token::Attr(n, v) => {
                match n.as_str() {
                    "family" => rule.family = Some(Family::parse(v).map_err(|e| (InvalidRule, e.1))?),
                    "priority" => {
                        let prio = check::python_int(v).ok_or_else(|| {
                            (ErrorCode::InvalidPriority, format!("invalid 'priority' attribute value '{v}'."))
                        })?;
                        rule.priority = i32::try_from(prio).unwrap_or(if prio < 0 { i32::MIN } else { i32::MAX });
                    }
                    "protocol" => return rule_err(InvalidRule, "wrong 'protocol' usage. Use either 'rule protocol value=...' or 'rule [forward-]port protocol=...'."),
                    _ => return rule_err(InvalidRule, format!("attribute '{n}' outside of any element. Use 'rule <element> {n}= ...'.")),
                }
                continue;
            }
            Token::Elem(e) => e.clone(),
        };
        let element_kw = [
            "service",
            "port",
            "protocol",
            "icmp-block",
            "icmp-type",
            "masquerade",
            "forward-port",
            "source-port",
            "tcp-mss-clamp",
        ];
        if element_kw.contains(&name.as_str()) {
            if let Some(old) = &rule.element {
                return rule_err(
                    InvalidRule,
                    format!(
                    "more than one element. There cannot be both '{}' and '{name}' in one rule.",
                    old.keyword()
                ),
                );
            }
        }
        match name.as_str() {
            "source" => {
                if rule.source.is_some() {
                    return rule_err(InvalidRule, "more than one 'source' element");
                }
                let (a, not, _) = p.attrs(
                    "source",
                    &["address", "mac", "ipset", "invert"],
                    true,
                    false,
                )?;
                let invert = not
                    || get(&a, "invert")
                        .map(|v| invert_value(&v))
                        .transpose()?
                        .unwrap_or(false);
                let src = RuleSource {
                    invert,
                    address: get(&a, "address"),
                    mac: get(&a, "mac").map(|m| m.to_ascii_uppercase()),
                    ipset: get(&a, "ipset"),
                };
                if src.address.is_none() && src.mac.is_none() && src.ipset.is_none() {
                    return rule_err(InvalidRule, "source: no address, mac and ipset");
                }
                rule.source = Some(src);
            }
            "destination" => {
                if rule.destination.is_some() {
                    return rule_err(InvalidRule, "more than one 'destination' element");
                }
                let (a, not, _) =
                    p.attrs("destination", &["address", "ipset", "invert"], true, false)?;
                let invert = not
                    || get(&a, "invert")
                        .map(|v| invert_value(&v))
                        .transpose()?
                        .unwrap_or(false);
                let dst = RuleDestination {
                    invert,
                    address: get(&a, "address"),
                    ipset: get(&a, "ipset"),
                };
                if dst.address.is_none() && dst.ipset.is_none() {
                    return rule_err(
                        ErrorCode::InvalidDestination,
                        "destination: no address or ipset",
                    );
                }
                rule.destination = Some(dst);
            }
            "service" | "protocol" | "icmp-block" | "icmp-type" => {
                let attr = if name == "protocol" { "value" } else { "name" };
                let Some((_, v)) = p.peek_attr(&[attr]) else {
                    return rule_err(
                        InvalidRule,
                        format!("invalid '{name}' element: it needs {attr}=…"),
                    );
                };
                p.pos += 1;
                rule.element = Some(match name.as_str() {
                    "service" => RuleElement::Service { name: v },
                    "protocol" => RuleElement::Protocol { value: v },
                    "icmp-block" => RuleElement::IcmpBlock { name: v },
                    _ => RuleElement::IcmpType { name: v },
                });
            }
            "port" | "source-port" => {
                let (a, _, _) = p.attrs(&name, &["port", "protocol"], false, false)?;
                let port = need(&name, &a, "port")?;
                let protocol = need(&name, &a, "protocol")?;
                rule.element = Some(if name == "port" {
                    RuleElement::Port { port, protocol }
                } else {
                    RuleElement::SourcePort { port, protocol }
                });
            }
            "forward-port" => {
                let (a, _, _) = p.attrs(
                    &name,
                    &["port", "protocol", "to-port", "to-addr"],
                    false,
                    false,
                )?;
                rule.element = Some(RuleElement::ForwardPort {
                    port: need(&name, &a, "port")?,
                    protocol: need(&name, &a, "protocol")?,
                    to_port: get(&a, "to-port"),
                    to_addr: get(&a, "to-addr"),
                });
            }
            "masquerade" => rule.element = Some(RuleElement::Masquerade),
            "tcp-mss-clamp" => {
                let (a, _, _) = p.attrs(&name, &["value"], false, false)?;
                rule.element = Some(RuleElement::TcpMssClamp {
                    value: mss_value(get(&a, "value").as_deref()),
                });
            }
            "log" | "nflog" => {
                if rule.log.is_some() {
                    return rule_err(InvalidRule, "more than one logging element");
                }
                rule.log = Some(if name == "log" {
                    let (a, _, limit) = p.attrs("log", &["prefix", "level"], false, true)?;
                    RuleLog::Log {
                        prefix: get(&a, "prefix"),
                        level: get(&a, "level"),
                        limit,
                    }
                } else {
                    let (a, _, limit) =
                        p.attrs("nflog", &["group", "prefix", "queue-size"], false, true)?;
                    RuleLog::Nflog {
                        group: nflog_u16("group", get(&a, "group").as_deref())?,
                        prefix: get(&a, "prefix"),
                        queue_size: nflog_u16("queue-size", get(&a, "queue-size").as_deref())?,
                        limit,
                    }
                });
            }
            "audit" => {
                if rule.audit.is_some() {
                    return rule_err(InvalidRule, "more than one 'audit' element");
                }
                let (_, _, limit) = p.attrs("audit", &[], false, true)?;
                rule.audit = Some(RuleAudit { limit });
            }
            "accept" | "drop" | "reject" | "mark" => {
                if let Some(old) = &rule.action {
                    return rule_err(InvalidRule, format!(
                        "more than one 'action' element. There cannot be both '{}' and '{name}' in one rule.",
                        old.keyword()
                    ));
                }
                let allowed: &[&str] = match name.as_str() {
                    "reject" => &["type"],
                    "mark" => &["set"],
                    _ => &[],
                };
                let (a, _, limit) = p.attrs(&name, allowed, false, true)?;
                let kind = match name.as_str() {
                    "accept" => ActionKind::Accept,
                    "drop" => ActionKind::Drop,
                    "reject" => ActionKind::Reject {
                        reject_type: get(&a, "type"),
                    },
                    _ => ActionKind::Mark {
                        set: need("mark", &a, "set")?,
                    },
                };
                rule.action = Some(RuleAction { kind, limit });
            }
            "limit" => {
                return rule_err(
                    InvalidRule,
                    "'limit' must follow log, nflog, audit or an action",
                )
            }
            "NOT" | "not" => {
                return rule_err(InvalidRule, "'NOT' must follow source or destination")
            }
            "rule" => return rule_err(InvalidRule, "'rule' may only start the rule"),
            other => return rule_err(InvalidRule, format!("unknown element {other}")),
        }
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let r = RichRule::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let s = r.to_string();
        assert_eq!(RichRule::parse(&s).unwrap(), r, "{s}");
        s
    }

    #[test]
    fn renders_like_firewalld() {
        assert_eq!(
            roundtrip("rule priority=32767 reject"),
            "rule priority=\"32767\" reject"
        );
        assert_eq!(
            roundtrip("rule family=ipv4 source address=192.0.2.0/24 service name=ssh log prefix=x level=info limit value=1/minute accept"),
            "rule family=\"ipv4\" source address=\"192.0.2.0/24\" service name=\"ssh\" log prefix=\"x\" level=\"info\" limit value=\"1/m\" accept"
        );
        assert_eq!(
            roundtrip(r#"rule family="ipv6" icmp-type name="neighbour-advertisement" accept"#),
            r#"rule family="ipv6" icmp-type name="neighbour-advertisement" accept"#
        );
        assert_eq!(
            roundtrip("rule family=ipv4 forward-port port=80 protocol=tcp to-port=8080 to-addr=192.0.2.1"),
            "rule family=\"ipv4\" forward-port port=\"80\" protocol=\"tcp\" to-port=\"8080\" to-addr=\"192.0.2.1\""
        );
        assert_eq!(
            roundtrip("rule source NOT mac=52:54:00:aa:bb:cc drop"),
            "rule source NOT mac=\"52:54:00:AA:BB:CC\" drop"
        );
        assert_eq!(
            roundtrip("rule protocol value=gre mark set=0x1/0xff"),
            "rule protocol value=\"gre\" mark set=0x1/0xff"
        );
        assert_eq!(
            roundtrip("rule tcp-mss-clamp value=pmtu"),
            "rule tcp-mss-clamp"
        );
        assert_eq!(
            roundtrip("rule service name=ssh nflog group=0x10 queue-size=5 audit limit value=2/h reject"),
            "rule service name=\"ssh\" nflog group=\"16\" queue-size=\"5\" audit limit value=\"2/h\" reject"
        );
        assert_eq!(
            roundtrip(
                r#"rule service name=ssh log prefix="a \"b\" c" accept limit value=3/s burst=5"#
            ),
            r#"rule service name="ssh" log prefix="a \"b\" c" accept limit value="3/s" burst=5"#
        );
    }

    #[test]
    fn refuses_what_firewalld_refuses() {
        let err = |t: &str| RichRule::parse(t).unwrap_err();
        assert_eq!(
            err("rule reject").1,
            "no element, no source, no destination (a catch-all rule needs a non-zero priority)"
        );
        assert_eq!(
            err("rule priority=40000 reject").1,
            "priority 40000 is outside -32768..32767"
        );
        assert_eq!(
            err("rule source address=1.2.3.4 accept").0,
            ErrorCode::MissingFamily
        );
        assert_eq!(
            err("rule family=ipv6 source address=1.2.3.4 accept").0,
            ErrorCode::InvalidAddr
        );
        assert_eq!(
            err("rule service name=ssh").1,
            "no action, no log, no audit"
        );
        assert_eq!(
            err("rule service name=ssh port port=1 protocol=tcp accept").1,
            "more than one element. There cannot be both 'service' and 'port' in one rule."
        );
        assert_eq!(
            err("rule service name=ssh accept drop").0,
            ErrorCode::InvalidRule
        );
        assert_eq!(
            err("rule family=ipv4 masquerade accept").1,
            "masquerade and action"
        );
        assert_eq!(
            err("rule service name=ssh audit mark set=1").0,
            ErrorCode::InvalidAuditType
        );
        assert_eq!(
            err("rule service name=ssh reject type=tcp-reset").1,
            "When using reject type you must specify also rule family."
        );
        assert_eq!(err("rule foo").1, "unknown element foo");
        assert_eq!(err("rule service nam=ssh accept").1, "bad attribute 'nam'");
        assert_eq!(
            err("service name=ssh accept").1,
            "'service' outside of rule. Use 'rule ... service ...'."
        );
        assert_eq!(err("").1, "empty rule");
        assert_eq!(
            err("rule service name=ssh log level=loud accept").0,
            ErrorCode::InvalidLogLevel
        );
        assert_eq!(
            err("rule service name=ssh accept limit value=1/d").0,
            ErrorCode::InvalidLimit
        );
        assert_eq!(
            err("rule family=ipv4 forward-port port=80 protocol=tcp").0,
            ErrorCode::InvalidPort
        );
        assert_eq!(
            err("rule port port=80 protocol=icmp accept").0,
            ErrorCode::InvalidProtocol
        );
        assert_eq!(
            err("rule service name=\"ssh accept").1,
            "no closing quotation"
        );
    }

    #[test]
    fn log_with_priority_may_stand_alone() {
        assert!(RichRule::parse("rule priority=-1 log prefix=x").is_ok());
        assert!(RichRule::parse("rule log prefix=x").is_err());
    }
}
