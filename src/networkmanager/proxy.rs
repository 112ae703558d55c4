//! zbus proxies for the parts of NetworkManager's D-Bus API virtzone uses: find the device of a
//! bridge, its active connection and that connection's profile, and update the profile's
//! `connection.zone`.

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, OwnedVariant, Variant};

/// NetworkManager's well-known bus name.
pub const BUS_NAME: &str = "org.freedesktop.NetworkManager";

/// A profile's settings as `GetSettings` returns and `Update2` takes them: setting name → property
/// name → value.
pub type ConnectionSettings = HashMap<String, HashMap<String, OwnedVariant>>;

/// The manager object.
#[proxy(
    interface = "org.freedesktop.NetworkManager",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager"
)]
pub trait Manager {
    /// The device whose IP interface is `iface` (`org.freedesktop.NetworkManager.UnknownDevice` when
    /// NetworkManager does not know it).
    #[zbus(name = "GetDeviceByIpIface")]
    fn get_device_by_ip_iface(&self, iface: &str) -> zbus::Result<OwnedObjectPath>;
}

/// A device.
#[proxy(
    interface = "org.freedesktop.NetworkManager.Device",
    default_service = "org.freedesktop.NetworkManager"
)]
pub trait Device {
    /// The active connection, `/` when none.
    #[zbus(property, name = "ActiveConnection")]
    fn active_connection(&self) -> zbus::Result<OwnedObjectPath>;
    /// Whether NetworkManager manages the device.
    #[zbus(property, name = "Managed")]
    fn managed(&self) -> zbus::Result<bool>;
    /// `NMDeviceState` (100: activated).
    #[zbus(property, name = "State")]
    fn state(&self) -> zbus::Result<u32>;
}

/// An active connection.
#[proxy(
    interface = "org.freedesktop.NetworkManager.Connection.Active",
    default_service = "org.freedesktop.NetworkManager"
)]
pub trait ActiveConnection {
    /// The settings connection (the profile) it activates.
    #[zbus(property, name = "Connection")]
    fn connection(&self) -> zbus::Result<OwnedObjectPath>;
}

/// The settings service.
#[proxy(
    interface = "org.freedesktop.NetworkManager.Settings",
    default_service = "org.freedesktop.NetworkManager",
    default_path = "/org/freedesktop/NetworkManager/Settings"
)]
pub trait Settings {
    /// The profile with `uuid` (object paths change when NetworkManager restarts; uuids do not).
    #[zbus(name = "GetConnectionByUuid")]
    fn get_connection_by_uuid(&self, uuid: &str) -> zbus::Result<OwnedObjectPath>;
}

/// A profile.
#[proxy(
    interface = "org.freedesktop.NetworkManager.Settings.Connection",
    default_service = "org.freedesktop.NetworkManager"
)]
pub trait SettingsConnection {
    /// The profile's settings, without secrets.
    #[zbus(name = "GetSettings")]
    fn get_settings(&self) -> zbus::Result<ConnectionSettings>;
    /// Replaces the profile's settings. Settings without secrets keep the stored ones (NM merges the
    /// existing secrets into an update that carries none).
    #[zbus(name = "Update2")]
    fn update2(
        &self,
        settings: &ConnectionSettings,
        flags: u32,
        args: &HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<HashMap<String, OwnedVariant>>;
    /// `NMSettingsConnectionFlags`: unsaved, generated, volatile, external.
    #[zbus(property, name = "Flags")]
    fn flags(&self) -> zbus::Result<u32>;
    /// The file the profile is stored in, empty when it lives only in memory.
    #[zbus(property, name = "Filename")]
    fn filename(&self) -> zbus::Result<String>;
}
