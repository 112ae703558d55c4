//! firewalld's mutating calls, and the host's changes that go with them, as one trait: what the
//! [`Executor`](super::Executor) drives, implemented by [`Live`](super::executor::Live), the
//! firewalld-less [`Local`](super::executor::local::Local) and the recording fake of the unit tests.

use crate::firewalld::{self, Entries, ForwardPortEntry, OwnPolicy};
use crate::names::{BridgeName, ZoneName};
use crate::zone::{Policy, Zone};

/// firewalld's mutating calls, one method per call, so that the executor can be tested against a
/// recording fake without root or a bus.
// Implemented inside the crate only (the live client, test fakes); callers are generic, not `dyn`.
#[allow(async_fn_in_trait)]
pub trait Mutations {
    /// `zone.changeZoneOfInterface`.
    async fn change_zone_of_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()>;
    /// `zone.removeInterface`.
    async fn remove_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()>;
    /// `config.zone.addInterface`.
    async fn add_permanent_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()>;
    /// `config.zone.removeInterface`.
    async fn remove_permanent_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()>;
    /// `config.addZone2` (or `addZone` before 0.9.0).
    async fn add_zone(&self, zone: &Zone) -> firewalld::Result<()>;
    /// `config.addPolicy`.
    async fn add_policy(&self, policy: &Policy) -> firewalld::Result<()>;
    /// `config.zone.update2`, keeping the zone's bindings.
    async fn update_zone(&self, zone: &Zone) -> firewalld::Result<()>;
    /// `config.zone.remove`.
    async fn remove_zone(&self, name: &str) -> firewalld::Result<()>;
    /// `config.policy.remove`.
    async fn remove_policy(&self, name: &str) -> firewalld::Result<()>;
    /// `reload`.
    async fn reload(&self) -> firewalld::Result<()>;
    /// `zone.addForwardPort` (no timeout).
    async fn add_forward_port(&self, zone: &str, entry: &ForwardPortEntry)
        -> firewalld::Result<()>;
    /// `zone.removeForwardPort`.
    async fn remove_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()>;
    /// `config.zone.addForwardPort`.
    async fn add_permanent_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()>;
    /// `config.zone.removeForwardPort`.
    async fn remove_permanent_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()>;
    /// `zone.addRichRule` (no timeout).
    async fn add_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()>;
    /// `zone.removeRichRule`.
    async fn remove_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()>;
    /// `config.zone.addRichRule`.
    async fn add_permanent_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()>;
    /// `config.zone.removeRichRule`.
    async fn remove_permanent_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()>;
    /// `config.addPolicy` with one of virtzone's own policies.
    async fn add_own_policy(&self, policy: &OwnPolicy) -> firewalld::Result<()>;
    /// `policy.setPolicySettings` with the keys of `entries`.
    async fn set_policy_entries(&self, name: &str, entries: &Entries) -> firewalld::Result<()>;
    /// `config.policy.update` with the keys of `entries`.
    async fn set_permanent_policy_entries(
        &self,
        name: &str,
        entries: &Entries,
    ) -> firewalld::Result<()>;
    /// `direct.passthrough("ipv4", ["-t", table, args…])`.
    async fn passthrough(&self, table: &str, args: &[String]) -> firewalld::Result<()>;
    /// `nft -j -f -` with command objects (`{"insert": {"rule": …}}` or `{"delete": …}`), as one
    /// transaction: all or none.
    async fn nft(&self, commands: &[serde_json::Value]) -> firewalld::Result<()>;
    /// Writes `/proc/sys/KEY` (not firewalld: see [`Step::Sysctl`]).
    async fn write_sysctl(&self, key: &str, value: &str) -> firewalld::Result<()>;
    /// NetworkManager's `Settings.Connection.Update2` of profile `uuid` with only `connection.zone`
    /// changed (not firewalld: see [`Step::SetConnectionZone`]).
    async fn set_connection_zone(
        &self,
        uuid: &str,
        zone: &str,
        to_disk: bool,
    ) -> firewalld::Result<()>;
    /// `iptables -w 5 ARGS` run by virtzone itself (not firewalld: see [`Step::IptablesRule`]).
    async fn iptables(&self, args: &[String]) -> firewalld::Result<()>;
    /// Replaces `path` atomically with `content`, or removes it (`None`), never following a
    /// symlink (not firewalld: see [`Step::WriteFile`]).
    async fn write_file(
        &self,
        path: &std::path::Path,
        content: Option<&str>,
        mode: u32,
    ) -> firewalld::Result<()>;
}
