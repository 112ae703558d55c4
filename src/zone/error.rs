//! The one error type of the zone model.

use std::fmt;

/// firewalld's error code for a failed check (the names of `firewall/errors.py`), so callers can
/// match on the kind of problem and the text can be compared with what firewalld itself reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed XML, an unknown element or attribute, a missing attribute.
    ParseError,
    /// A settings dict key firewalld does not know.
    InvalidOption,
    /// A settings dict value of the wrong D-Bus type.
    InvalidType,
    /// A bad zone or policy name.
    InvalidName,
    /// A target not allowed for a zone or a policy.
    InvalidTarget,
    /// A rule, policy or zone priority out of range (or reserved).
    InvalidPriority,
    /// A rich rule that firewalld would refuse.
    InvalidRule,
    /// A bad port or port range.
    InvalidPort,
    /// A bad protocol.
    InvalidProtocol,
    /// A bad address (or one that does not match the rule family).
    InvalidAddr,
    /// A bad MAC address.
    InvalidMac,
    /// A bad ipset name.
    InvalidIpset,
    /// A bad interface name.
    InvalidInterface,
    /// A bad ingress/egress zone list, or masquerade where it cannot work.
    InvalidZone,
    /// A forward-port firewalld would refuse.
    InvalidForward,
    /// A rule family other than ipv4/ipv6.
    InvalidFamily,
    /// A rule that needs a family and has none.
    MissingFamily,
    /// A bad `limit` value.
    InvalidLimit,
    /// A bad log level.
    InvalidLogLevel,
    /// A bad log prefix.
    InvalidLogPrefix,
    /// A bad nflog group.
    InvalidNflogGroup,
    /// A bad nflog queue size.
    InvalidNflogQueue,
    /// A bad mark.
    InvalidMark,
    /// An audit without an accept/reject/drop action.
    InvalidAuditType,
    /// An empty ICMP type name.
    InvalidIcmptype,
    /// An empty service name.
    InvalidService,
    /// A bad rule destination.
    InvalidDestination,
    /// A zone source with neither or both of address and ipset (firewalld 2.x's code).
    InvalidSource,
    /// The same entry twice (firewalld only warns and drops the copy; we refuse it).
    AlreadyEnabled,
    /// A zone and a policy with the same name.
    NameConflict,
}

impl ErrorCode {
    /// firewalld's spelling of the code, e.g. `PARSE_ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::InvalidOption => "INVALID_OPTION",
            ErrorCode::InvalidType => "INVALID_TYPE",
            ErrorCode::InvalidName => "INVALID_NAME",
            ErrorCode::InvalidTarget => "INVALID_TARGET",
            ErrorCode::InvalidPriority => "INVALID_PRIORITY",
            ErrorCode::InvalidRule => "INVALID_RULE",
            ErrorCode::InvalidPort => "INVALID_PORT",
            ErrorCode::InvalidProtocol => "INVALID_PROTOCOL",
            ErrorCode::InvalidAddr => "INVALID_ADDR",
            ErrorCode::InvalidMac => "INVALID_MAC",
            ErrorCode::InvalidIpset => "INVALID_IPSET",
            ErrorCode::InvalidInterface => "INVALID_INTERFACE",
            ErrorCode::InvalidZone => "INVALID_ZONE",
            ErrorCode::InvalidForward => "INVALID_FORWARD",
            ErrorCode::InvalidFamily => "INVALID_FAMILY",
            ErrorCode::MissingFamily => "MISSING_FAMILY",
            ErrorCode::InvalidLimit => "INVALID_LIMIT",
            ErrorCode::InvalidLogLevel => "INVALID_LOG_LEVEL",
            ErrorCode::InvalidLogPrefix => "INVALID_LOG_PREFIX",
            ErrorCode::InvalidNflogGroup => "INVALID_NFLOG_GROUP",
            ErrorCode::InvalidNflogQueue => "INVALID_NFLOG_QUEUE",
            ErrorCode::InvalidMark => "INVALID_MARK",
            ErrorCode::InvalidAuditType => "INVALID_AUDIT_TYPE",
            ErrorCode::InvalidIcmptype => "INVALID_ICMPTYPE",
            ErrorCode::InvalidService => "INVALID_SERVICE",
            ErrorCode::InvalidDestination => "INVALID_DESTINATION",
            ErrorCode::InvalidSource => "INVALID_SOURCE",
            ErrorCode::AlreadyEnabled => "ALREADY_ENABLED",
            ErrorCode::NameConflict => "NAME_CONFLICT",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind of firewalld object: a zone or a policy (in errors, plans, snapshots and the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A zone (`zones/NAME.xml`).
    Zone,
    /// A policy (`policies/NAME.xml`).
    Policy,
}

impl ObjectKind {
    /// The directory of a configuration tier its files live in.
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Zone => "zones",
            ObjectKind::Policy => "policies",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Zone => "zone",
            ObjectKind::Policy => "policy",
        })
    }
}

/// A zone or policy that firewalld would refuse (or that we refuse because firewalld would silently
/// change its meaning).
///
/// Displays as `FILE:LINE: <element>: reason` when the file is known, e.g.
/// `zones/libvirt.xml:9: <rule>: priority 40000 is outside -32768..32767`, and as
/// `zone 'libvirt': <rule>: reason` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ZoneError {
    kind: ObjectKind,
    name: String,
    file: Option<String>,
    line: Option<u32>,
    element: String,
    code: ErrorCode,
    reason: String,
}

impl ZoneError {
    pub(crate) fn new(
        kind: ObjectKind,
        name: &str,
        code: ErrorCode,
        element: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ZoneError {
            kind,
            name: name.to_string(),
            file: None,
            line: None,
            element: element.into(),
            code,
            reason: reason.into(),
        }
    }

    /// The same error, naming the file it came from.
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub(crate) fn with_line(mut self, line: Option<u32>) -> Self {
        if self.line.is_none() {
            self.line = line;
        }
        self
    }

    /// Zone or policy.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The zone or policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file, when the definition was read from one.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The 1-based line of the offending element, when parsed from XML.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The offending element (`<rule>`) or settings key (`key 'ports'`); empty for the whole object.
    pub fn element(&self) -> &str {
        &self.element
    }

    /// firewalld's code for the problem.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What is wrong, without file or element.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names, elements and reasons quote the file: its control characters are shown escaped.
        let shown = |s: &str| crate::names::visible(s).into_owned();
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", shown(file))?,
            (Some(file), None) => write!(f, "{}: ", shown(file))?,
            (None, Some(line)) => {
                write!(f, "{} '{}', line {line}: ", self.kind, shown(&self.name))?
            }
            (None, None) => write!(f, "{} '{}': ", self.kind, shown(&self.name))?,
        }
        if !self.element.is_empty() {
            write!(f, "{}: ", shown(&self.element))?;
        }
        f.write_str(&shown(&self.reason))
    }
}

/// A failed check before it is tied to a zone or policy: which element, which code, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub code: ErrorCode,
    /// Element name without brackets (`rule`), or a pre-formatted context (`key 'ports'`).
    pub element: String,
    /// Index of the entry in its model list, so the XML reader can point at its line.
    pub index: Option<usize>,
    pub reason: String,
}

impl Fail {
    pub fn new(code: ErrorCode, element: &str, reason: impl Into<String>) -> Self {
        Fail {
            code,
            element: element.to_string(),
            index: None,
            reason: reason.into(),
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }

    pub fn into_error(self, kind: ObjectKind, name: &str) -> ZoneError {
        let element = if self.element.is_empty() || self.element.contains(' ') {
            self.element
        } else {
            format!("<{}>", self.element)
        };
        ZoneError::new(kind, name, self.code, element, self.reason)
    }
}

/// A check that failed with a code and a reason, before the element is known.
pub(crate) type Check<T = ()> = Result<T, (ErrorCode, String)>;

/// Attaches the element to a bare check failure.
pub(crate) fn on(element: &str, r: (ErrorCode, String)) -> Fail {
    Fail::new(r.0, element, r.1)
}
