//! Talking to firewalld over D-Bus: a typed client over zbus proxies, firewalld's errors, versions and
//! capabilities, and the plain-data facts the decision logic consumes.

pub mod bus;
pub mod error;
pub mod facts;
pub mod proxy;
pub mod version;

use std::collections::{BTreeMap, BTreeSet};

use crate::zone::{self, ObjectKind, Policy, Zone};

use zbus::proxy::CacheProperties;
use zbus::Connection;

pub use bus::{call_timeout, set_call_timeout, CALL_TIMEOUT, COMMAND_CALL_TIMEOUT};
pub use error::{Error, ErrorCode};
pub use facts::{
    Backend, Definition, Entries, FirewalldFacts, ForwardPortEntry, Object, OwnPolicy, Running,
    State,
};
pub use version::{parse_version, Capabilities};

use proxy::{
    ActiveZones, ConfigPolicyProxy, ConfigProxy, ConfigZoneProxy, DirectProxy, PolicyProxy,
    RuntimeProxy, ZoneProxy, BUS_NAME,
};

/// Result of a firewalld call.
pub type Result<T> = std::result::Result<T, Error>;

/// A connection to the system bus, for talking to firewalld.
#[derive(Clone, Debug)]
pub struct Firewalld {
    conn: Connection,
}

/// Builds an uncached proxy of type `$proxy` on `$self`'s connection, mapping errors for `$what`.
macro_rules! uncached {
    ($self:ident, $proxy:ty, $what:expr) => {
        <$proxy>::builder(&$self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| Error::from_call($what, e))
    };
}

impl Firewalld {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` when set, else the standard socket).
    ///
    /// A missing bus socket is [`Error::NoBus`]: such a host runs no firewalld either, which callers
    /// report as a fact rather than a crash.
    pub async fn connect() -> Result<Self> {
        let conn = zbus::connection::Builder::system()
            .method_timeout(call_timeout())
            .build()
            .await
            .map_err(|e| match e {
                zbus::Error::InputOutput(_)
                | zbus::Error::Connection(..)
                | zbus::Error::Address(_) => Error::NoBus(e.to_string()),
                zbus::Error::Handshake(_) => Error::NoBus(e.to_string()),
                other => Error::Bus(other),
            })?;
        Ok(Firewalld { conn })
    }

    /// Connects and returns the client only when firewalld runs: `None` when there is no system bus or
    /// nobody owns firewalld's name. The one place that decides "is there a firewalld to talk to".
    pub async fn connect_running() -> Result<Option<Self>> {
        match Firewalld::connect().await {
            Ok(fw) if fw.is_running().await? => Ok(Some(fw)),
            Ok(_) | Err(Error::NoBus(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Wraps an existing connection (the daemon shares one connection between its parts).
    pub fn from_connection(conn: Connection) -> Self {
        Firewalld { conn }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// An uncached proxy of type `P` on this connection; `what` names the call for errors.
    pub(crate) async fn proxy<'a, P>(&'a self, what: &str) -> Result<P>
    where
        P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
    {
        zbus::proxy::Builder::<P>::new(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| Error::from_call(what, e))
    }

    /// Whether anybody owns firewalld's bus name. Asked of the bus, so it never activates firewalld.
    pub async fn is_running(&self) -> Result<bool> {
        bus::name_has_owner(&self.conn, BUS_NAME)
            .await
            .map_err(|e| Error::from_call("NameHasOwner", e))
    }

    /// The version firewalld reports, verbatim.
    pub async fn version_text(&self) -> Result<String> {
        let p = uncached!(self, RuntimeProxy<'_>, "property version")?;
        p.version()
            .await
            .map_err(|e| Error::from_call("property version", e))
    }

    /// firewalld's `state`.
    pub async fn state(&self) -> Result<State> {
        let p = uncached!(self, RuntimeProxy<'_>, "property state")?;
        let text = p
            .state()
            .await
            .map_err(|e| Error::from_call("property state", e))?;
        Ok(State::from_text(&text))
    }

    /// The backend; a firewalld without the `FirewallBackend` property (before 0.6.0) is iptables.
    pub async fn backend(&self) -> Result<Backend> {
        let p = uncached!(self, ConfigProxy<'_>, "property FirewallBackend")?;
        match p
            .firewall_backend()
            .await
            .map_err(|e| Error::from_call("property FirewallBackend", e))
        {
            Ok(text) => Backend::from_text(&text)
                .ok_or_else(|| Error::Protocol(format!("unknown FirewallBackend {text:?}"))),
            Err(Error::NotSupported { .. }) => Ok(Backend::Iptables),
            Err(e) => Err(e),
        }
    }

    /// The runtime zones.
    pub async fn zones(&self) -> Result<BTreeSet<String>> {
        let p = uncached!(self, ZoneProxy<'_>, "getZones")?;
        let zones = p
            .get_zones()
            .await
            .map_err(|e| Error::from_call("getZones", e))?;
        Ok(zones.into_iter().collect())
    }

    /// The runtime policies; `None` when this firewalld has no policies (before 0.9.0).
    pub async fn policies(&self) -> Result<Option<BTreeSet<String>>> {
        let p = uncached!(self, PolicyProxy<'_>, "getPolicies")?;
        match p
            .get_policies()
            .await
            .map_err(|e| Error::from_call("getPolicies", e))
        {
            Ok(list) => Ok(Some(list.into_iter().collect())),
            Err(Error::NotSupported { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The permanent zones.
    pub async fn permanent_zones(&self) -> Result<BTreeSet<String>> {
        let p = uncached!(self, ConfigProxy<'_>, "getZoneNames")?;
        let zones = p
            .get_zone_names()
            .await
            .map_err(|e| Error::from_call("getZoneNames", e))?;
        Ok(zones.into_iter().collect())
    }

    /// The permanent policies; `None` before 0.9.0.
    pub async fn permanent_policies(&self) -> Result<Option<BTreeSet<String>>> {
        let p = uncached!(self, ConfigProxy<'_>, "getPolicyNames")?;
        match p
            .get_policy_names()
            .await
            .map_err(|e| Error::from_call("getPolicyNames", e))
        {
            Ok(list) => Ok(Some(list.into_iter().collect())),
            Err(Error::NotSupported { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Zones with bound interfaces or sources, in one call.
    pub async fn active_zones(&self) -> Result<ActiveZones> {
        let p = uncached!(self, ZoneProxy<'_>, "getActiveZones")?;
        p.get_active_zones()
            .await
            .map_err(|e| Error::from_call("getActiveZones", e))
    }

    /// The zone `interface` is bound to at runtime, `None` when unbound.
    pub async fn zone_of_interface(&self, interface: &str) -> Result<Option<String>> {
        let p = uncached!(self, ZoneProxy<'_>, "getZoneOfInterface")?;
        let zone = p
            .get_zone_of_interface(interface)
            .await
            .map_err(|e| Error::from_call("getZoneOfInterface", e))?;
        Ok((!zone.is_empty()).then_some(zone))
    }

    /// The permanent zone `name`, which the caller knows exists: asking for one that does not makes
    /// firewalld log an ERROR (see `change::snapshot`).
    pub(crate) async fn existing_config_zone(
        &self,
        name: &str,
    ) -> Result<ConfigZoneProxy<'static>> {
        let config = uncached!(self, ConfigProxy<'_>, "getZoneByName")?;
        let path = config
            .get_zone_by_name(name)
            .await
            .map_err(|e| Error::from_call("getZoneByName", e))?;
        ConfigZoneProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| Error::from_call("config.zone", e))
    }

    /// The permanent policy `name`, which the caller knows exists.
    pub(crate) async fn existing_config_policy(
        &self,
        name: &str,
    ) -> Result<ConfigPolicyProxy<'static>> {
        let config = uncached!(self, ConfigProxy<'_>, "getPolicyByName")?;
        let path = config
            .get_policy_by_name(name)
            .await
            .map_err(|e| Error::from_call("getPolicyByName", e))?;
        ConfigPolicyProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| Error::from_call("config.policy", e))
    }

    /// The zone `interface` is bound to in the permanent configuration, `None` when unbound.
    pub async fn permanent_zone_of_interface(&self, interface: &str) -> Result<Option<String>> {
        let config = uncached!(self, ConfigProxy<'_>, "config.getZoneOfInterface")?;
        let zone = config
            .get_zone_of_interface(interface)
            .await
            .map_err(|e| Error::from_call("config.getZoneOfInterface", e))?;
        Ok((!zone.is_empty()).then_some(zone))
    }

    /// firewalld's default zone.
    pub async fn default_zone(&self) -> Result<String> {
        let p = uncached!(self, RuntimeProxy<'_>, "getDefaultZone")?;
        p.get_default_zone()
            .await
            .map_err(|e| Error::from_call("getDefaultZone", e))
    }

    /// The services firewalld knows.
    pub async fn services(&self) -> Result<BTreeSet<String>> {
        let p = uncached!(self, RuntimeProxy<'_>, "listServices")?;
        let list = p
            .list_services()
            .await
            .map_err(|e| Error::from_call("listServices", e))?;
        Ok(list.into_iter().collect())
    }

    /// The forward ports and rich rules of runtime zone `zone`, which the caller knows exists.
    pub async fn zone_entries(&self, zone: &str) -> Result<Entries> {
        let p = uncached!(self, ZoneProxy<'_>, "getZoneSettings2")?;
        let s = p
            .get_zone_settings2(zone)
            .await
            .map_err(|e| Error::from_call("getZoneSettings2", e))?;
        Ok(Entries::from_settings(&s, "rules_str"))
    }

    /// The forward ports and rich rules of permanent zone `zone`, which the caller knows exists.
    pub async fn permanent_zone_entries(&self, zone: &str) -> Result<Entries> {
        let s = self
            .existing_config_zone(zone)
            .await?
            .get_settings2()
            .await
            .map_err(|e| Error::from_call("config.zone.getSettings2", e))?;
        Ok(Entries::from_settings(&s, "rules_str"))
    }

    /// The entries of runtime policy `policy`, which the caller knows exists.
    pub async fn policy_entries(&self, policy: &str) -> Result<Entries> {
        let p = uncached!(self, PolicyProxy<'_>, "getPolicySettings")?;
        let s = p
            .get_policy_settings(policy)
            .await
            .map_err(|e| Error::from_call("getPolicySettings", e))?;
        Ok(Entries::from_settings(&s, "rich_rules"))
    }

    /// The entries of permanent policy `policy`, which the caller knows exists.
    pub async fn permanent_policy_entries(&self, policy: &str) -> Result<Entries> {
        let s = self
            .existing_config_policy(policy)
            .await?
            .get_settings()
            .await
            .map_err(|e| Error::from_call("config.policy.getSettings", e))?;
        Ok(Entries::from_settings(&s, "rich_rules"))
    }

    /// `iptables -t TABLE -S` (IPv4) run by firewalld through its direct `passthrough`: the same
    /// iptables firewalld and libvirt use, in firewalld's network namespace. A read only (`-S`);
    /// every changing passthrough goes through the executor. `None` when firewalld cannot run it
    /// (no iptables on the host: then libvirt has no iptables rules to get past either).
    pub async fn iptables_rules(&self, table: &str) -> Option<String> {
        let d = uncached!(self, DirectProxy<'_>, "passthrough").ok()?;
        let args: Vec<String> = ["-t", table, "-S"].iter().map(|s| s.to_string()).collect();
        d.passthrough("ipv4", &args).await.ok()
    }

    /// firewalld's runtime interface → zone map, in one call.
    pub async fn interface_zones(&self) -> Result<BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        for (zone, parts) in self.active_zones().await? {
            for iface in parts.get("interfaces").into_iter().flatten() {
                map.insert(iface.clone(), zone.clone());
            }
        }
        Ok(map)
    }

    /// The permanent zone or policy `name`, which the caller knows exists: asking for one that does
    /// not makes firewalld log an ERROR. Before 0.9.0 (`dict_api` false) a zone is not compared.
    pub async fn permanent_object(
        &self,
        kind: ObjectKind,
        name: &str,
        dict_api: bool,
    ) -> Result<Object> {
        let not_comparable = |e: zone::ZoneError| format!("cannot compare it: {e}");
        match kind {
            ObjectKind::Zone => {
                let proxy = self.existing_config_zone(name).await?;
                let builtin = proxy
                    .builtin()
                    .await
                    .map_err(|e| Error::from_call("property builtin", e))?;
                if !dict_api {
                    return Ok(Object {
                        builtin,
                        body: Err("cannot compare it on firewalld before 0.9.0".into()),
                    });
                }
                let settings = proxy
                    .get_settings2()
                    .await
                    .map_err(|e| Error::from_call("getSettings2", e))?;
                Ok(Object {
                    builtin,
                    body: Zone::from_settings(name, &settings)
                        .map(Definition::Zone)
                        .map_err(not_comparable),
                })
            }
            ObjectKind::Policy => {
                let proxy = self.existing_config_policy(name).await?;
                let builtin = proxy
                    .builtin()
                    .await
                    .map_err(|e| Error::from_call("property builtin", e))?;
                let settings = proxy
                    .get_settings()
                    .await
                    .map_err(|e| Error::from_call("getSettings", e))?;
                Ok(Object {
                    builtin,
                    body: Policy::from_settings(name, &settings)
                        .map(Definition::Policy)
                        .map_err(not_comparable),
                })
            }
        }
    }
}
