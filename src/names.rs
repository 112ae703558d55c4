//! Validated bridge, zone, policy and libvirt network names.
//!
//! Names arrive from command lines, libvirt's hookData and D-Bus callers. They are checked here, before
//! anything is sent to firewalld, and more strictly than firewalld checks them: firewalld accepts
//! interface names of 16 characters and wildcards, the kernel allows only 15 bytes, and a name that
//! starts with `-` would read as an option to every tool an admin pastes it into.

use std::fmt;

use serde::Serialize;

/// The longest interface name the kernel accepts (IFNAMSIZ − 1).
pub const MAX_BRIDGE_NAME: usize = 15;
/// The longest zone name firewalld up to 2.3.x accepts (its iptables chain names need the room).
pub const MAX_ZONE_NAME: usize = 17;
/// The longest policy name firewalld up to 2.3.x accepts.
pub const MAX_POLICY_NAME: usize = 18;

/// Whether `name` is a libvirt network or domain name virtzone accepts: 1–64 bytes of ASCII
/// letters, digits and `-_.+`, not starting with `-` or `.`. libvirt's own rule is looser (no `/`);
/// these are the names libvirt users write, and nothing else can end up in messages or state.
pub fn is_libvirt_name(name: &str) -> bool {
    check_libvirt("network", name).is_ok()
}

/// The one rule of [`is_libvirt_name`], saying why a name breaks it.
fn check_libvirt(kind: &'static str, name: &str) -> Result<(), NameError> {
    check(kind, name, MAX_LIBVIRT_NAME, "-_.+")?;
    if name.starts_with('.') {
        return Err(refuse(kind, name, "it starts with '.'"));
    }
    Ok(())
}

/// The longest libvirt network or domain name virtzone accepts.
pub const MAX_LIBVIRT_NAME: usize = 64;

/// A name that is not acceptable; the message says which name, why, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {shown}: {reason}")]
pub struct NameError {
    /// "bridge", "zone" or "policy".
    pub kind: &'static str,
    /// The offending name, quoted and escaped so control characters stay visible.
    pub shown: String,
    /// Why it was refused.
    pub reason: String,
}

fn refuse(kind: &'static str, name: &str, reason: impl Into<String>) -> NameError {
    NameError {
        kind,
        shown: format!("{:?}", name),
        reason: reason.into(),
    }
}

/// Checks the parts common to every kind of name: a length range and an ASCII charset.
fn check(kind: &'static str, name: &str, max: usize, allowed: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(refuse(kind, name, "it is empty"));
    }
    if name.len() > max {
        return Err(refuse(
            kind,
            name,
            format!("it is {} bytes long, at most {max} are allowed", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || allowed.contains(*c)))
    {
        return Err(refuse(
            kind,
            name,
            format!(
                "{c:?} is not allowed (use ASCII letters, digits and {})",
                allowed_list(allowed)
            ),
        ));
    }
    if name.starts_with('-') {
        return Err(refuse(kind, name, "it starts with '-'"));
    }
    Ok(())
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`), for messages that quote outside
/// input: a refusal stays one line, and a file or a guest cannot send escape sequences to the
/// admin's terminal or lines of its own to the journal.
pub(crate) fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn allowed_list(allowed: &str) -> String {
    allowed
        .chars()
        .map(|c| format!("'{c}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        /// Debug-formats as the quoted, escaped text (`"virbr0"`), as messages quote names.
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(&s)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl $ty {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: tables align names with `{:<16}`.
                f.pad(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A network interface name the kernel would accept for a bridge, without firewalld's `+` wildcard.
    BridgeName
);
name_type!(
    /// A zone name firewalld would accept, without the `/` of combined zones.
    ZoneName
);
name_type!(
    /// A policy name firewalld would accept.
    PolicyName
);
name_type!(
    /// A libvirt network name virtzone carries: the one rule for network names from command lines,
    /// libvirt's hookData, drop-in files, state files and D-Bus callers (see [`NetworkName::new`]).
    NetworkName
);

/// The longest libvirt network name virtzone carries: libvirt sets no limit, but it keeps every
/// network in a file `NAME.xml` (so 251 bytes at most), and nft limits a comment to 128 bytes.
pub const MAX_NETWORK_NAME: usize = 128;

impl NetworkName {
    /// Validates a libvirt network name. libvirt's own rule refuses only `/` (`virXMLCheckIllegalChars`
    /// on `<name>`) and, when a network is defined, a newline; virtzone accepts every such name a
    /// user may have — spaces, non-ASCII letters, `+`, `:`, `@` — and refuses only what cannot be
    /// carried safely into file names, nft comments and log lines: an empty name, more than
    /// [`MAX_NETWORK_NAME`] bytes, `.` and `..`, control characters and Unicode's invisible
    /// direction controls (they forge or disguise log lines), `"` (it ends an nft comment), a
    /// leading `-` (it reads as an option to `virsh` and every other tool) and white space at
    /// either end (invisible in messages).
    pub fn new(name: &str) -> Result<Self, NameError> {
        let refused = |reason: String| Err(refuse("network", name, reason));
        if name.is_empty() {
            return refused("it is empty".into());
        }
        if name.len() > MAX_NETWORK_NAME {
            return refused(format!(
                "it is {} bytes long, at most {MAX_NETWORK_NAME} are allowed",
                name.len()
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|&c| c == '/' || c == '"' || c.is_control() || is_direction_control(c))
        {
            return refused(format!(
                "{c:?} is not allowed (no '/', '\"', control or direction characters)"
            ));
        }
        if name == "." || name == ".." {
            return refused("it is a path component, not a network name".into());
        }
        if name.starts_with('-') {
            return refused("it starts with '-'".into());
        }
        if name.trim() != name {
            return refused("it starts or ends with white space".into());
        }
        Ok(NetworkName(name.to_string()))
    }
}

/// A network name recorded by an earlier virtzone (its hook recorded any name libvirt gave it):
/// one the rule of [`NetworkName::new`] refuses reads as no name, with a warning, rather than
/// failing the whole record. For `#[serde(deserialize_with)]` on an `Option<NetworkName>`.
pub fn recorded_network<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<NetworkName>, D::Error> {
    let name: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(name.and_then(|n| {
        NetworkName::new(&n)
            .map_err(|e| tracing::warn!("leaving out a recorded network name: {e}"))
            .ok()
    }))
}

/// Unicode's invisible bidirectional and zero-width controls (category Cf), which make a line
/// display differently from what it says.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl std::borrow::Borrow<str> for NetworkName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NetworkName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NetworkName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl BridgeName {
    /// Validates an interface name: 1–15 bytes of ASCII letters, digits, `-`, `_` and `.`, not `.`
    /// or `..`, not starting with `-`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check("bridge", name, MAX_BRIDGE_NAME, "-_.")?;
        if name == "." || name == ".." {
            return Err(refuse(
                "bridge",
                name,
                "it is a path component, not an interface name",
            ));
        }
        Ok(BridgeName(name.to_string()))
    }
}

impl ZoneName {
    /// Validates a zone name: 1–17 ASCII letters, digits, `-` and `_`, not starting with `-`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check("zone", name, MAX_ZONE_NAME, "-_")?;
        Ok(ZoneName(name.to_string()))
    }

    /// The `libvirt` zone, for NAT, isolated and forwardless networks.
    pub fn libvirt() -> Self {
        ZoneName(crate::LIBVIRT_ZONE.to_string())
    }

    /// The `libvirt-routed` zone, for routed networks.
    pub fn libvirt_routed() -> Self {
        ZoneName(crate::LIBVIRT_ROUTED_ZONE.to_string())
    }
}

impl PolicyName {
    /// Validates a policy name: 1–18 ASCII letters, digits, `-` and `_`, not starting with `-`.
    pub fn new(name: &str) -> Result<Self, NameError> {
        check("policy", name, MAX_POLICY_NAME, "-_")?;
        Ok(PolicyName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one network-name rule: everything libvirt accepts that a user may have, nothing that
    /// would be unsafe in a file name, an nft comment or a log line.
    #[test]
    fn network_names() {
        let longest = "n".repeat(MAX_NETWORK_NAME);
        for name in [
            "default",
            "net-1.lab_2+x",
            "a",
            "My Network",
            "r\u{e9}seau",
            "lab:2@host",
            "..x",
            ".hidden",
            "x-",
            longest.as_str(),
        ] {
            assert_eq!(NetworkName::new(name).unwrap().as_str(), name);
        }
        let long = "n".repeat(MAX_NETWORK_NAME + 1);
        for (name, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("../x", "'/'"),
            (".", "path component"),
            ("..", "path component"),
            ("a\"b", "'\"'"),
            ("a\nb", "'\\n'"),
            ("a\u{1b}[31m", "'\\u{1b}'"),
            ("a\u{0}", "'\\0'"),
            ("a\u{85}", "'\\u{85}'"),
            ("\u{202e}lab", "'\\u{202e}'"),
            ("la\u{200b}b", "'\\u{200b}'"),
            ("-x", "starts with '-'"),
            (" x", "white space"),
            ("x ", "white space"),
            (long.as_str(), "at most 128"),
        ] {
            let err = NetworkName::new(name).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid network name") && err.contains(why),
                "{name:?}: {err} should mention {why}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    /// State files keep network names as plain JSON strings, checked when they load.
    #[test]
    fn network_names_in_json() {
        let name: NetworkName = serde_json::from_str("\"default\"").unwrap();
        assert_eq!(name, "default");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"default\"");
        assert!(serde_json::from_str::<NetworkName>("\"a/b\"").is_err());
        // Messages quote names with `{:?}`.
        assert_eq!(format!("{name:?}"), "\"default\"");
    }

    #[test]
    fn good_bridge_names() {
        for name in ["virbr0", "br-lan", "a", "vnet_12.34", "123456789012345"] {
            assert_eq!(BridgeName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn hostile_bridge_names() {
        for (name, why) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("../x", "'/'"),
            (".", "path component"),
            ("..", "path component"),
            ("1234567890123456", "16 bytes"),
            ("virbr+", "'+'"),
            ("-virbr0", "starts with '-'"),
            ("vir br0", "' '"),
            ("virbr0\n", "'\\n'"),
            ("vir\tbr", "'\\t'"),
            ("\u{e9}tape", "'é'"),
            ("br\u{0}", "'\\0'"),
            ("br:1", "':'"),
            ("br*", "'*'"),
            ("br!", "'!'"),
            ("\u{202e}br", "'\\u{202e}'"),
        ] {
            let err = BridgeName::new(name).unwrap_err().to_string();
            assert!(err.starts_with("invalid bridge name"), "{name:?}: {err}");
            assert!(err.contains(why), "{name:?}: {err} should mention {why}");
        }
    }

    #[test]
    fn zone_names() {
        for name in [
            "libvirt",
            "libvirt-routed",
            "public",
            "my_zone",
            "a2345678901234567",
        ] {
            assert!(ZoneName::new(name).is_ok(), "{name}");
        }
        for name in [
            "",
            "a23456789012345678",
            "zone/x",
            "-zone",
            "zöne",
            "zone ",
            "zone\n",
            "*",
        ] {
            assert!(ZoneName::new(name).is_err(), "{name:?}");
        }
        assert!(PolicyName::new("libvirt-routed-out").is_ok());
        assert!(PolicyName::new("libvirt-routed-outx").is_err());
    }

    #[test]
    fn visible_escapes_control_characters_only() {
        assert_eq!(visible("virbr0 é \u{202e}"), "virbr0 é \u{202e}");
        assert_eq!(visible("a\nb\u{1b}[31m\u{85}"), "a\\nb\\u{1b}[31m\\u{85}");
    }

    #[test]
    fn errors_show_control_characters() {
        let err = ZoneName::new("a\nb").unwrap_err().to_string();
        assert!(err.contains("\"a\\nb\""), "{err}");
        assert!(!err.contains('\n'));
    }
}
