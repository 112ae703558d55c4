//! firewalld's D-Bus settings dicts (`a{sv}`): zones for `addZone2` / `getSettings2` / `update2`,
//! policies for `addPolicy` / `getSettings` / `update`.
//!
//! Keys and types are firewalld's `IMPORT_EXPORT_STRUCTURE` (checked against firewalld 1.3.3 over
//! D-Bus): `s` short/description/version/target, `as` lists, `a(ss)` ports, `a(ssss)` forward
//! ports, `b` flags, `i` priorities. firewalld answers `INVALID_OPTION` for a key it does not know,
//! so the 2.0-only zone keys `ingress_priority`/`egress_priority` are only sent when non-zero.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use super::check::{PortProtocol, PortRange};
use super::error::{ErrorCode, Fail, ObjectKind, ZoneError};
use super::model::{
    collapse_ws, Body, ForwardPort, Policy, PolicyTarget, Port, Zone, ZoneSource, ZoneTarget,
};
use super::rich::RichRule;

/// A settings dict, as zbus hands it over (`zbus::OwnedVariant` is zvariant's `OwnedValue`).
pub type Settings = HashMap<String, OwnedVariant>;

/// Zone keys firewalld 1.x accepts (2.0 adds `ingress_priority` and `egress_priority`).
pub const ZONE_KEYS: &[&str] = &[
    "version",
    "short",
    "description",
    "UNUSED",
    "target",
    "services",
    "ports",
    "icmp_blocks",
    "masquerade",
    "forward_ports",
    "interfaces",
    "sources",
    "rules_str",
    "protocols",
    "source_ports",
    "icmp_block_inversion",
    "forward",
    "ingress_priority",
    "egress_priority",
];

/// Policy keys firewalld accepts.
pub const POLICY_KEYS: &[&str] = &[
    "version",
    "short",
    "description",
    "target",
    "services",
    "ports",
    "icmp_blocks",
    "masquerade",
    "forward_ports",
    "rich_rules",
    "protocols",
    "source_ports",
    "priority",
    "ingress_zones",
    "egress_zones",
];

fn owned(v: Variant<'static>) -> OwnedVariant {
    // Only file descriptors can fail to become owned; these values are strings, ints and bools.
    OwnedVariant::try_from(v).expect("settings values hold no file descriptors")
}

fn s(v: &str) -> OwnedVariant {
    owned(Variant::from(v.to_string()))
}

fn strs<'a>(v: impl IntoIterator<Item = &'a String>) -> OwnedVariant {
    owned(Variant::from(
        v.into_iter().cloned().collect::<Vec<String>>(),
    ))
}

fn ports(v: &[Port]) -> OwnedVariant {
    owned(Variant::from(
        v.iter()
            .map(|p| (p.port.to_string(), p.protocol.as_str().to_string()))
            .collect::<Vec<(String, String)>>(),
    ))
}

fn forward_ports(v: &[ForwardPort]) -> OwnedVariant {
    owned(Variant::from(
        v.iter()
            .map(|f| {
                (
                    f.port.to_string(),
                    f.protocol.as_str().to_string(),
                    f.to_port.map(|p| p.to_string()).unwrap_or_default(),
                    f.to_addr.clone().unwrap_or_default(),
                )
            })
            .collect::<Vec<(String, String, String, String)>>(),
    ))
}

fn rules(v: &[RichRule]) -> OwnedVariant {
    owned(Variant::from(
        v.iter().map(|r| r.to_string()).collect::<Vec<String>>(),
    ))
}

impl Body {
    /// Writes the shared keys; `rules_key` is where rich rules go (`rules_str` for zones,
    /// `rich_rules` for policies: firewalld's code, not its docs).
    fn write_settings(&self, d: &mut Settings, rules_key: &str) {
        d.insert("version".into(), s(&self.version));
        d.insert("short".into(), s(&self.short));
        d.insert("description".into(), s(&self.description));
        d.insert("services".into(), strs(&self.services));
        d.insert("ports".into(), ports(&self.ports));
        d.insert("icmp_blocks".into(), strs(&self.icmp_blocks));
        d.insert("masquerade".into(), self.masquerade.into());
        d.insert("forward_ports".into(), forward_ports(&self.forward_ports));
        d.insert(rules_key.into(), rules(&self.rules));
        d.insert("protocols".into(), strs(&self.protocols));
        d.insert("source_ports".into(), ports(&self.source_ports));
    }

    /// Reads the shared keys (see [`Body::write_settings`]).
    fn read_settings(d: &Dict<'_>, rules_key: &str) -> Result<Body, Fail> {
        Ok(Body {
            version: d.string("version")?.unwrap_or_default(),
            short: collapse_ws(&d.string("short")?.unwrap_or_default()),
            description: collapse_ws(&d.string("description")?.unwrap_or_default()),
            services: d.strings("services")?,
            ports: d.ports("ports")?,
            icmp_blocks: d.strings("icmp_blocks")?,
            masquerade: d.boolean("masquerade")?.unwrap_or(false),
            forward_ports: d.forward_ports("forward_ports")?,
            rules: d.rules(rules_key)?,
            protocols: d.strings("protocols")?,
            source_ports: d.ports("source_ports")?,
        })
    }
}

impl Zone {
    /// The settings dict for `addZone2` / `update2`: every firewalld 1.x key, lists even when
    /// empty (so `update2` with it replaces the whole zone — drop `interfaces`/`sources` to keep
    /// the bindings already there), plus `ingress_priority`/`egress_priority` only when non-zero.
    pub fn to_settings(&self) -> Settings {
        let mut d = Settings::new();
        self.body.write_settings(&mut d, "rules_str");
        d.insert("target".into(), s(self.target.as_str()));
        d.insert("interfaces".into(), strs(&self.interfaces));
        let sources: Vec<String> = self.sources.iter().map(|x| x.to_string()).collect();
        d.insert("sources".into(), strs(&sources));
        d.insert(
            "icmp_block_inversion".into(),
            self.icmp_block_inversion.into(),
        );
        d.insert("forward".into(), self.forward.into());
        if self.ingress_priority != 0 {
            d.insert("ingress_priority".into(), self.ingress_priority.into());
        }
        if self.egress_priority != 0 {
            d.insert("egress_priority".into(), self.egress_priority.into());
        }
        d
    }

    /// Reads a settings dict (`getSettings2`), then [`validate`](Zone::validate)s the zone.
    /// Missing keys take firewalld's defaults for a zone made over D-Bus (forward on).
    pub fn from_settings(name: &str, settings: &Settings) -> Result<Self, ZoneError> {
        let err = |f: Fail| f.into_error(ObjectKind::Zone, name);
        let d = Dict(settings);
        d.only(ZONE_KEYS).map_err(err)?;
        let mut z = Zone::new(name);
        z.body = Body::read_settings(&d, "rules_str").map_err(err)?;
        if let Some(t) = d.string("target").map_err(err)? {
            z.target = ZoneTarget::parse(&t).map_err(|e| err(d.fail("target", e)))?;
        }
        z.interfaces = d.strings("interfaces").map_err(err)?;
        z.sources = d
            .strings("sources")
            .map_err(err)?
            .iter()
            .map(|x| ZoneSource::from_settings_str(x))
            .collect();
        z.icmp_block_inversion = d
            .boolean("icmp_block_inversion")
            .map_err(err)?
            .unwrap_or(false);
        z.forward = d.boolean("forward").map_err(err)?.unwrap_or(true);
        z.ingress_priority = d.int("ingress_priority").map_err(err)?.unwrap_or(0);
        z.egress_priority = d.int("egress_priority").map_err(err)?.unwrap_or(0);
        z.validate()?;
        Ok(z)
    }
}

impl Policy {
    /// The settings dict for `addPolicy` / `update`: every key, lists even when empty.
    pub fn to_settings(&self) -> Settings {
        let mut d = Settings::new();
        self.body.write_settings(&mut d, "rich_rules");
        d.insert("target".into(), s(self.target.as_str()));
        d.insert("priority".into(), self.priority.into());
        d.insert("ingress_zones".into(), strs(&self.ingress_zones));
        d.insert("egress_zones".into(), strs(&self.egress_zones));
        d
    }

    /// Reads a settings dict (`getSettings`), then [`validate`](Policy::validate)s the policy.
    pub fn from_settings(name: &str, settings: &Settings) -> Result<Self, ZoneError> {
        let err = |f: Fail| f.into_error(ObjectKind::Policy, name);
        // firewalld 2.5 added `disable` (b) to policies. Disabled, the policy does nothing: that
        // cannot mean the same as virtzone's, so it is an error here; enabled, it changes nothing.
        let mut settings = settings.clone();
        if let Some(disabled) = settings.remove("disable") {
            match unwrap_variant(&disabled) {
                Variant::Bool(false) => {}
                Variant::Bool(true) => {
                    return Err(err(Fail::new(
                        ErrorCode::InvalidOption,
                        "",
                        "it is disabled (`disable` is set, firewalld 2.5 or later)",
                    )))
                }
                other => {
                    return Err(err(Dict(&settings).type_error("disable", "b", other)));
                }
            }
        }
        let d = Dict(&settings);
        d.only(POLICY_KEYS).map_err(err)?;
        let mut p = Policy::new(name);
        p.body = Body::read_settings(&d, "rich_rules").map_err(err)?;
        if let Some(t) = d.string("target").map_err(err)? {
            p.target = PolicyTarget::parse(&t).map_err(|e| err(d.fail("target", e)))?;
        }
        if let Some(prio) = d.int("priority").map_err(err)? {
            p.priority = prio;
        }
        p.ingress_zones = d.strings("ingress_zones").map_err(err)?;
        p.egress_zones = d.strings("egress_zones").map_err(err)?;
        p.validate()?;
        Ok(p)
    }
}

/// Typed reads from a settings dict, with firewalld's error codes.
struct Dict<'a>(&'a Settings);

impl Dict<'_> {
    fn fail(&self, key: &str, e: (ErrorCode, String)) -> Fail {
        Fail::new(e.0, &format!("key '{key}'"), e.1)
    }

    fn type_error(&self, key: &str, want: &str, got: &Variant<'_>) -> Fail {
        self.fail(
            key,
            (
                ErrorCode::InvalidType,
                format!(
                    "must be of D-Bus type '{want}', not '{}'",
                    got.value_signature()
                ),
            ),
        )
    }

    fn only(&self, keys: &[&str]) -> Result<(), Fail> {
        let mut unknown: Vec<&String> = self
            .0
            .keys()
            .filter(|k| !keys.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(k) => Err(Fail::new(
                ErrorCode::InvalidOption,
                "",
                format!("option '{k}' is not valid"),
            )),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&Variant<'static>> {
        self.0.get(key).map(|v| unwrap_variant(v))
    }

    fn string(&self, key: &str) -> Result<Option<String>, Fail> {
        match self.get(key) {
            None => Ok(None),
            Some(Variant::Str(s)) => Ok(Some(s.as_str().to_string())),
            Some(other) => Err(self.type_error(key, "s", other)),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Fail> {
        match self.get(key) {
            None => Ok(None),
            Some(Variant::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.type_error(key, "b", other)),
        }
    }

    fn int(&self, key: &str) -> Result<Option<i32>, Fail> {
        match self.get(key) {
            None => Ok(None),
            Some(Variant::I32(i)) => Ok(Some(*i)),
            Some(other) => Err(self.type_error(key, "i", other)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, Fail> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Variant::Array(a) = v else {
            return Err(self.type_error(key, "as", v));
        };
        a.inner()
            .iter()
            .map(|x| match x {
                Variant::Str(s) => Ok(s.as_str().to_string()),
                _ => Err(self.type_error(key, "as", v)),
            })
            .collect()
    }

    /// An `a(s…s)` of `n` strings per entry.
    fn tuples(&self, key: &str, n: usize) -> Result<Vec<Vec<String>>, Fail> {
        let want = format!("a({})", "s".repeat(n));
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Variant::Array(a) = v else {
            return Err(self.type_error(key, &want, v));
        };
        a.inner()
            .iter()
            .map(|x| match x {
                Variant::Structure(st) if st.fields().len() == n => st
                    .fields()
                    .iter()
                    .map(|f| match f {
                        Variant::Str(s) => Ok(s.as_str().to_string()),
                        _ => Err(self.type_error(key, &want, v)),
                    })
                    .collect(),
                _ => Err(self.type_error(key, &want, v)),
            })
            .collect()
    }

    fn ports(&self, key: &str) -> Result<Vec<Port>, Fail> {
        self.tuples(key, 2)?
            .iter()
            .map(|t| Port::parse(&t[0], &t[1]).map_err(|e| self.fail(key, e)))
            .collect()
    }

    fn forward_ports(&self, key: &str) -> Result<Vec<ForwardPort>, Fail> {
        self.tuples(key, 4)?
            .iter()
            .map(|t| {
                let p = |e| self.fail(key, e);
                Ok(ForwardPort {
                    port: PortRange::parse(&t[0]).map_err(|e| p((ErrorCode::InvalidPort, e)))?,
                    protocol: PortProtocol::parse(&t[1]).map_err(p)?,
                    to_port: match t[2].as_str() {
                        "" => None,
                        tp => {
                            Some(PortRange::parse(tp).map_err(|e| p((ErrorCode::InvalidPort, e)))?)
                        }
                    },
                    to_addr: (!t[3].is_empty()).then(|| t[3].clone()),
                })
            })
            .collect()
    }

    fn rules(&self, key: &str) -> Result<Vec<RichRule>, Fail> {
        self.strings(key)?
            .iter()
            .map(|text| {
                RichRule::parse(text)
                    .map_err(|e| Fail::new(e.0, &format!("rich rule '{text}'"), e.1))
            })
            .collect()
    }
}

/// A value wrapped in an extra variant (`v` inside `v`) reads as the value inside.
fn unwrap_variant<'a>(v: &'a Variant<'static>) -> &'a Variant<'static> {
    match v {
        Variant::Variant(inner) => unwrap_variant(inner),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::xml::parse_zone;
    use crate::zone::ErrorCode;

    fn zone_err(d: &Settings) -> ZoneError {
        Zone::from_settings("t", d).unwrap_err()
    }

    #[test]
    fn policy_disable_of_firewalld_2_5() {
        let mut d = Policy::new("p").to_settings();
        d.insert("disable".into(), false.into());
        assert!(Policy::from_settings("p", &d).is_ok());
        d.insert("disable".into(), true.into());
        let e = Policy::from_settings("p", &d).unwrap_err();
        assert!(e.to_string().contains("it is disabled"), "{e}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let mut d = Settings::new();
        d.insert("frobnicate".into(), true.into());
        let e = zone_err(&d);
        assert_eq!(e.code(), ErrorCode::InvalidOption);
        assert_eq!(e.to_string(), "zone 't': option 'frobnicate' is not valid");

        let mut d = Settings::new();
        d.insert("services".into(), s("ssh"));
        let e = zone_err(&d);
        assert_eq!(e.code(), ErrorCode::InvalidType);
        assert_eq!(
            e.to_string(),
            "zone 't': key 'services': must be of D-Bus type 'as', not 's'"
        );

        let mut d = Settings::new();
        d.insert("ports".into(), strs(&["22".to_string()]));
        assert_eq!(zone_err(&d).code(), ErrorCode::InvalidType);

        let mut d = Settings::new();
        d.insert("rules_str".into(), strs(&["rule reject".to_string()]));
        let e = zone_err(&d);
        assert_eq!(
            e.to_string(),
            "zone 't': rich rule 'rule reject': no element, no source, no destination (a catch-all rule needs a non-zero priority)"
        );

        let mut d = Settings::new();
        d.insert("priority".into(), 0i32.into());
        let e = Policy::from_settings("p", &d).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidPriority);
    }

    #[test]
    fn defaults_follow_firewalld() {
        // A zone made over D-Bus without "forward" gets forward on; a policy gets CONTINUE, -1.
        let z = Zone::from_settings("t", &Settings::new()).unwrap();
        assert!(z.forward);
        assert_eq!(z.target, ZoneTarget::Default);
        let p = Policy::from_settings("p", &Settings::new()).unwrap();
        assert_eq!((p.target, p.priority), (PolicyTarget::Continue, -1));
    }

    #[test]
    fn two_dot_zero_keys_only_when_set() {
        let mut z = parse_zone("t", "<zone><source ipset=\"vzset\"/></zone>").unwrap();
        let d = z.to_settings();
        assert!(!d.contains_key("ingress_priority") && !d.contains_key("egress_priority"));
        assert_eq!(
            Vec::<String>::try_from(d["sources"].try_clone().unwrap()).unwrap(),
            ["ipset:vzset"]
        );
        z.egress_priority = 7;
        let d = z.to_settings();
        assert!(!d.contains_key("ingress_priority"));
        assert_eq!(i32::try_from(&d["egress_priority"]).unwrap(), 7);
        assert_eq!(Zone::from_settings("t", &d).unwrap(), z);
    }
}
