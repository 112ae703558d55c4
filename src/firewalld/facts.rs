//! Plain data about a firewalld, as gathered over D-Bus: the input of the pure decisions.

use std::collections::BTreeSet;

use semver::Version;
use serde::Serialize;

use super::Capabilities;

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
