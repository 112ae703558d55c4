//! zbus proxies for the parts of firewalld's D-Bus API virtzone uses.
//!
//! firewalld's method names are lowerCamelCase, so each method names itself explicitly. Properties are
//! read uncached (see [`super::Firewalld`]): a cached proxy would subscribe and fetch everything first.

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, OwnedVariant};

/// firewalld's well-known bus name.
pub const BUS_NAME: &str = "org.fedoraproject.FirewallD1";
/// The runtime object.
pub const PATH: &str = "/org/fedoraproject/FirewallD1";
/// The permanent-configuration object.
pub const CONFIG_PATH: &str = "/org/fedoraproject/FirewallD1/config";

/// A settings dictionary as firewalld's `*2` methods exchange it.
pub type Settings = HashMap<String, OwnedVariant>;
/// `getActiveZones`: zone → {"interfaces": [...], "sources": [...]}.
pub type ActiveZones = HashMap<String, HashMap<String, Vec<String>>>;

/// A zone's settings as firewalld before 0.9.0 takes them in `addZone`: version, short, description,
/// (unused), target, services, ports, icmp_blocks, masquerade, forward_ports, interfaces, sources,
/// rules_str, protocols, source_ports, icmp_block_inversion.
pub type ZoneTuple = (
    String,
    String,
    String,
    bool,
    String,
    Vec<String>,
    Vec<(String, String)>,
    Vec<String>,
    bool,
    Vec<(String, String, String, String)>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<(String, String)>,
    bool,
);

/// The main runtime interface.
#[proxy(
    interface = "org.fedoraproject.FirewallD1",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
pub trait Runtime {
    /// firewalld's version string.
    #[zbus(property, name = "version")]
    fn version(&self) -> zbus::Result<String>;
    /// INIT, RUNNING or FAILED.
    #[zbus(property, name = "state")]
    fn state(&self) -> zbus::Result<String>;
    /// Reloads the permanent configuration (drops runtime-only bindings since 0.7.0).
    #[zbus(name = "reload")]
    fn reload(&self) -> zbus::Result<()>;
    /// Reloads, also unloading the netfilter modules.
    #[zbus(name = "completeReload")]
    fn complete_reload(&self) -> zbus::Result<()>;
    /// The default zone.
    #[zbus(name = "getDefaultZone")]
    fn get_default_zone(&self) -> zbus::Result<String>;
    /// The services firewalld knows.
    #[zbus(name = "listServices")]
    fn list_services(&self) -> zbus::Result<Vec<String>>;
    /// Emitted after every successful reload.
    #[zbus(signal, name = "Reloaded")]
    fn reloaded(&self) -> zbus::Result<()>;
}

/// Runtime zones.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.zone",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
pub trait Zone {
    /// Names of the runtime zones.
    #[zbus(name = "getZones")]
    fn get_zones(&self) -> zbus::Result<Vec<String>>;
    /// Zones with interfaces or sources bound.
    #[zbus(name = "getActiveZones")]
    fn get_active_zones(&self) -> zbus::Result<ActiveZones>;
    /// The zone an interface is bound to, `""` when unbound.
    #[zbus(name = "getZoneOfInterface")]
    fn get_zone_of_interface(&self, interface: &str) -> zbus::Result<String>;
    /// Binds an interface to a zone, moving it from any other (idempotent).
    #[zbus(name = "changeZoneOfInterface")]
    fn change_zone_of_interface(&self, zone: &str, interface: &str) -> zbus::Result<String>;
    /// Unbinds an interface (zone `""` = whichever it is in).
    #[zbus(name = "removeInterface")]
    fn remove_interface(&self, zone: &str, interface: &str) -> zbus::Result<String>;
    /// A runtime zone's settings (0.9.0).
    #[zbus(name = "getZoneSettings2")]
    fn get_zone_settings2(&self, zone: &str) -> zbus::Result<super::proxy::Settings>;
    /// Adds a runtime forward port (timeout 0: no expiry).
    #[zbus(name = "addForwardPort")]
    fn add_forward_port(
        &self,
        zone: &str,
        port: &str,
        protocol: &str,
        toport: &str,
        toaddr: &str,
        timeout: i32,
    ) -> zbus::Result<String>;
    /// Removes a runtime forward port.
    #[zbus(name = "removeForwardPort")]
    fn remove_forward_port(
        &self,
        zone: &str,
        port: &str,
        protocol: &str,
        toport: &str,
        toaddr: &str,
    ) -> zbus::Result<String>;
    /// Adds a runtime rich rule (timeout 0: no expiry).
    #[zbus(name = "addRichRule")]
    fn add_rich_rule(&self, zone: &str, rule: &str, timeout: i32) -> zbus::Result<String>;
    /// Removes a runtime rich rule.
    #[zbus(name = "removeRichRule")]
    fn remove_rich_rule(&self, zone: &str, rule: &str) -> zbus::Result<String>;
}

/// Runtime policies (0.9.0).
#[proxy(
    interface = "org.fedoraproject.FirewallD1.policy",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
pub trait Policy {
    /// Names of the runtime policies.
    #[zbus(name = "getPolicies")]
    fn get_policies(&self) -> zbus::Result<Vec<String>>;
    /// A runtime policy's settings.
    #[zbus(name = "getPolicySettings")]
    fn get_policy_settings(&self, policy: &str) -> zbus::Result<super::proxy::Settings>;
    /// Changes the keys given of a runtime policy.
    #[zbus(name = "setPolicySettings")]
    fn set_policy_settings(
        &self,
        policy: &str,
        settings: &super::proxy::Settings,
    ) -> zbus::Result<()>;
}

/// firewalld's direct interface: only `passthrough`, which runs `iptables` inside firewalld (the
/// same iptables, legacy or nft, that firewalld and libvirt use).
#[proxy(
    interface = "org.fedoraproject.FirewallD1.direct",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
pub trait Direct {
    /// Runs `iptables ARGS` (`ipv` = `ipv4`) and returns its output.
    #[zbus(name = "passthrough")]
    fn passthrough(&self, ipv: &str, args: &[String]) -> zbus::Result<String>;
}

/// The permanent configuration.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.config",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1/config"
)]
pub trait Config {
    /// `nftables` or `iptables` (0.6.0).
    #[zbus(property, name = "FirewallBackend")]
    fn firewall_backend(&self) -> zbus::Result<String>;
    /// Names of the permanent zones.
    #[zbus(name = "getZoneNames")]
    fn get_zone_names(&self) -> zbus::Result<Vec<String>>;
    /// Names of the permanent policies (0.9.0).
    #[zbus(name = "getPolicyNames")]
    fn get_policy_names(&self) -> zbus::Result<Vec<String>>;
    /// The permanent zone an interface is bound to, `""` when none.
    #[zbus(name = "getZoneOfInterface")]
    fn get_zone_of_interface(&self, interface: &str) -> zbus::Result<String>;
    /// The object of a permanent zone (paths are renumbered on reload: never cache them).
    #[zbus(name = "getZoneByName")]
    fn get_zone_by_name(&self, zone: &str) -> zbus::Result<OwnedObjectPath>;
    /// The object of a permanent policy.
    #[zbus(name = "getPolicyByName")]
    fn get_policy_by_name(&self, policy: &str) -> zbus::Result<OwnedObjectPath>;
    /// Adds a permanent zone from a settings dict (0.9.0).
    #[zbus(name = "addZone2")]
    fn add_zone2(
        &self,
        zone: &str,
        settings: &super::proxy::Settings,
    ) -> zbus::Result<OwnedObjectPath>;
    /// Adds a permanent zone from the pre-0.9.0 tuple.
    #[zbus(name = "addZone")]
    fn add_zone(
        &self,
        zone: &str,
        settings: &super::proxy::ZoneTuple,
    ) -> zbus::Result<OwnedObjectPath>;
    /// Adds a permanent policy from a settings dict (0.9.0).
    #[zbus(name = "addPolicy")]
    fn add_policy(
        &self,
        policy: &str,
        settings: &super::proxy::Settings,
    ) -> zbus::Result<OwnedObjectPath>;
}

/// One permanent zone (resolve its path with `getZoneByName`).
#[proxy(
    interface = "org.fedoraproject.FirewallD1.config.zone",
    default_service = "org.fedoraproject.FirewallD1",
    assume_defaults = false
)]
pub trait ConfigZone {
    /// The zone's settings.
    #[zbus(name = "getSettings2")]
    fn get_settings2(&self) -> zbus::Result<super::proxy::Settings>;
    /// Changes only the keys given.
    #[zbus(name = "update2")]
    fn update2(&self, settings: &super::proxy::Settings) -> zbus::Result<()>;
    /// Binds an interface permanently.
    #[zbus(name = "addInterface")]
    fn add_interface(&self, interface: &str) -> zbus::Result<()>;
    /// Unbinds an interface permanently.
    #[zbus(name = "removeInterface")]
    fn remove_interface(&self, interface: &str) -> zbus::Result<()>;
    /// Adds a permanent forward port.
    #[zbus(name = "addForwardPort")]
    fn add_forward_port(
        &self,
        port: &str,
        protocol: &str,
        toport: &str,
        toaddr: &str,
    ) -> zbus::Result<()>;
    /// Removes a permanent forward port.
    #[zbus(name = "removeForwardPort")]
    fn remove_forward_port(
        &self,
        port: &str,
        protocol: &str,
        toport: &str,
        toaddr: &str,
    ) -> zbus::Result<()>;
    /// Adds a permanent rich rule.
    #[zbus(name = "addRichRule")]
    fn add_rich_rule(&self, rule: &str) -> zbus::Result<()>;
    /// Removes a permanent rich rule.
    #[zbus(name = "removeRichRule")]
    fn remove_rich_rule(&self, rule: &str) -> zbus::Result<()>;
    /// Deletes the zone's /etc file (a stock zone falls back to its default).
    #[zbus(name = "remove")]
    fn remove(&self) -> zbus::Result<()>;
    /// The zone file's name.
    #[zbus(property, name = "filename")]
    fn filename(&self) -> zbus::Result<String>;
    /// Whether the zone comes from the default (stock) configuration.
    #[zbus(property, name = "builtin")]
    fn builtin(&self) -> zbus::Result<bool>;
    /// Whether a stock zone is overridden by /etc.
    #[zbus(property, name = "default")]
    fn default(&self) -> zbus::Result<bool>;
}

/// One permanent policy.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.config.policy",
    default_service = "org.fedoraproject.FirewallD1",
    assume_defaults = false
)]
pub trait ConfigPolicy {
    /// The policy's settings.
    #[zbus(name = "getSettings")]
    fn get_settings(&self) -> zbus::Result<super::proxy::Settings>;
    /// Changes only the keys given.
    #[zbus(name = "update")]
    fn update(&self, settings: &super::proxy::Settings) -> zbus::Result<()>;
    /// Deletes the policy's /etc file.
    #[zbus(name = "remove")]
    fn remove(&self) -> zbus::Result<()>;
    /// The policy file's name.
    #[zbus(property, name = "filename")]
    fn filename(&self) -> zbus::Result<String>;
    /// Whether the policy comes from the default (stock) configuration.
    #[zbus(property, name = "builtin")]
    fn builtin(&self) -> zbus::Result<bool>;
    /// Whether a stock policy is overridden by /etc.
    #[zbus(property, name = "default")]
    fn default(&self) -> zbus::Result<bool>;
}
