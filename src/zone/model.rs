//! Zones and policies as typed values, and the checks firewalld makes on them
//! (`Zone._check_config()`, `Policy._check_config()`, `common_check_config()`).

use std::fmt;

use super::check::{
    check_interface, check_ipset_name, check_object_name, check_protocol, is_ipv4, is_ipv4_net,
    is_ipv6, is_ipv6_net, is_mac, PortProtocol, PortRange, MAX_POLICY_NAME_LEN, MAX_ZONE_NAME_LEN,
    PRIORITY_MAX, PRIORITY_MIN,
};
use super::error::{on, ErrorCode, Fail, ObjectKind, ZoneError};
use super::rich::{RichRule, RuleElement};

/// A zone's target: what happens to packets nothing in the zone decided about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ZoneTarget {
    /// firewalld's `default` (reject, but allow ICMP): written as no `target` attribute.
    #[default]
    Default,
    /// `ACCEPT`
    Accept,
    /// `%%REJECT%%`
    Reject,
    /// `DROP`
    Drop,
}

impl ZoneTarget {
    /// Spelling in zone XML (and in the settings dict, where `Default` is `default`).
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneTarget::Default => "default",
            ZoneTarget::Accept => "ACCEPT",
            ZoneTarget::Reject => "%%REJECT%%",
            ZoneTarget::Drop => "DROP",
        }
    }

    /// Accepts what firewalld's `ZONE_TARGETS` holds, including the internal `{chain}_{zone}`.
    pub fn parse(text: &str) -> Result<Self, (ErrorCode, String)> {
        match text {
            "default" | "{chain}_{zone}" => Ok(ZoneTarget::Default),
            "ACCEPT" => Ok(ZoneTarget::Accept),
            "%%REJECT%%" => Ok(ZoneTarget::Reject),
            "DROP" => Ok(ZoneTarget::Drop),
            "REJECT" => Err((
                ErrorCode::InvalidTarget,
                "invalid target 'REJECT' (a zone rejects with '%%REJECT%%'; 'REJECT' is for policies)".into(),
            )),
            _ => Err((
                ErrorCode::InvalidTarget,
                format!("invalid target '{text}' (one of ACCEPT, %%REJECT%%, DROP, default)"),
            )),
        }
    }
}

/// A policy's target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PolicyTarget {
    /// `CONTINUE`: fall through to the next policy or zone.
    #[default]
    Continue,
    /// `ACCEPT`
    Accept,
    /// `REJECT`
    Reject,
    /// `DROP`
    Drop,
}

impl PolicyTarget {
    /// Spelling in policy XML and the settings dict.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyTarget::Continue => "CONTINUE",
            PolicyTarget::Accept => "ACCEPT",
            PolicyTarget::Reject => "REJECT",
            PolicyTarget::Drop => "DROP",
        }
    }

    /// Accepts firewalld's `POLICY_TARGETS`.
    pub fn parse(text: &str) -> Result<Self, (ErrorCode, String)> {
        match text {
            "CONTINUE" => Ok(PolicyTarget::Continue),
            "ACCEPT" => Ok(PolicyTarget::Accept),
            "REJECT" => Ok(PolicyTarget::Reject),
            "DROP" => Ok(PolicyTarget::Drop),
            "%%REJECT%%" => Err((
                ErrorCode::InvalidTarget,
                "invalid target '%%REJECT%%' (a policy rejects with 'REJECT')".into(),
            )),
            _ => Err((
                ErrorCode::InvalidTarget,
                format!("invalid target '{text}' (one of CONTINUE, ACCEPT, REJECT, DROP)"),
            )),
        }
    }
}

/// `<port port=… protocol=…>` or `<source-port …>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// Port or range (normalised: a service name is resolved, a backwards range is turned round).
    pub port: PortRange,
    /// Transport protocol.
    pub protocol: PortProtocol,
}

impl Port {
    /// Parses the attribute pair with firewalld's checks.
    pub fn parse(port: &str, protocol: &str) -> Result<Self, (ErrorCode, String)> {
        Ok(Port {
            port: PortRange::parse(port).map_err(|e| (ErrorCode::InvalidPort, e))?,
            protocol: PortProtocol::parse(protocol)?,
        })
    }
}

impl fmt::Display for Port {
    /// `80-90/tcp`, as `firewall-cmd` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// `<forward-port port=… protocol=… to-port=… to-addr=…>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForwardPort {
    /// Matched port or range.
    pub port: PortRange,
    /// Transport protocol.
    pub protocol: PortProtocol,
    /// New destination port (at least one of `to_port` and `to_addr` is set).
    pub to_port: Option<PortRange>,
    /// New destination address (IPv4 or IPv6, no mask).
    pub to_addr: Option<String>,
}

impl fmt::Display for ForwardPort {
    /// `port=80:proto=tcp:toport=8080:toaddr=192.0.2.1`, as `firewall-cmd` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port={}:proto={}:toport={}:toaddr={}",
            self.port,
            self.protocol,
            self.to_port.map(|p| p.to_string()).unwrap_or_default(),
            self.to_addr.as_deref().unwrap_or("")
        )
    }
}

/// A zone binding by source: `<source address=…>` (IPv4/IPv6 network or MAC) or `<source ipset=…>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ZoneSource {
    /// Address, network or MAC address, as written.
    Address(String),
    /// An ipset name.
    Ipset(String),
}

impl ZoneSource {
    /// From the settings dict form (`ipset:NAME` or an address).
    pub fn from_settings_str(s: &str) -> Self {
        match s.strip_prefix("ipset:") {
            Some(name) => ZoneSource::Ipset(name.to_string()),
            None => ZoneSource::Address(s.to_string()),
        }
    }

    fn check(&self) -> Result<(), (ErrorCode, String)> {
        match self {
            ZoneSource::Address(a) => {
                if is_ipv4_net(a) || is_ipv6_net(a) || is_mac(a) {
                    Ok(())
                } else {
                    Err((
                        ErrorCode::InvalidAddr,
                        format!("invalid source '{a}' (an IPv4/IPv6 address or network, or a MAC address)"),
                    ))
                }
            }
            ZoneSource::Ipset(name) => check_ipset_name(name),
        }
    }
}

impl fmt::Display for ZoneSource {
    /// The settings dict form: the address, or `ipset:NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneSource::Address(a) => f.write_str(a),
            ZoneSource::Ipset(n) => write!(f, "ipset:{n}"),
        }
    }
}

/// What zones and policies share: the one body both embed, so that XML, settings dicts, checks and
/// comparison handle these fields once. [`Zone`] and [`Policy`] dereference to it, so
/// `zone.services` reads the body's field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// `version` attribute (free text, rarely used).
    pub version: String,
    /// `<short>`: display name (whitespace collapsed).
    pub short: String,
    /// `<description>` (whitespace collapsed).
    pub description: String,
    /// `<service name>`
    pub services: Vec<String>,
    /// `<port>`
    pub ports: Vec<Port>,
    /// `<protocol value>`
    pub protocols: Vec<String>,
    /// `<source-port>`
    pub source_ports: Vec<Port>,
    /// `<icmp-block name>`
    pub icmp_blocks: Vec<String>,
    /// `<masquerade/>`
    pub masquerade: bool,
    /// `<forward-port>`
    pub forward_ports: Vec<ForwardPort>,
    /// `<rule>`
    pub rules: Vec<RichRule>,
}

/// A firewalld zone (`<zone>`), firewalld 1.x–2.x.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// Zone name (from the file name, not the file).
    pub name: String,
    /// What zones share with policies.
    pub body: Body,
    /// `target` attribute.
    pub target: ZoneTarget,
    /// `ingress-priority` (firewalld 2.0+; 0 = unset).
    pub ingress_priority: i32,
    /// `egress-priority` (firewalld 2.0+; 0 = unset).
    pub egress_priority: i32,
    /// `<icmp-block-inversion/>`
    pub icmp_block_inversion: bool,
    /// `<forward/>` (intra-zone forwarding; a zone FILE without it has it off).
    pub forward: bool,
    /// `<interface name>` (permanent bindings)
    pub interfaces: Vec<String>,
    /// `<source address|ipset>` (permanent bindings)
    pub sources: Vec<ZoneSource>,
}

/// A firewalld policy (`<policy>`), firewalld 0.9+.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Policy name (from the file name).
    pub name: String,
    /// What policies share with zones.
    pub body: Body,
    /// `target` attribute (required in XML).
    pub target: PolicyTarget,
    /// `priority` attribute: −32768..32767 except 0; firewalld's default is −1.
    pub priority: i32,
    /// `<ingress-zone name>`: zones, or `ANY` or `HOST` alone.
    pub ingress_zones: Vec<String>,
    /// `<egress-zone name>`: zones, or `ANY` or `HOST` alone.
    pub egress_zones: Vec<String>,
}

impl std::ops::Deref for Zone {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.body
    }
}

impl std::ops::DerefMut for Zone {
    fn deref_mut(&mut self) -> &mut Body {
        &mut self.body
    }
}

impl std::ops::Deref for Policy {
    type Target = Body;
    fn deref(&self) -> &Body {
        &self.body
    }
}

impl std::ops::DerefMut for Policy {
    fn deref_mut(&mut self) -> &mut Body {
        &mut self.body
    }
}

/// firewalld's default policy priority.
pub const DEFAULT_POLICY_PRIORITY: i32 = -1;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            name: String::new(),
            body: Body::default(),
            target: PolicyTarget::Continue,
            priority: DEFAULT_POLICY_PRIORITY,
            ingress_zones: Vec::new(),
            egress_zones: Vec::new(),
        }
    }
}

/// Collapses runs of whitespace, as short names and descriptions carry no meaning in their layout
/// (firewalld turns newlines into spaces; files indent descriptions freely).
pub(crate) fn collapse_ws(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn first_dup<T: PartialEq>(items: &[T]) -> Option<usize> {
    (1..items.len()).find(|&i| items[..i].contains(&items[i]))
}

fn no_dups<T: PartialEq>(
    items: &[T],
    element: &str,
    what: impl Fn(&T) -> String,
) -> Result<(), Fail> {
    match first_dup(items) {
        Some(i) => Err(Fail::new(
            ErrorCode::AlreadyEnabled,
            element,
            format!("{} is listed twice", what(&items[i])),
        )
        .at(i)),
        None => Ok(()),
    }
}

fn each<T>(
    items: &[T],
    element: &str,
    f: impl Fn(&T) -> Result<(), (ErrorCode, String)>,
) -> Result<(), Fail> {
    for (i, item) in items.iter().enumerate() {
        f(item).map_err(|e| on(element, e).at(i))?;
    }
    Ok(())
}

impl Body {
    /// The checks shared by zones and policies (`common_check_config()` plus duplicate detection).
    fn check(&self) -> Result<(), Fail> {
        each(&self.services, "service", |s| {
            if s.is_empty() {
                Err((ErrorCode::InvalidService, "service name is empty".into()))
            } else {
                Ok(())
            }
        })?;
        no_dups(&self.services, "service", |s| format!("service '{s}'"))?;
        no_dups(&self.ports, "port", |p| format!("port {p}"))?;
        each(&self.protocols, "protocol", |p| check_protocol(p))?;
        no_dups(&self.protocols, "protocol", |p| format!("protocol '{p}'"))?;
        no_dups(&self.source_ports, "source-port", |p| {
            format!("source port {p}")
        })?;
        each(&self.icmp_blocks, "icmp-block", |b| {
            if b.is_empty() {
                Err((
                    ErrorCode::InvalidIcmptype,
                    "icmp-block name is empty".into(),
                ))
            } else {
                Ok(())
            }
        })?;
        no_dups(&self.icmp_blocks, "icmp-block", |b| {
            format!("icmp-block '{b}'")
        })?;
        each(&self.forward_ports, "forward-port", |fp| {
            if fp.to_port.is_none() && fp.to_addr.is_none() {
                return Err((
                    ErrorCode::InvalidForward,
                    format!(
                        "forward-port {}/{} is missing to-port AND to-addr",
                        fp.port, fp.protocol
                    ),
                ));
            }
            match &fp.to_addr {
                Some(a) if !is_ipv4(a) && !is_ipv6(a) => Err((
                    ErrorCode::InvalidAddr,
                    format!("to-addr '{a}' is not a valid address"),
                )),
                _ => Ok(()),
            }
        })?;
        no_dups(&self.forward_ports, "forward-port", |fp| {
            format!("forward-port {fp}")
        })?;
        each(&self.rules, "rule", |r| r.check())?;
        no_dups(&self.rules, "rule", |r| format!("rule '{r}'"))?;
        Ok(())
    }
}

impl Zone {
    /// An empty zone as a zone FILE would define it (target default, forward off).
    pub fn new(name: &str) -> Self {
        Zone {
            name: name.to_string(),
            ..Zone::default()
        }
    }

    /// Runs every check firewalld makes on a zone that does not need the rest of the configuration
    /// (which services, ICMP types and ipsets exist, and what other zones bind).
    pub fn validate(&self) -> Result<(), ZoneError> {
        self.check()
            .map_err(|f| f.into_error(ObjectKind::Zone, &self.name))
    }

    pub(crate) fn check(&self) -> Result<(), Fail> {
        check_object_name("zone", &self.name, MAX_ZONE_NAME_LEN).map_err(|e| on("", e))?;
        for (attr, prio) in [
            ("ingress-priority", self.ingress_priority),
            ("egress-priority", self.egress_priority),
        ] {
            if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&prio) {
                return Err(Fail::new(
                    ErrorCode::InvalidPriority,
                    "zone",
                    format!("{attr} {prio} is outside {PRIORITY_MIN}..{PRIORITY_MAX}"),
                ));
            }
        }
        self.body.check()?;
        each(&self.interfaces, "interface", |i| check_interface(i))?;
        no_dups(&self.interfaces, "interface", |i| {
            format!("interface '{i}'")
        })?;
        each(&self.sources, "source", ZoneSource::check)?;
        no_dups(&self.sources, "source", |s| format!("source '{s}'"))?;
        Ok(())
    }
}

/// The symbolic zones a policy may name.
pub const ANY: &str = "ANY";
/// See [`ANY`].
pub const HOST: &str = "HOST";

impl Policy {
    /// An empty policy with firewalld's defaults (target CONTINUE, priority −1).
    pub fn new(name: &str) -> Self {
        Policy {
            name: name.to_string(),
            ..Policy::default()
        }
    }

    /// Runs every check firewalld makes on a policy that does not need the rest of the
    /// configuration (see [`Policy::check_zone_references`] for the zone names).
    pub fn validate(&self) -> Result<(), ZoneError> {
        self.check()
            .map_err(|f| f.into_error(ObjectKind::Policy, &self.name))
    }

    /// Checks that every ingress/egress zone is `ANY`, `HOST` or one of `zones` (firewalld refuses
    /// a policy naming a zone it does not have).
    pub fn check_zone_references(&self, zones: &[&str]) -> Result<(), ZoneError> {
        for (element, list) in [
            ("ingress-zone", &self.ingress_zones),
            ("egress-zone", &self.egress_zones),
        ] {
            for (i, z) in list.iter().enumerate() {
                if z != ANY && z != HOST && !zones.contains(&z.as_str()) {
                    return Err(Fail::new(
                        ErrorCode::InvalidZone,
                        element,
                        format!("'{z}' not among existing zones"),
                    )
                    .at(i)
                    .into_error(ObjectKind::Policy, &self.name));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn check(&self) -> Result<(), Fail> {
        check_object_name("policy", &self.name, MAX_POLICY_NAME_LEN).map_err(|e| on("", e))?;
        if self.priority == 0 || !(PRIORITY_MIN..=PRIORITY_MAX).contains(&self.priority) {
            return Err(Fail::new(
                ErrorCode::InvalidPriority,
                "policy",
                format!(
                    "priority {} is invalid: it must be in {PRIORITY_MIN}..{PRIORITY_MAX} and 0 is reserved",
                    self.priority
                ),
            ));
        }
        self.body.check()?;
        for (element, list) in [
            ("ingress-zone", &self.ingress_zones),
            ("egress-zone", &self.egress_zones),
        ] {
            for (i, z) in list.iter().enumerate() {
                if z != ANY && z != HOST {
                    check_object_name("zone", z, MAX_ZONE_NAME_LEN)
                        .map_err(|e| on(element, (ErrorCode::InvalidZone, e.1)).at(i))?;
                }
                let symbolic = z == ANY || z == HOST;
                if list.len() > 1 && symbolic {
                    return Err(Fail::new(
                        ErrorCode::InvalidZone,
                        element,
                        format!("'{z}' must be alone: the list may only contain one of: many regular zones, ANY, or HOST"),
                    )
                    .at(i));
                }
            }
            no_dups(list, element, |z| format!("zone '{z}'"))?;
        }
        let ingress_host = self.ingress_zones.iter().any(|z| z == HOST);
        let egress_host = self.egress_zones.iter().any(|z| z == HOST);
        if ingress_host && egress_host {
            return Err(Fail::new(
                ErrorCode::InvalidZone,
                "egress-zone",
                "'HOST' can only appear in either ingress or egress zones, but not both",
            ));
        }
        let masquerade_err = |element: &str, index: Option<usize>| {
            let side = if egress_host { "egress" } else { "ingress" };
            let mut f = Fail::new(
                ErrorCode::InvalidZone,
                element,
                format!("'masquerade' is invalid for {side} zone 'HOST'"),
            );
            f.index = index;
            f
        };
        if self.masquerade && (egress_host || ingress_host) {
            return Err(masquerade_err("masquerade", None));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if matches!(rule.element, Some(RuleElement::Masquerade))
                && (egress_host || ingress_host)
            {
                return Err(masquerade_err("rule", Some(i)));
            }
        }
        let forward_err = |has_to_addr: bool| -> Option<&'static str> {
            if egress_host {
                // firewalld 2.x allows this; 1.x does not, and the model accepts what both accept.
                has_to_addr.then_some("A 'forward-port' with 'to-addr' is invalid for egress zone 'HOST' (firewalld 1.x)")
            } else if !self.egress_zones.is_empty() && !has_to_addr {
                Some("'forward-port' requires 'to-addr' if egress zone is 'ANY' or a zone")
            } else {
                None
            }
        };
        for (i, fp) in self.forward_ports.iter().enumerate() {
            if let Some(msg) = forward_err(fp.to_addr.is_some()) {
                return Err(Fail::new(ErrorCode::InvalidForward, "forward-port", msg).at(i));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(RuleElement::ForwardPort { to_addr, .. }) = &rule.element {
                if let Some(msg) = forward_err(to_addr.is_some()) {
                    return Err(Fail::new(ErrorCode::InvalidForward, "rule", msg).at(i));
                }
            }
        }
        Ok(())
    }
}
