//! Whether and how to bind or unbind a bridge, decided from facts alone.
//!
//! The admin's choice wins: a bridge that sits in a zone virtzone did not put it in is left alone
//! unless the caller forces the change.

use crate::names::{BridgeName, ZoneName};

/// What the binding of a bridge looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The zone firewalld has the bridge in (runtime), `None` when unbound.
    pub actual: Option<&'a str>,
    /// The zone virtzone recorded binding the bridge to, `None` when virtzone did not bind it.
    pub recorded: Option<&'a str>,
    /// Whether the requested zone exists in firewalld's runtime configuration.
    pub zone_exists: bool,
}

/// What an attach does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// Bind the bridge (it is unbound, or in a zone virtzone set, or the move is forced).
    Bind {
        /// The zone it leaves, if any.
        from: Option<String>,
    },
    /// It is in the requested zone already: only record it.
    AlreadyBound,
}

/// What a detach does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detach {
    /// Unbind it from `zone`.
    Unbind {
        /// The zone it is in.
        zone: String,
    },
    /// firewalld has no binding: only forget the record, if any.
    NotBound,
    /// Someone else moved it since virtzone bound it: leave firewalld alone, forget the record.
    MovedAway {
        /// Where it is now.
        zone: String,
    },
}

/// Decides an attach of `bridge` to `zone`. `Err` is the refusal, said in full.
pub fn attach(
    bridge: &BridgeName,
    zone: &ZoneName,
    facts: &Facts<'_>,
    force: bool,
) -> Result<Attach, String> {
    if !facts.zone_exists {
        let hint = if zone.as_str().starts_with(crate::LIBVIRT_ZONE) {
            "run `virtzone install` to add libvirt's zones"
        } else {
            "create it first (firewall-cmd --permanent --new-zone) or name an existing zone"
        };
        return Err(format!("zone {zone} does not exist in firewalld; {hint}"));
    }
    match facts.actual {
        Some(actual) if actual == zone.as_str() => Ok(Attach::AlreadyBound),
        None => Ok(Attach::Bind { from: None }),
        Some(actual) if force || facts.recorded == Some(actual) => Ok(Attach::Bind { from: Some(actual.to_string()) }),
        Some(actual) => Err(format!(
            "bridge {bridge} is in zone {actual}, which virtzone did not set, so the admin's choice stands; \
             pass --force to move it to zone {zone}"
        )),
    }
}

/// Decides a detach of `bridge`. `Err` is the refusal, said in full.
pub fn detach(bridge: &BridgeName, facts: &Facts<'_>, force: bool) -> Result<Detach, String> {
    match (facts.actual, facts.recorded) {
        (None, _) => Ok(Detach::NotBound),
        (Some(actual), Some(recorded)) if actual == recorded => Ok(Detach::Unbind { zone: actual.to_string() }),
        (Some(actual), _) if force => Ok(Detach::Unbind { zone: actual.to_string() }),
        (Some(actual), Some(_)) => Ok(Detach::MovedAway { zone: actual.to_string() }),
        (Some(actual), None) => Err(format!(
            "bridge {bridge} is in zone {actual}, which virtzone did not set; pass --force to unbind it anyway"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(actual: Option<&'a str>, recorded: Option<&'a str>) -> Facts<'a> {
        Facts {
            actual,
            recorded,
            zone_exists: true,
        }
    }

    /// (actual zone, recorded zone, --force) → decision, or a part of the refusal.
    type Row = (
        Option<&'static str>,
        Option<&'static str>,
        bool,
        Result<Attach, &'static str>,
    );

    #[test]
    fn attach_table() {
        let br = BridgeName::new("virbr0").unwrap();
        let z = ZoneName::libvirt();
        #[rustfmt::skip]
        let table: [Row; 8] = [
            (None, None, false, Ok(Attach::Bind { from: None })),
            (None, Some("libvirt"), false, Ok(Attach::Bind { from: None })),
            (Some("libvirt"), None, false, Ok(Attach::AlreadyBound)),
            (Some("libvirt"), Some("libvirt"), false, Ok(Attach::AlreadyBound)),
            (Some("trusted"), Some("trusted"), false, Ok(Attach::Bind { from: Some("trusted".into()) })),
            (Some("public"), None, false, Err("bridge virbr0 is in zone public, which virtzone did not set, so the admin's choice stands; pass --force to move it to zone libvirt")),
            (Some("public"), Some("trusted"), false, Err("which virtzone did not set")),
            (Some("public"), None, true, Ok(Attach::Bind { from: Some("public".into()) })),
        ];
        for (actual, recorded, force, want) in table {
            let got = attach(&br, &z, &facts(actual, recorded), force);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{actual:?} {recorded:?} {force}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{g}"),
                (g, w) => panic!("{actual:?} {recorded:?} {force}: got {g:?}, want {w:?}"),
            }
        }
        let missing = Facts {
            actual: None,
            recorded: None,
            zone_exists: false,
        };
        assert!(attach(&br, &z, &missing, true)
            .unwrap_err()
            .contains("virtzone install"));
        let other = ZoneName::new("dmz2").unwrap();
        assert!(attach(&br, &other, &missing, true)
            .unwrap_err()
            .contains("zone dmz2 does not exist"));
    }

    #[test]
    fn detach_table() {
        let br = BridgeName::new("virbr0").unwrap();
        assert_eq!(detach(&br, &facts(None, None), false), Ok(Detach::NotBound));
        assert_eq!(
            detach(&br, &facts(None, Some("libvirt")), false),
            Ok(Detach::NotBound)
        );
        assert_eq!(
            detach(&br, &facts(Some("libvirt"), Some("libvirt")), false),
            Ok(Detach::Unbind {
                zone: "libvirt".into()
            })
        );
        assert_eq!(
            detach(&br, &facts(Some("public"), Some("libvirt")), false),
            Ok(Detach::MovedAway {
                zone: "public".into()
            })
        );
        assert_eq!(
            detach(&br, &facts(Some("public"), Some("libvirt")), true),
            Ok(Detach::Unbind {
                zone: "public".into()
            })
        );
        assert!(detach(&br, &facts(Some("public"), None), false)
            .unwrap_err()
            .contains("--force"));
        assert_eq!(
            detach(&br, &facts(Some("public"), None), true),
            Ok(Detach::Unbind {
                zone: "public".into()
            })
        );
    }
}
