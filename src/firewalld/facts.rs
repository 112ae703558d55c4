//! Plain data about a firewalld, as gathered over D-Bus: the input of the pure decisions.

use std::collections::BTreeSet;

use semver::Version;
use serde::Serialize;

use super::Capabilities;
use crate::zone::{self, Policy, Zone};

/// firewalld's packet-filter backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables (the default since 0.6.0).
    Nftables,
    /// iptables / ip6tables.
    Iptables,
}

impl Backend {
    /// Parses the `FirewallBackend` property.
    pub fn from_text(text: &str) -> Option<Self> {
        match text {
            "nftables" => Some(Backend::Nftables),
            "iptables" => Some(Backend::Iptables),
            _ => None,
        }
    }

    /// firewalld's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// firewalld's `state` property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Starting up or reloading.
    Init,
    /// Loaded and enforcing its configuration.
    Running,
    /// Its configuration failed to load; it runs a fallback.
    Failed,
    /// Something newer or unexpected, verbatim.
    #[serde(untagged)]
    Other(String),
}

impl State {
    /// Parses the `state` property.
    pub fn from_text(text: &str) -> Self {
        match text {
            "INIT" => State::Init,
            "RUNNING" => State::Running,
            "FAILED" => State::Failed,
            other => State::Other(other.to_string()),
        }
    }

    /// firewalld's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            State::Init => "INIT",
            State::Running => "RUNNING",
            State::Failed => "FAILED",
            State::Other(s) => s,
        }
    }
}

/// What is known about firewalld on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewalldFacts {
    /// Nobody owns firewalld's bus name (or there is no system bus at all).
    NotRunning {
        /// True when there was no system bus to ask.
        no_bus: bool,
    },
    /// firewalld answers on the bus.
    Running(Running),
}

/// Facts about a firewalld that answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The version, leniently parsed.
    pub version: Version,
    /// The version as firewalld reported it.
    pub version_text: String,
    /// Its state.
    pub state: State,
    /// Its backend.
    pub backend: Backend,
    /// What that version can do.
    pub capabilities: Capabilities,
    /// Runtime zones.
    pub zones: BTreeSet<String>,
    /// Runtime policies; `None` when this firewalld has no policies.
    pub policies: Option<BTreeSet<String>>,
}

impl Running {
    /// Whether the runtime policy `name` exists.
    pub fn has_policy(&self, name: &str) -> bool {
        self.policies.as_ref().is_some_and(|p| p.contains(name))
    }
}

/// A firewalld `forward-port` entry as the settings dicts carry it: port, protocol, to-port,
/// to-addr.
pub type ForwardPortEntry = (String, String, String, String);

/// The entries of a zone or policy that virtzone's forwards and allows look at and set (see
/// docs/forwards.md). Kept as firewalld prints them, so comparisons with what was read are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// `forward_ports`.
    pub forward_ports: BTreeSet<ForwardPortEntry>,
    /// Rich rules, as firewalld prints them.
    pub rich_rules: BTreeSet<String>,
    /// `ingress_zones` (policies only).
    pub ingress_zones: BTreeSet<String>,
}

fn settings_strings(settings: &super::proxy::Settings, key: &str) -> BTreeSet<String> {
    settings
        .get(key)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<String>::try_from(v).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn owned(v: zbus::Variant<'static>) -> Result<zbus::OwnedVariant, super::Error> {
    zbus::OwnedVariant::try_from(v).map_err(|e| super::Error::Protocol(e.to_string()))
}

impl Entries {
    /// The entries of a zone's (`rules_key` = `rules_str`) or policy's (`rich_rules`) settings
    /// dict; a missing or mistyped key reads as empty.
    pub fn from_settings(settings: &super::proxy::Settings, rules_key: &str) -> Self {
        let forward_ports = settings
            .get("forward_ports")
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| Vec::<ForwardPortEntry>::try_from(v).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        Entries {
            forward_ports,
            rich_rules: settings_strings(settings, rules_key),
            ingress_zones: settings_strings(settings, "ingress_zones"),
        }
    }

    /// A policy's settings dict carrying exactly these keys (`setPolicySettings` and `update`
    /// change only the keys given).
    pub fn to_policy_settings(&self) -> Result<super::proxy::Settings, super::Error> {
        use zbus::Variant;
        let mut s = super::proxy::Settings::new();
        s.insert(
            "forward_ports".into(),
            owned(Variant::from(
                self.forward_ports.iter().cloned().collect::<Vec<_>>(),
            ))?,
        );
        s.insert(
            "rich_rules".into(),
            owned(Variant::from(
                self.rich_rules.iter().cloned().collect::<Vec<_>>(),
            ))?,
        );
        s.insert(
            "ingress_zones".into(),
            owned(Variant::from(
                self.ingress_zones.iter().cloned().collect::<Vec<_>>(),
            ))?,
        );
        Ok(s)
    }
}

/// One of virtzone's own policies (`virtzone-forward`, `virtzone-allow`, `virtzone-from-host`) as
/// created: virtzone owns it whole and rewrites its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnPolicy {
    /// The policy.
    pub name: String,
    /// Ingress zones (replacing `entries.ingress_zones` on creation).
    pub ingress: Vec<String>,
    /// Egress zones.
    pub egress: Vec<String>,
    /// Priority.
    pub priority: i32,
    /// Target (`CONTINUE`).
    pub target: String,
    /// Description, telling admins who manages it.
    pub description: String,
    /// Its entries.
    pub entries: Entries,
}

impl OwnPolicy {
    /// The settings dict for `addPolicy`.
    pub fn to_settings(&self) -> Result<super::proxy::Settings, super::Error> {
        use zbus::Variant;
        let mut s = self.entries.to_policy_settings()?;
        s.insert(
            "ingress_zones".into(),
            owned(Variant::from(self.ingress.clone()))?,
        );
        s.insert(
            "egress_zones".into(),
            owned(Variant::from(self.egress.clone()))?,
        );
        s.insert("priority".into(), owned(Variant::from(self.priority))?);
        s.insert("target".into(), owned(Variant::from(self.target.clone()))?);
        s.insert(
            "description".into(),
            owned(Variant::from(self.description.clone()))?,
        );
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_entries_round_trip_through_a_settings_dict() {
        let e = Entries {
            forward_ports: [(
                "8080".to_string(),
                "tcp".to_string(),
                "80".to_string(),
                "192.0.2.5".to_string(),
            )]
            .into(),
            rich_rules: ["rule family=\"ipv4\" source address=\"192.0.2.0/24\" accept".into()]
                .into(),
            ingress_zones: ["ANY".into()].into(),
        };
        let s = e.to_policy_settings().unwrap();
        assert_eq!(s.len(), 3, "only the keys virtzone sets");
        assert_eq!(Entries::from_settings(&s, "rich_rules"), e);
        // A zone keeps its rich rules under another key.
        assert!(Entries::from_settings(&s, "rules_str")
            .rich_rules
            .is_empty());
    }
}

/// A permanent zone or policy as firewalld holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// A zone.
    Zone(Zone),
    /// A policy.
    Policy(Policy),
}

/// A permanent copy of one of the shipped objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Whether it comes from firewalld's stock tier (`/usr/lib/firewalld`, e.g. libvirt's package).
    pub builtin: bool,
    /// Its definition; `Err` says why it could not be read or compared (e.g. before firewalld 0.9.0).
    pub body: std::result::Result<Definition, String>,
}

impl Object {
    /// How the object differs from virtzone's definition (empty: same meaning). Permanently bound
    /// interfaces are bindings, not part of the definition, so they do not count.
    pub fn differences(&self, name: &str) -> Vec<String> {
        match &self.body {
            Ok(Definition::Zone(z)) => {
                let mut z = z.clone();
                z.interfaces.clear();
                zone::shipped_zone(name).diff(&z)
            }
            Ok(Definition::Policy(p)) => zone::shipped_policy(name).diff(p),
            Err(e) => vec![e.clone()],
        }
    }
}
