//! Value checks, each mirroring the firewalld 1.x/2.x function named in its comment
//! (`firewall/functions.py`, `firewall/core/io/io_object.py`), with firewalld's error texts.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::error::{Check, ErrorCode};
use super::netdb;

/// Longest zone name (`max_zone_name_len()`: 28-char iptables chain minus `POST_` and `_allow`);
/// defined once, in [`crate::names`].
pub const MAX_ZONE_NAME_LEN: usize = crate::names::MAX_ZONE_NAME;
/// Longest policy name (`max_policy_name_len()`); defined once, in [`crate::names`].
pub const MAX_POLICY_NAME_LEN: usize = crate::names::MAX_POLICY_NAME;
/// Longest ipset name (`IPSET_MAXNAMELEN`).
pub const MAX_IPSET_NAME_LEN: usize = 32;
/// Rich rule, zone and policy priorities share this range.
pub const PRIORITY_MIN: i32 = -32768;
/// See [`PRIORITY_MIN`].
pub const PRIORITY_MAX: i32 = 32767;

/// A port or an inclusive port range, as firewalld normalises it (`portStr(port, "-")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (equal to `start` for a single port).
    pub end: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Parses a port, `a-b` range or service name the way firewalld's `getPortRange()` and
    /// `check_port()` do: ranges may be given backwards, names resolve through `/etc/services`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match port_range(text) {
            PortLookup::Found(a, b) => Ok(PortRange { start: a, end: b }),
            PortLookup::TooBig => Err(format!("port number in '{text}' is too big")),
            PortLookup::Invalid => Err(format!("'{text}' is invalid port range")),
            PortLookup::Ambiguous => Err(format!("port range '{text}' is ambiguous")),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PortRange::parse(s)
    }
}

enum PortLookup {
    Found(u16, u16),
    TooBig,
    Invalid,
    Ambiguous,
}

/// `getPortID()`: a number, or a service name; `None` = unknown, `Some(Err)` = too big.
fn port_id(text: &str) -> Option<Result<u16, ()>> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Some(t.parse::<u16>().map_err(|_| ()));
    }
    netdb::service_port(t).map(Ok)
}

fn ordered(a: u16, b: u16) -> (u16, u16) {
    (a.min(b), a.max(b))
}

/// `getPortRange()`.
fn port_range(text: &str) -> PortLookup {
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if is_digits(text) {
        return match port_id(text) {
            Some(Ok(p)) => PortLookup::Found(p, p),
            _ => PortLookup::TooBig,
        };
    }
    let splits: Vec<&str> = text.split('-').collect();
    if splits.len() == 2 && is_digits(splits[0]) && is_digits(splits[1]) {
        if let (Some(Ok(a)), Some(Ok(b))) = (port_id(splits[0]), port_id(splits[1])) {
            let (a, b) = ordered(a, b);
            return PortLookup::Found(a, b);
        }
    }
    // Service names may contain '-' themselves ("http-alt"): try every split point.
    let mut matched = Vec::new();
    for i in (1..=splits.len()).rev() {
        let first = port_id(&splits[..i].join("-"));
        let second = splits[i..].join("-");
        if !second.is_empty() {
            if let (Some(Ok(a)), Some(Ok(b))) = (first, port_id(&second)) {
                matched.push(ordered(a, b));
            }
        } else if let Some(Ok(a)) = first {
            matched.push((a, a));
            if i == splits.len() {
                break;
            }
        }
    }
    match matched.len() {
        0 => PortLookup::Invalid,
        1 => PortLookup::Found(matched[0].0, matched[0].1),
        _ => PortLookup::Ambiguous,
    }
}

/// `check_port()`: the port text as firewalld keeps it inside rich rules.
pub fn check_port(text: &str) -> Check {
    PortRange::parse(text)
        .map(|_| ())
        .map_err(|e| (ErrorCode::InvalidPort, e))
}

/// The transport protocols a port, source port or forward port may name (`check_tcpudp()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortProtocol {
    /// `tcp`
    Tcp,
    /// `udp`
    Udp,
    /// `sctp`
    Sctp,
    /// `dccp`
    Dccp,
}

impl PortProtocol {
    /// firewalld's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Sctp => "sctp",
            PortProtocol::Dccp => "dccp",
        }
    }

    /// Parses with firewalld's error text.
    pub fn parse(text: &str) -> Check<Self> {
        match text {
            "tcp" => Ok(PortProtocol::Tcp),
            "udp" => Ok(PortProtocol::Udp),
            "sctp" => Ok(PortProtocol::Sctp),
            "dccp" => Ok(PortProtocol::Dccp),
            _ => Err((
                ErrorCode::InvalidProtocol,
                format!("'{text}' not from {{'tcp'|'udp'|'sctp'|'dccp'}}"),
            )),
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `checkProtocol()`: a number 0..255 or a name from `/etc/protocols`.
pub fn check_protocol(text: &str) -> Check {
    let ok = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u8>().is_ok()
    } else {
        netdb::is_protocol_name(text)
    };
    if ok {
        Ok(())
    } else {
        Err((
            ErrorCode::InvalidProtocol,
            format!("'{text}' is not a protocol number (0-255) or a name from /etc/protocols"),
        ))
    }
}

/// `checkIP()`.
pub fn is_ipv4(text: &str) -> bool {
    Ipv4Addr::from_str(text).is_ok()
}

/// `checkIP6()`: firewalld strips URL-style brackets first.
pub fn is_ipv6(text: &str) -> bool {
    Ipv6Addr::from_str(text.trim_matches(|c| c == '[' || c == ']')).is_ok()
}

fn split_mask(text: &str) -> Option<(&str, Option<&str>)> {
    match text.split_once('/') {
        Some((a, m)) if a.is_empty() || m.is_empty() => None,
        Some((a, m)) => Some((a, Some(m))),
        None => Some((text, None)),
    }
}

fn mask_in(mask: &str, max: u32) -> bool {
    !mask.is_empty()
        && mask.bytes().all(|b| b.is_ascii_digit())
        && mask.parse::<u32>().is_ok_and(|m| m <= max)
}

/// `checkIPnMask()`: IPv4 with an optional `/len` or dotted `/mask`.
pub fn is_ipv4_net(text: &str) -> bool {
    match split_mask(text) {
        Some((addr, mask)) => {
            is_ipv4(addr)
                && mask.is_none_or(|m| {
                    if m.contains('.') {
                        is_ipv4(m)
                    } else {
                        mask_in(m, 32)
                    }
                })
        }
        None => false,
    }
}

/// `checkIP6nMask()`: IPv6 with an optional `/len`.
pub fn is_ipv6_net(text: &str) -> bool {
    match split_mask(text) {
        Some((addr, mask)) => is_ipv6(addr) && mask.is_none_or(|m| mask_in(m, 128)),
        None => false,
    }
}

/// `check_mac()`: six colon-separated hex pairs.
pub fn is_mac(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 17
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `checkInterface()`: 1–16 chars without space, `/`, `!` or `*`.
pub fn check_interface(name: &str) -> Check {
    let n = name.chars().count();
    if n == 0 || n > 16 || name.contains([' ', '/', '!', '*']) {
        return Err((
            ErrorCode::InvalidInterface,
            format!("invalid interface '{name}' (1-16 characters, no space, '/', '!' or '*')"),
        ));
    }
    Ok(())
}

/// `check_ipset_name()`.
pub fn check_ipset_name(name: &str) -> Check {
    if name.is_empty() || name.chars().count() > MAX_IPSET_NAME_LEN {
        return Err((
            ErrorCode::InvalidIpset,
            format!("invalid ipset name '{name}' (1-{MAX_IPSET_NAME_LEN} characters)"),
        ));
    }
    Ok(())
}

/// Python's `int(text, 0)`: decimal without leading zeros, or 0x/0o/0b prefixed.
fn python_int_base0(text: &str) -> Option<i128> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().any(|b| b != b'0') {
        return None;
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i128::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// `checkUINT16()`, returning the value.
pub fn uint16(text: &str) -> Option<u16> {
    python_int_base0(text).and_then(|v| u16::try_from(v).ok())
}

/// `checkUINT32()`.
pub fn is_uint32(text: &str) -> bool {
    python_int_base0(text).is_some_and(|v| u32::try_from(v).is_ok())
}

/// Python's `int(text)` for priorities: optional sign, decimal digits, surrounding blanks.
pub fn python_int(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i64>().ok().or_else(|| {
        // Python ints have no overflow: report an absurd value as out of range, not as garbage.
        Some(if t.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        })
    })
}

/// `checkTcpMssClamp()`: `pmtu`, `None`, or a number of at least 536.
pub fn is_tcp_mss_clamp(text: &str) -> bool {
    if text.is_empty() || text == "pmtu" || text == "None" {
        return true;
    }
    text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u64>().map_or(true, |v| v >= 536)
}

/// `IO_Object.check_name()` plus `Zone.check_name()` / `Policy.check_name()`.
pub fn check_object_name(kind: &str, name: &str, max: usize) -> Check {
    let bad = |reason: String| Err((ErrorCode::InvalidName, reason));
    if name.is_empty() {
        return bad(format!("{kind} name can't be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_alphanumeric() && !matches!(c, '_' | '-' | '/'))
    {
        return bad(format!("'{c}' is not allowed in '{name}'"));
    }
    if name.starts_with('/') {
        return bad(format!("name '{name}' can't start with '/'"));
    }
    if name.ends_with('/') {
        return bad(format!("name '{name}' can't end with '/'"));
    }
    if name.matches('/').count() > 1 {
        return bad(format!("name '{name}' has more than one '/'"));
    }
    let checked = name.split('/').next().unwrap_or(name);
    let len = checked.chars().count();
    if len > max {
        return bad(format!(
            "{kind} name '{name}' has {len} chars, max is {max}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_like_firewalld() {
        assert_eq!(PortRange::parse("22").unwrap(), PortRange::single(22));
        assert_eq!(PortRange::parse("1-65535").unwrap().to_string(), "1-65535");
        assert_eq!(PortRange::parse("90-80").unwrap().to_string(), "80-90");
        assert_eq!(PortRange::parse("80-80").unwrap().to_string(), "80");
        assert_eq!(PortRange::parse("0").unwrap().to_string(), "0");
        assert_eq!(
            PortRange::parse("65536").unwrap_err(),
            "port number in '65536' is too big"
        );
        assert_eq!(
            PortRange::parse("70000-80").unwrap_err(),
            "'70000-80' is invalid port range"
        );
        assert_eq!(
            PortRange::parse("").unwrap_err(),
            "'' is invalid port range"
        );
        assert_eq!(
            PortRange::parse("a-b").unwrap_err(),
            "'a-b' is invalid port range"
        );
    }

    #[test]
    fn service_names_resolve_when_etc_services_has_them() {
        if netdb::service_port("ssh").is_some() {
            assert_eq!(PortRange::parse("ssh").unwrap(), PortRange::single(22));
            assert_eq!(PortRange::parse("ssh-http").unwrap().to_string(), "22-80");
        }
    }

    #[test]
    fn addresses() {
        assert!(is_ipv4_net("192.0.2.0/24"));
        assert!(is_ipv4_net("192.0.2.0/255.255.255.0"));
        assert!(!is_ipv4_net("192.0.2.0/33"));
        assert!(!is_ipv4_net("192.0.2.0/"));
        assert!(!is_ipv4_net("2001:db8::/32"));
        assert!(is_ipv6_net("2001:db8::/32"));
        assert!(is_ipv6_net("[2001:db8::1]"));
        assert!(!is_ipv6_net("2001:db8::/129"));
        assert!(is_mac("52:54:00:aa:BB:cc"));
        assert!(!is_mac("52-54-00-aa-bb-cc"));
    }

    #[test]
    fn integers_like_python() {
        assert_eq!(uint16("0x10"), Some(16));
        assert_eq!(uint16("010"), None);
        assert_eq!(uint16("00"), Some(0));
        assert_eq!(uint16("65536"), None);
        assert!(is_uint32("0xffffffff") && !is_uint32("0x100000000"));
        assert_eq!(python_int(" -5 "), Some(-5));
        assert_eq!(python_int("5x"), None);
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("zone", "libvirt-routed", MAX_ZONE_NAME_LEN).is_ok());
        assert!(check_object_name("policy", "libvirt-routed-out", MAX_POLICY_NAME_LEN).is_ok());
        let e = check_object_name("zone", "libvirt-routed-out", MAX_ZONE_NAME_LEN).unwrap_err();
        assert_eq!(
            e.1,
            "zone name 'libvirt-routed-out' has 18 chars, max is 17"
        );
        assert!(check_object_name("Zone", "a b", 17).is_err());
        assert!(check_object_name("Zone", "a/b/c", 17).is_err());
    }
}
