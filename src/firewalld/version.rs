//! firewalld version strings and the capabilities that follow from them.
//!
//! firewalld versions are not always semver (`0.4.4.6` has four parts), so parsing is lenient: the first
//! three dot-separated numbers count, missing ones are zero, anything after them is ignored.

use semver::Version;
use serde::Serialize;

/// A version string that does not start with a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("firewalld reported version {0:?}, which is not a version number")]
pub struct VersionError(pub String);

/// Parses a firewalld version leniently: `0.4.4.6` → 0.4.4, `2.0` → 2.0.0, `1.3.3-rc1` → 1.3.3.
pub fn parse_version(text: &str) -> Result<Version, VersionError> {
    let err = || VersionError(text.to_string());
    let trimmed = text.trim();
    let mut numbers = [0u64; 3];
    let mut seen = 0;
    for (i, part) in trimmed.split('.').take(3).enumerate() {
        // A part may carry a suffix ("3-rc1", "3b"): keep its leading digits, and stop after it.
        let digits: &str = &part[..part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len())];
        if digits.is_empty() || digits.len() > 9 {
            break;
        }
        numbers[i] = digits.parse().map_err(|_| err())?;
        seen += 1;
        if digits.len() != part.len() {
            break;
        }
    }
    if seen == 0 {
        return Err(err());
    }
    Ok(Version::new(numbers[0], numbers[1], numbers[2]))
}

/// What a firewalld of a given version can do, as far as virtzone cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Rich-rule `priority` (0.7.0): needed by the `libvirt` zone's catch-all reject.
    pub rule_priorities: bool,
    /// Policy objects (0.9.0): needed by `libvirt-routed` and its policies.
    pub policies: bool,
    /// The dict-based settings API (`addZone2`, `getSettings2`, `update2`; 0.9.0).
    pub dict_api: bool,
    /// Zone `ingress-priority`/`egress-priority` (2.0.0).
    pub zone_priorities: bool,
    /// `FlushAllOnReload` (0.7.0): a reload drops runtime-only interface bindings.
    pub flush_all_on_reload: bool,
    /// The nftables backend (0.6.0): from here on firewalld's nftables drop cannot be overridden from
    /// libvirt's own tables, so a bridge without a zone loses its guests' traffic.
    pub nftables_backend: bool,
    /// A policy whose ingress zone is `HOST` may hold a `forward-port` (1.1.0): it DNATs the host's
    /// own connections (`forward add --from-host`).
    pub host_forward_ports: bool,
    /// An ANY→HOST policy may hold a `forward-port` with `to-addr` (2.2.0, backported to 2.0.4 and
    /// 2.1.2; 1.3.3 refuses it with `INVALID_FORWARD`, measured): forwards live in virtzone's own
    /// policy rather than the default zone, and `--hairpin` is possible.
    pub policy_forward_to_addr: bool,
    /// 2.0.0 and 2.0.1 do not apply policies whose egress zone is `ANY` to interfaces added at
    /// runtime (fixed in 2.0.2): a routed network's bridge loses `libvirt-routed-out`. A defect, not
    /// a capability: `true` means affected.
    pub egress_any_misses_runtime_interfaces: bool,
    /// `StrictForwardPorts` in firewalld.conf (2.3.0), which can block DNAT made outside firewalld.
    pub strict_forward_ports: bool,
}

impl Capabilities {
    /// The capabilities of firewalld `version`.
    pub fn of(version: &Version) -> Self {
        let at_least = |major, minor| (version.major, version.minor) >= (major, minor);
        let v = (version.major, version.minor, version.patch);
        Capabilities {
            rule_priorities: at_least(0, 7),
            policies: at_least(0, 9),
            dict_api: at_least(0, 9),
            zone_priorities: at_least(2, 0),
            flush_all_on_reload: at_least(0, 7),
            nftables_backend: at_least(0, 6),
            host_forward_ports: at_least(1, 1),
            policy_forward_to_addr: v >= (2, 1, 2) || ((2, 0, 4)..(2, 1, 0)).contains(&v),
            egress_any_misses_runtime_interfaces: ((2, 0, 0)..(2, 0, 2)).contains(&v),
            strict_forward_ports: at_least(2, 3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_versions() {
        for (text, want) in [
            ("0.4.4.6", (0, 4, 4)),
            ("1.3.3", (1, 3, 3)),
            ("2.0.0", (2, 0, 0)),
            ("2.3.1", (2, 3, 1)),
            ("0.6.4", (0, 6, 4)),
            ("2.0", (2, 0, 0)),
            ("1", (1, 0, 0)),
            ("1.3.3-rc1", (1, 3, 3)),
            ("1.3b", (1, 3, 0)),
            (" 1.2.3 \n", (1, 2, 3)),
        ] {
            let v = parse_version(text).unwrap();
            assert_eq!((v.major, v.minor, v.patch), want, "{text:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            " ",
            "abc",
            "v1.2.3",
            ".1.2",
            "-1.0.0",
            "1234567890123.0.0",
            "\u{663}.1.1",
            "\0",
            "x".repeat(10_000).as_str(),
        ] {
            let err = parse_version(text).unwrap_err();
            assert!(err.to_string().contains("not a version number"), "{text:?}");
        }
    }

    #[test]
    fn capabilities_follow_versions() {
        let caps = |t| Capabilities::of(&parse_version(t).unwrap());
        assert!(!caps("0.6.4").rule_priorities);
        assert!(!caps("0.6.4").flush_all_on_reload);
        assert!(caps("0.7.0").rule_priorities && !caps("0.7.0").policies);
        assert!(caps("0.8.3").rule_priorities && !caps("0.8.3").dict_api);
        assert!(caps("0.9.0").policies && caps("0.9.0").dict_api);
        assert!(!caps("1.3.3").zone_priorities);
        assert!(caps("2.0.0").zone_priorities);
        assert!(caps("0.4.4.6") == caps("0.4.4"));
    }

    /// Each gate at the versions around its edges: the releases in the lab (0.9.3, 1.3.3, 2.3.1,
    /// 2.5.2) and the ones named in firewalld's changelogs.
    #[test]
    fn version_gates() {
        type Gate = fn(&Capabilities) -> bool;
        let gates: [(&str, Gate, &[&str], &[&str]); 5] = [
            (
                "nftables_backend",
                |c| c.nftables_backend,
                &["0.6.0", "0.9.3", "2.5.2"],
                &["0.4.4.6", "0.5.5"],
            ),
            (
                "host_forward_ports",
                |c| c.host_forward_ports,
                &["1.1.0", "1.3.3", "2.0.0"],
                &["0.9.3", "1.0.9"],
            ),
            (
                "policy_forward_to_addr",
                |c| c.policy_forward_to_addr,
                &[
                    "2.0.4", "2.0.9", "2.1.2", "2.2.0", "2.3.1", "2.5.2", "3.0.0",
                ],
                &["1.3.3", "2.0.0", "2.0.3", "2.1.0", "2.1.1"],
            ),
            (
                "egress_any_misses_runtime_interfaces",
                |c| c.egress_any_misses_runtime_interfaces,
                &["2.0.0", "2.0.1"],
                &["1.3.3", "2.0.2", "2.1.0", "2.5.2"],
            ),
            (
                "strict_forward_ports",
                |c| c.strict_forward_ports,
                &["2.3.0", "2.3.1", "2.5.2"],
                &["1.3.3", "2.2.9"],
            ),
        ];
        for (name, gate, yes, no) in gates {
            for v in yes {
                assert!(
                    gate(&Capabilities::of(&parse_version(v).unwrap())),
                    "{name} {v}"
                );
            }
            for v in no {
                assert!(
                    !gate(&Capabilities::of(&parse_version(v).unwrap())),
                    "{name} {v}"
                );
            }
        }
    }
}
