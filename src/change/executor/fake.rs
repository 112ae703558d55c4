//! A recording fake of [`Mutations`] for unit tests of the executor and of the orchestration
//! around it (no root, no bus): every call is recorded as text, as firewalld's method would be named.

use std::sync::{Arc, Mutex};

use crate::change::mutations::Mutations;
use crate::firewalld::{self, Entries, Error, ErrorCode, ForwardPortEntry, OwnPolicy};
use crate::names::{BridgeName, ZoneName};
use crate::zone::{Policy, Zone};

/// Records every call as text; fails the calls whose text starts with one of `fail`.
/// Clones share the record of calls (a seam hands out one per plan).
#[derive(Debug, Default, Clone)]
pub struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
    fail: Vec<&'static str>,
}

impl Fake {
    /// A fake whose calls starting with one of `fail` fail (INVALID_ZONE).
    pub fn failing(fail: &[&'static str]) -> Self {
        Fake {
            calls: Arc::default(),
            fail: fail.to_vec(),
        }
    }

    fn record(&self, call: String) -> firewalld::Result<()> {
        let failed = self.fail.iter().any(|f| call.starts_with(f));
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
        if failed {
            return Err(Error::Firewalld {
                code: ErrorCode::InvalidZone,
                detail: "fake".into(),
            });
        }
        Ok(())
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Mutations for Fake {
    async fn change_zone_of_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.record(format!("changeZoneOfInterface {zone} {interface}"))
    }
    async fn remove_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.record(format!("removeInterface {zone} {interface}"))
    }
    async fn add_permanent_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.record(format!("config.addInterface {zone} {interface}"))
    }
    async fn remove_permanent_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.record(format!("config.removeInterface {zone} {interface}"))
    }
    async fn add_zone(&self, zone: &Zone) -> firewalld::Result<()> {
        self.record(format!("addZone {}", zone.name))
    }
    async fn add_policy(&self, policy: &Policy) -> firewalld::Result<()> {
        self.record(format!("addPolicy {}", policy.name))
    }
    async fn update_zone(&self, zone: &Zone) -> firewalld::Result<()> {
        self.record(format!("update2 {}", zone.name))
    }
    async fn remove_zone(&self, name: &str) -> firewalld::Result<()> {
        self.record(format!("removeZone {name}"))
    }
    async fn remove_policy(&self, name: &str) -> firewalld::Result<()> {
        self.record(format!("removePolicy {name}"))
    }
    async fn reload(&self) -> firewalld::Result<()> {
        self.record("reload".into())
    }
    async fn add_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        self.record(format!("addForwardPort {zone} {}", entry.0))
    }
    async fn remove_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        self.record(format!("removeForwardPort {zone} {}", entry.0))
    }
    async fn add_permanent_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        self.record(format!("config.addForwardPort {zone} {}", entry.0))
    }
    async fn remove_permanent_forward_port(
        &self,
        zone: &str,
        entry: &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        self.record(format!("config.removeForwardPort {zone} {}", entry.0))
    }
    async fn add_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        self.record(format!("addRichRule {zone} {rule}"))
    }
    async fn remove_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        self.record(format!("removeRichRule {zone} {rule}"))
    }
    async fn add_permanent_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        self.record(format!("config.addRichRule {zone} {rule}"))
    }
    async fn remove_permanent_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        self.record(format!("config.removeRichRule {zone} {rule}"))
    }
    async fn add_own_policy(&self, policy: &OwnPolicy) -> firewalld::Result<()> {
        self.record(format!("addPolicy {}", policy.name))
    }
    async fn set_policy_entries(&self, name: &str, entries: &Entries) -> firewalld::Result<()> {
        self.record(format!("setPolicySettings {name} {}", rules(entries)))
    }
    async fn set_permanent_policy_entries(
        &self,
        name: &str,
        entries: &Entries,
    ) -> firewalld::Result<()> {
        self.record(format!("config.policy.update {name} {}", rules(entries)))
    }
    async fn passthrough(&self, table: &str, args: &[String]) -> firewalld::Result<()> {
        self.record(format!("passthrough -t {table} {}", args.join(" ")))
    }
    async fn nft(&self, commands: &[serde_json::Value]) -> firewalld::Result<()> {
        self.record(format!(
            "nft {}",
            serde_json::Value::from(commands.to_vec())
        ))
    }
    async fn write_sysctl(&self, key: &str, value: &str) -> firewalld::Result<()> {
        self.record(format!("sysctl {key}={value}"))
    }
    async fn set_connection_zone(
        &self,
        uuid: &str,
        zone: &str,
        to_disk: bool,
    ) -> firewalld::Result<()> {
        let place = if to_disk { "disk" } else { "memory" };
        self.record(format!("nm.Update2 {uuid} zone={zone} {place}"))
    }
    async fn iptables(&self, args: &[String]) -> firewalld::Result<()> {
        self.record(format!("iptables {}", args.join(" ")))
    }
    async fn write_file(
        &self,
        path: &std::path::Path,
        content: Option<&str>,
        mode: u32,
    ) -> firewalld::Result<()> {
        match content {
            Some(text) => self.record(format!("write {} {mode:o} {text:?}", path.display())),
            None => self.record(format!("remove {}", path.display())),
        }
    }
}

/// A policy's rich rules, joined, for the record.
fn rules(e: &Entries) -> String {
    e.rich_rules.iter().cloned().collect::<Vec<_>>().join(",")
}
