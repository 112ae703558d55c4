//! firewalld's errors, typed.
//!
//! Every firewalld error is the D-Bus error `org.fedoraproject.FirewallD1.Exception` whose message is
//! `CODE: detail`. Methods and properties an older firewalld lacks answer with the standard
//! `UnknownMethod` / `InvalidArgs` errors, which map to [`Error::NotSupported`].

use std::fmt;

use zbus::fdo;

/// The D-Bus error name of every error firewalld raises itself.
pub const EXCEPTION: &str = "org.fedoraproject.FirewallD1.Exception";

/// A firewalld error code (the text before the first `:` of its message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// The interface is already bound to that very zone.
    ZoneAlreadySet,
    /// The interface is bound to another zone.
    ZoneConflict,
    /// Removing an interface that is not bound.
    UnknownInterface,
    /// No such zone.
    InvalidZone,
    /// No such policy.
    InvalidPolicy,
    /// The interface name is not acceptable to firewalld.
    InvalidInterface,
    /// A zone or policy of that name exists already.
    NameConflict,
    /// An unknown settings key or bad value.
    InvalidOption,
    /// A configuration file or rich rule did not parse.
    ParseError,
    /// firewalld runs, but its configuration failed to load.
    RunningButFailed,
    /// The object was already added.
    AlreadyEnabled,
    /// The object is not there to remove.
    NotEnabled,
    /// Any other code, kept verbatim.
    Other(String),
}

impl ErrorCode {
    /// Maps firewalld's code text to a code.
    pub fn from_code(code: &str) -> Self {
        match code {
            "ZONE_ALREADY_SET" => Self::ZoneAlreadySet,
            "ZONE_CONFLICT" => Self::ZoneConflict,
            "UNKNOWN_INTERFACE" => Self::UnknownInterface,
            "INVALID_ZONE" => Self::InvalidZone,
            "INVALID_POLICY" => Self::InvalidPolicy,
            "INVALID_INTERFACE" => Self::InvalidInterface,
            "NAME_CONFLICT" => Self::NameConflict,
            "INVALID_OPTION" => Self::InvalidOption,
            "PARSE_ERROR" => Self::ParseError,
            "RUNNING_BUT_FAILED" => Self::RunningButFailed,
            "ALREADY_ENABLED" => Self::AlreadyEnabled,
            "NOT_ENABLED" => Self::NotEnabled,
            other => Self::Other(other.to_string()),
        }
    }

    /// firewalld's own spelling of the code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ZoneAlreadySet => "ZONE_ALREADY_SET",
            Self::ZoneConflict => "ZONE_CONFLICT",
            Self::UnknownInterface => "UNKNOWN_INTERFACE",
            Self::InvalidZone => "INVALID_ZONE",
            Self::InvalidPolicy => "INVALID_POLICY",
            Self::InvalidInterface => "INVALID_INTERFACE",
            Self::NameConflict => "NAME_CONFLICT",
            Self::InvalidOption => "INVALID_OPTION",
            Self::ParseError => "PARSE_ERROR",
            Self::RunningButFailed => "RUNNING_BUT_FAILED",
            Self::AlreadyEnabled => "ALREADY_ENABLED",
            Self::NotEnabled => "NOT_ENABLED",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a firewalld exception message into its code and detail.
///
/// A message without a well-formed code (upper-case letters, digits and `_`) keeps the whole text as
/// detail under the code `UNKNOWN`, so hostile or odd messages never lose information.
pub fn parse_exception(message: &str) -> (ErrorCode, String) {
    let (head, detail) = match message.split_once(':') {
        Some((head, rest)) => (head, rest.trim()),
        None => (message, ""),
    };
    let head = head.trim();
    let well_formed = !head.is_empty()
        && head.len() <= 64
        && head
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if well_formed {
        (ErrorCode::from_code(head), detail.to_string())
    } else {
        (
            ErrorCode::Other("UNKNOWN".into()),
            message.trim().to_string(),
        )
    }
}

/// What can go wrong talking to firewalld.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No system bus to connect to (no socket, or it refused us).
    #[error("cannot connect to the system bus: {0}")]
    NoBus(String),
    /// Nobody owns firewalld's bus name.
    #[error("firewalld is not running")]
    NotRunning,
    /// firewalld refused the call.
    #[error("firewalld said {code}: {detail}")]
    Firewalld {
        /// The error code.
        code: ErrorCode,
        /// The rest of firewalld's message.
        detail: String,
    },
    /// The method or property does not exist in this firewalld version.
    #[error("{what} is not supported by this firewalld version")]
    NotSupported {
        /// The method or property that was missing.
        what: String,
    },
    /// polkit refused the caller.
    #[error("firewalld refused the request: not authorized ({0}); run as root")]
    NotAuthorized(String),
    /// firewalld answered something virtzone cannot understand.
    #[error("firewalld sent an unexpected answer: {0}")]
    Protocol(String),
    /// firewalld owns its bus name but did not answer in time (stopped, hung, or busy for longer than
    /// the call timeout).
    #[error(
        "firewalld did not answer {what} within {} s: it owns its bus name but does not respond \
         (stopped, hung or overloaded); see `systemctl status firewalld`",
        after.as_secs()
    )]
    NoAnswer {
        /// The method or property that was asked.
        what: String,
        /// How long virtzone waited.
        after: std::time::Duration,
    },
    /// Any other D-Bus failure.
    #[error("D-Bus error: {0}")]
    Bus(zbus::Error),
    /// A change of the same plan outside firewalld failed (a kernel setting).
    #[error("{0}")]
    Local(String),
}

impl Error {
    /// The firewalld error code, when firewalld raised the error itself.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Firewalld { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Classifies a zbus error raised by a call of `what` (a method or property name).
    pub fn from_call(what: &str, err: zbus::Error) -> Self {
        match err {
            zbus::Error::MethodError(name, detail, _) => {
                Self::from_error_name(what, name.as_str(), detail.as_deref().unwrap_or(""))
            }
            zbus::Error::FDO(fdo) => Self::from_fdo(what, *fdo),
            zbus::Error::InterfaceNotFound => Self::NotSupported { what: what.into() },
            zbus::Error::InputOutput(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Self::no_answer(what)
            }
            other => Self::Bus(other),
        }
    }

    fn no_answer(what: &str) -> Self {
        Self::NoAnswer {
            what: what.into(),
            after: super::bus::call_timeout(),
        }
    }

    /// Whether firewalld did not answer (rather than refusing).
    pub fn is_no_answer(&self) -> bool {
        matches!(self, Self::NoAnswer { .. })
    }

    fn from_error_name(what: &str, name: &str, detail: &str) -> Self {
        if name == EXCEPTION {
            let (code, detail) = parse_exception(detail);
            return Self::Firewalld { code, detail };
        }
        if name.contains("NotAuthorizedException") {
            return Self::NotAuthorized(detail.to_string());
        }
        // firewalld's Python bindings report an unknown property with a Python-ish error name whose
        // message starts with the standard InvalidArgs name.
        if detail.starts_with("org.freedesktop.DBus.Error.InvalidArgs")
            || detail.starts_with("org.freedesktop.DBus.Error.UnknownMethod")
        {
            return Self::NotSupported { what: what.into() };
        }
        Self::Protocol(format!("{name}: {detail}"))
    }

    fn from_fdo(what: &str, err: fdo::Error) -> Self {
        match err {
            fdo::Error::ServiceUnknown(_) | fdo::Error::NameHasNoOwner(_) => Self::NotRunning,
            fdo::Error::UnknownMethod(_)
            | fdo::Error::UnknownInterface(_)
            | fdo::Error::UnknownProperty(_)
            | fdo::Error::UnknownObject(_) => Self::NotSupported { what: what.into() },
            fdo::Error::InvalidArgs(_) if what.starts_with("property ") => {
                Self::NotSupported { what: what.into() }
            }
            fdo::Error::AccessDenied(msg) => Self::NotAuthorized(msg),
            // The bus gave up waiting for firewalld's reply.
            fdo::Error::NoReply(_) | fdo::Error::TimedOut(_) => Self::no_answer(what),
            other => Self::Bus(zbus::Error::FDO(Box::new(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_code_and_detail() {
        let cases = [
            (
                "ZONE_CONFLICT: 'virbr0' already bound to 'public'",
                ErrorCode::ZoneConflict,
                "'virbr0' already bound to 'public'",
            ),
            ("INVALID_ZONE: nope", ErrorCode::InvalidZone, "nope"),
            ("ZONE_ALREADY_SET", ErrorCode::ZoneAlreadySet, ""),
            (
                "UNKNOWN_INTERFACE: virbr9: a: b",
                ErrorCode::UnknownInterface,
                "virbr9: a: b",
            ),
            ("NEW_CODE_9: x", ErrorCode::Other("NEW_CODE_9".into()), "x"),
        ];
        for (msg, code, detail) in cases {
            assert_eq!(parse_exception(msg), (code, detail.to_string()), "{msg:?}");
        }
    }

    #[test]
    fn hostile_messages_keep_their_text() {
        for msg in [
            "",
            ":",
            "lower: x",
            "ZONE CONFLICT: x",
            "\u{1F4A5}: boom",
            "A\nB: c",
            &"A".repeat(100),
        ] {
            let (code, detail) = parse_exception(msg);
            assert_eq!(code, ErrorCode::Other("UNKNOWN".into()), "{msg:?}");
            assert_eq!(detail, msg.trim(), "{msg:?}");
        }
    }

    #[test]
    fn codes_round_trip() {
        for code in [
            "ZONE_ALREADY_SET",
            "ZONE_CONFLICT",
            "INVALID_ZONE",
            "PARSE_ERROR",
            "WHATEVER",
        ] {
            assert_eq!(ErrorCode::from_code(code).as_str(), code);
        }
    }

    #[test]
    fn standard_errors_classify() {
        let e = Error::from_error_name("getZones", EXCEPTION, "INVALID_ZONE: x");
        assert_eq!(e.code(), Some(&ErrorCode::InvalidZone));
        let e = Error::from_error_name(
            "property FirewallBackend",
            "dbus.exceptions.DBusException",
            "org.freedesktop.DBus.Error.InvalidArgs: Property does not exist",
        );
        assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
        let e = Error::from_error_name(
            "x",
            "org.fedoraproject.FirewallD1.NotAuthorizedException",
            "no",
        );
        assert!(matches!(e, Error::NotAuthorized(_)));
        let e = Error::from_fdo("addZone2", fdo::Error::UnknownMethod("no".into()));
        assert!(matches!(e, Error::NotSupported { .. }));
        let e = Error::from_fdo("getZones", fdo::Error::ServiceUnknown("no".into()));
        assert!(matches!(e, Error::NotRunning));
        let e = Error::from_fdo("getZones", fdo::Error::NoReply("late".into()));
        assert!(e.is_no_answer(), "{e:?}");
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let e = Error::from_call("getZones", zbus::Error::InputOutput(timed_out.into()));
        assert!(e.is_no_answer(), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("firewalld did not answer getZones within"));
    }
}
