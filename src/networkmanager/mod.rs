//! NetworkManager over D-Bus: which profile owns a bridge, and setting that profile's
//! `connection.zone` (the only zone NetworkManager does not undo).
//!
//! NetworkManager sends a device's zone to firewalld on every activation and after every firewalld
//! reload or restart: the profile's `connection.zone`, or the default zone when it is empty. A zone
//! set by anyone else over firewalld's API lasts only until the next such event, so for a device
//! NetworkManager manages, virtzone binds through the profile instead (see `bind::plan`).
//!
//! A host without NetworkManager (nobody owns its bus name) is a fact, not an error: every bridge
//! then takes firewalld's path, as before. The name is asked of the bus first, so nothing here ever
//! starts NetworkManager by D-Bus activation.

pub mod proxy;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedVariant, Variant};

use proxy::{
    ActiveConnectionProxy, ConnectionSettings, DeviceProxy, ManagerProxy, SettingsConnectionProxy,
    SettingsProxy, BUS_NAME,
};

/// How long one call to NetworkManager may take (NetworkManager's own clients wait 25 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// `NM_SETTINGS_CONNECTION_FLAG_UNSAVED`: the profile has changes not written to disk.
pub const FLAG_UNSAVED: u32 = 0x1;
/// `NM_SETTINGS_CONNECTION_FLAG_NM_GENERATED`: NetworkManager made the profile itself.
pub const FLAG_NM_GENERATED: u32 = 0x2;
/// `NM_SETTINGS_CONNECTION_FLAG_VOLATILE`: deleted when it goes down.
pub const FLAG_VOLATILE: u32 = 0x4;
/// `NM_SETTINGS_CONNECTION_FLAG_EXTERNAL`: a device configured by someone else ("connected
/// (externally)", e.g. libvirt's own `virbr*`).
pub const FLAG_EXTERNAL: u32 = 0x8;

/// `NM_SETTINGS_UPDATE2_FLAG_TO_DISK`: write the profile to its file.
pub const UPDATE2_TO_DISK: u32 = 0x1;
/// `NM_SETTINGS_UPDATE2_FLAG_IN_MEMORY`: keep the change in memory only (the file stays as it was;
/// NetworkManager keeps the in-memory profile under /run across its own restarts, not across boots).
pub const UPDATE2_IN_MEMORY: u32 = 0x2;

/// `NM_DEVICE_STATE_ACTIVATED`.
pub const DEVICE_ACTIVATED: u32 = 100;

/// A NetworkManager call that failed or timed out, said in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NetworkManager: {0}")]
pub struct Error(pub String);

/// Result of a NetworkManager call.
pub type Result<T> = std::result::Result<T, Error>;

/// A profile (NetworkManager's settings connection), as far as binding cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// `connection.uuid`: how virtzone finds it again (object paths change when NM restarts).
    pub uuid: String,
    /// `connection.id`, the name `nmcli` shows.
    pub id: String,
    /// `connection.zone`; empty: NetworkManager puts the device in firewalld's default zone.
    pub zone: String,
    /// `NMSettingsConnectionFlags`.
    #[serde(skip)]
    pub flags: u32,
    /// The file it is stored in; empty when it lives only in memory.
    #[serde(skip)]
    pub filename: String,
    /// Whether `ipv4.method` or `ipv6.method` is `shared` (NetworkManager then keeps the device in
    /// its own zone `nm-shared` when `connection.zone` is empty).
    #[serde(skip)]
    pub shared: bool,
}

impl Profile {
    /// Whether NetworkManager made it for a device someone else configured, or generated it: such a
    /// device's zone is not sent by NetworkManager, so firewalld's path holds.
    pub fn is_external(&self) -> bool {
        self.flags & (FLAG_EXTERNAL | FLAG_NM_GENERATED) != 0
    }

    /// Whether it vanishes when it goes down.
    pub fn is_volatile(&self) -> bool {
        self.flags & FLAG_VOLATILE != 0
    }

    /// Whether it has no file (an in-memory-only profile).
    pub fn in_memory_only(&self) -> bool {
        self.filename.is_empty()
    }
}

/// Who sends a device's zone to firewalld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Nobody but firewalld's own bindings: NetworkManager is absent, does not know or manage the
    /// device, has no active profile on it, or the device is external.
    Firewalld,
    /// NetworkManager, from this active profile.
    NetworkManager(Profile),
}

/// A client of NetworkManager on an existing connection to the system bus.
#[derive(Debug, Clone)]
pub struct NetworkManager {
    conn: Connection,
}

/// Runs one call with [`CALL_TIMEOUT`], naming it in the error.
async fn call<T>(what: &str, fut: impl Future<Output = zbus::Result<T>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error(format!("{what} failed: {e}"))),
        Err(_) => Err(Error(format!(
            "{what} did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether a zbus error is NetworkManager saying it has no such object (unknown device or profile).
fn is_unknown(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => {
            let n = name.as_str();
            n.ends_with(".UnknownDevice") || n.ends_with(".InvalidConnection")
        }
        _ => false,
    }
}

/// The string property `key` of setting `setting`; empty when unset.
fn string_of(settings: &ConnectionSettings, setting: &str, key: &str) -> String {
    match settings.get(setting).and_then(|s| s.get(key)).map(|v| &**v) {
        Some(Variant::Str(s)) => s.as_str().to_string(),
        _ => String::new(),
    }
}

/// `settings` with `connection.zone` set to `zone` (removed when empty: NetworkManager's default
/// placement) and nothing else changed.
pub fn with_zone(mut settings: ConnectionSettings, zone: &str) -> Result<ConnectionSettings> {
    let connection = settings
        .get_mut("connection")
        .ok_or_else(|| Error("the profile has no connection setting".into()))?;
    if zone.is_empty() {
        connection.remove("zone");
    } else {
        let value = OwnedVariant::try_from(Variant::from(zone.to_string()))
            .map_err(|e| Error(format!("cannot encode zone {zone}: {e}")))?;
        connection.insert("zone".to_string(), value);
    }
    Ok(settings)
}

impl NetworkManager {
    /// A client on `conn` (the caller's connection: NetworkManager and firewalld share the system bus).
    pub fn new(conn: &Connection) -> Self {
        NetworkManager { conn: conn.clone() }
    }

    async fn proxy<'a, P>(&'a self, what: &str, path: Option<&'a str>) -> Result<P>
    where
        P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
    {
        let mut b =
            zbus::proxy::Builder::<P>::new(&self.conn).cache_properties(CacheProperties::No);
        if let Some(path) = path {
            // A bad path is reported by build().
            b = b.path(path);
        }
        call(what, b.build()).await
    }

    /// Whether NetworkManager runs (asked of the bus: never activates it).
    pub async fn is_running(&self) -> Result<bool> {
        call(
            "NameHasOwner",
            crate::firewalld::bus::name_has_owner(&self.conn, BUS_NAME),
        )
        .await
    }

    /// Who sends `iface`'s zone to firewalld.
    pub async fn owner(&self, iface: &str) -> Result<Owner> {
        if !self.is_running().await? {
            return Ok(Owner::Firewalld);
        }
        let manager: ManagerProxy<'_> = self.proxy("GetDeviceByIpIface", None).await?;
        let device = match tokio::time::timeout(CALL_TIMEOUT, manager.get_device_by_ip_iface(iface))
            .await
        {
            Ok(Ok(path)) => path,
            Ok(Err(e)) if is_unknown(&e) => return Ok(Owner::Firewalld),
            Ok(Err(e)) => return Err(Error(format!("GetDeviceByIpIface({iface}) failed: {e}"))),
            Err(_) => return Err(Error(format!("GetDeviceByIpIface({iface}) timed out"))),
        };
        let device: DeviceProxy<'_> = self.proxy("Device", Some(device.as_str())).await?;
        if !call("Device.Managed", device.managed()).await? {
            return Ok(Owner::Firewalld);
        }
        let active = call("Device.ActiveConnection", device.active_connection()).await?;
        if active.as_str() == "/" {
            return Ok(Owner::Firewalld);
        }
        let active: ActiveConnectionProxy<'_> = self
            .proxy("Connection.Active", Some(active.as_str()))
            .await?;
        let settings = call("Connection.Active.Connection", active.connection()).await?;
        let profile = self.profile_at(settings.as_str()).await?;
        Ok(if profile.is_external() {
            Owner::Firewalld
        } else {
            Owner::NetworkManager(profile)
        })
    }

    /// The profile with `uuid`, `None` when NetworkManager does not run or has no such profile.
    pub async fn profile(&self, uuid: &str) -> Result<Option<Profile>> {
        match self.profile_path(uuid).await? {
            Some(path) => Ok(Some(self.profile_at(&path).await?)),
            None => Ok(None),
        }
    }

    async fn profile_path(&self, uuid: &str) -> Result<Option<String>> {
        if !self.is_running().await? {
            return Ok(None);
        }
        let settings: SettingsProxy<'_> = self.proxy("Settings", None).await?;
        match tokio::time::timeout(CALL_TIMEOUT, settings.get_connection_by_uuid(uuid)).await {
            Ok(Ok(path)) => Ok(Some(path.as_str().to_string())),
            Ok(Err(e)) if is_unknown(&e) => Ok(None),
            Ok(Err(e)) => Err(Error(format!("GetConnectionByUuid({uuid}) failed: {e}"))),
            Err(_) => Err(Error(format!("GetConnectionByUuid({uuid}) timed out"))),
        }
    }

    async fn profile_at(&self, path: &str) -> Result<Profile> {
        let conn: SettingsConnectionProxy<'_> =
            self.proxy("Settings.Connection", Some(path)).await?;
        let (settings, flags, filename) = tokio::try_join!(
            call("GetSettings", conn.get_settings()),
            call("Settings.Connection.Flags", conn.flags()),
            call("Settings.Connection.Filename", conn.filename()),
        )?;
        let shared = ["ipv4", "ipv6"]
            .iter()
            .any(|s| string_of(&settings, s, "method") == "shared");
        Ok(Profile {
            uuid: string_of(&settings, "connection", "uuid"),
            id: string_of(&settings, "connection", "id"),
            zone: string_of(&settings, "connection", "zone"),
            flags,
            filename,
            shared,
        })
    }

    /// Sets `connection.zone` of the profile `uuid` to `zone` (empty: NetworkManager's default
    /// placement), to disk or in memory only. The profile is read afresh and passed back with only
    /// that key changed; NetworkManager applies a changed zone to an active device at once, without
    /// reactivating it.
    pub async fn set_zone(&self, uuid: &str, zone: &str, to_disk: bool) -> Result<()> {
        let path = self
            .profile_path(uuid)
            .await?
            .ok_or_else(|| Error(format!("it has no profile {uuid} (any more)")))?;
        let conn: SettingsConnectionProxy<'_> =
            self.proxy("Settings.Connection", Some(&path)).await?;
        let settings = with_zone(call("GetSettings", conn.get_settings()).await?, zone)?;
        let flags = if to_disk {
            UPDATE2_TO_DISK
        } else {
            UPDATE2_IN_MEMORY
        };
        let args = std::collections::HashMap::new();
        call("Update2", conn.update2(&settings, flags, &args)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn s(v: &str) -> OwnedVariant {
        OwnedVariant::try_from(Variant::from(v.to_string())).unwrap()
    }

    #[test]
    fn with_zone_changes_only_the_zone() {
        let mut settings: ConnectionSettings = HashMap::new();
        settings.insert(
            "connection".into(),
            HashMap::from([("id".into(), s("br0")), ("uuid".into(), s("u-1"))]),
        );
        settings.insert(
            "ipv4".into(),
            HashMap::from([("method".into(), s("manual"))]),
        );
        let set = with_zone(settings.clone(), "internal").unwrap();
        assert_eq!(string_of(&set, "connection", "zone"), "internal");
        assert_eq!(string_of(&set, "connection", "id"), "br0");
        assert_eq!(string_of(&set, "ipv4", "method"), "manual");
        assert_eq!(set["connection"].len(), 3);
        // Empty: the key goes (NetworkManager's default placement), nothing else does.
        let cleared = with_zone(set, "").unwrap();
        assert_eq!(cleared, settings);
        assert!(with_zone(HashMap::new(), "internal").is_err());
    }
}
