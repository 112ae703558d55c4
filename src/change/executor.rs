//! Applies a [`Plan`] to firewalld, and on failure applies the inverse of every step that succeeded,
//! newest first. This module is the only code that calls firewalld's mutating D-Bus methods (see
//! [`Mutations`] and its implementation for [`Live`]).

use std::fmt;

use crate::firewalld::proxy::{
    ConfigProxy, DirectProxy, PolicyProxy, RuntimeProxy, ZoneProxy, ZoneTuple,
};
use crate::firewalld::{
    self, Capabilities, Entries, Error, Firewalld, ForwardPortEntry, OwnPolicy,
};
use crate::names::{BridgeName, ZoneName};
use crate::zone::{Policy, Settings, Zone};

pub use super::mutations::Mutations;
use super::step::{Plan, Step};

/// A plan that failed part-way, after the executor rolled back what had succeeded.
#[derive(Debug, thiserror::Error)]
pub struct ExecError {
    /// The step firewalld refused.
    pub step: Step,
    /// firewalld's error.
    pub error: Error,
    /// How many steps had succeeded (and were undone).
    pub undone: usize,
    /// Inverse steps that failed too, said in full.
    pub rollback_failures: Vec<String>,
}

impl ExecError {
    /// What happened to the steps before the failing one.
    pub fn rollback_summary(&self) -> String {
        match (self.undone, self.rollback_failures.is_empty()) {
            (0, _) => "nothing was changed".to_string(),
            (_, true) => "removed what this run had added".to_string(),
            (_, false) => format!(
                "rolling back failed too: {}",
                self.rollback_failures.join("; ")
            ),
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.error.is_no_answer() {
            // Not a refusal: firewalld may still carry the call out once it answers again.
            return write!(
                f,
                "{} while virtzone tried to {}; {}",
                self.error,
                self.step,
                self.rollback_summary()
            );
        }
        match self.step {
            Step::Reload => write!(
                f,
                "firewalld failed to reload ({}); {}, and firewalld keeps running its previous configuration",
                self.error,
                self.rollback_summary()
            ),
            Step::Sysctl { .. }
            | Step::LocalnetGuard { .. }
            | Step::SetConnectionZone { .. }
            | Step::IptablesRule { .. }
            | Step::WriteFile { .. }
            | Step::NftAddTable { .. } => write!(
                f,
                "could not {}: {}; {}",
                self.step,
                self.error,
                self.rollback_summary()
            ),
            _ => write!(
                f,
                "firewalld refused to {}: {}; {}",
                self.step,
                self.error,
                self.rollback_summary()
            ),
        }
    }
}

/// The steps a successful run applied, so that a caller whose own follow-up fails (e.g. writing the
/// state file) can undo them with [`Executor::undo`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The steps, in the order applied.
    pub steps: Vec<Step>,
}

/// Applies plans through `M`.
#[derive(Debug)]
pub struct Executor<'m, M: Mutations> {
    m: &'m M,
}

impl<'m, M: Mutations> Executor<'m, M> {
    /// An executor over `m`.
    pub fn new(m: &'m M) -> Self {
        Executor { m }
    }

    async fn apply(&self, step: &Step) -> firewalld::Result<()> {
        let m = self.m;
        match step {
            Step::ChangeZoneOfInterface {
                zone, interface, ..
            } => m.change_zone_of_interface(zone, interface).await,
            Step::RemoveInterface { zone, interface } => m.remove_interface(zone, interface).await,
            Step::AddPermanentInterface { zone, interface } => {
                m.add_permanent_interface(zone, interface).await
            }
            Step::RemovePermanentInterface { zone, interface } => {
                m.remove_permanent_interface(zone, interface).await
            }
            Step::AddZone(z) => m.add_zone(z).await,
            Step::AddPolicy(p) => m.add_policy(p).await,
            Step::UpdateZone { zone, .. } => m.update_zone(zone).await,
            Step::RemoveZone(z) => m.remove_zone(&z.name).await,
            Step::RemovePolicy(p) => m.remove_policy(&p.name).await,
            Step::Reload => m.reload().await,
            Step::AddForwardPort { zone, entry } => m.add_forward_port(zone, entry).await,
            Step::RemoveForwardPort { zone, entry } => m.remove_forward_port(zone, entry).await,
            Step::AddPermanentForwardPort { zone, entry } => {
                m.add_permanent_forward_port(zone, entry).await
            }
            Step::RemovePermanentForwardPort { zone, entry } => {
                m.remove_permanent_forward_port(zone, entry).await
            }
            Step::AddRichRule { zone, rule } => m.add_rich_rule(zone, rule).await,
            Step::RemoveRichRule { zone, rule } => m.remove_rich_rule(zone, rule).await,
            Step::AddPermanentRichRule { zone, rule } => {
                m.add_permanent_rich_rule(zone, rule).await
            }
            Step::RemovePermanentRichRule { zone, rule } => {
                m.remove_permanent_rich_rule(zone, rule).await
            }
            Step::AddOwnPolicy(p) => m.add_own_policy(p).await,
            Step::RemoveOwnPolicy(p) => m.remove_policy(&p.name).await,
            Step::SetPolicyEntries { name, entries, .. } => {
                m.set_policy_entries(name, entries).await
            }
            Step::SetPermanentPolicyEntries { name, entries, .. } => {
                m.set_permanent_policy_entries(name, entries).await
            }
            Step::Iptables { table, args } => m.passthrough(table, args).await,
            Step::NftInsertRules {
                family,
                table,
                chain,
                rules,
            } => {
                let cmds: Vec<serde_json::Value> = rules
                    .iter()
                    .map(|r| {
                        serde_json::json!({"insert": {"rule": {
                            "family": family, "table": table, "chain": chain,
                            "expr": r.expr, "comment": r.comment}}})
                    })
                    .collect();
                m.nft(&cmds).await
            }
            Step::NftDeleteRules {
                family,
                table,
                chain,
                handles,
            } => {
                let cmds: Vec<serde_json::Value> = handles
                    .iter()
                    .map(|h| {
                        serde_json::json!({"delete": {"rule": {
                            "family": family, "table": table, "chain": chain, "handle": h,
                            // The crate's schema wants statements; nft ignores them for a delete.
                            "expr": []}}})
                    })
                    .collect();
                m.nft(&cmds).await
            }
            Step::Sysctl { key, value, .. } => m.write_sysctl(key, value).await,
            Step::LocalnetGuard { present } => {
                m.nft(&crate::host::localnet_guard_commands(*present)).await
            }
            Step::OwnNat { masquerades, dnats } => {
                m.nft(&crate::forward::masquerade::commands(masquerades, dnats))
                    .await
            }
            Step::SetConnectionZone {
                uuid,
                zone,
                to_disk,
                ..
            } => m.set_connection_zone(uuid, zone, *to_disk).await,
            Step::IptablesRule {
                chain,
                rule,
                insert,
            } => {
                let op = if *insert { "-I" } else { "-D" };
                let mut args = vec![op.to_string(), chain.clone()];
                args.extend(rule.iter().cloned());
                m.iptables(&args).await
            }
            Step::WriteFile {
                path,
                content,
                mode,
                ..
            } => m.write_file(path, content.as_deref(), *mode).await,
            Step::NftAddTable { family, name } => {
                m.nft(&[serde_json::json!({"add": {"table": {"family": family, "name": name}}})])
                    .await
            }
        }
    }

    /// Applies `plan` in order. On the first failure, the inverses of the steps that succeeded are
    /// applied newest first, and the error says what failed and how the rollback went.
    pub async fn run(&self, plan: &Plan) -> Result<Applied, ExecError> {
        let mut done: Vec<Step> = Vec::new();
        for step in &plan.steps {
            if let Err(error) = self.apply(step).await {
                let undone = done.len();
                let rollback_failures = self.undo(Applied { steps: done }).await;
                return Err(ExecError {
                    step: step.clone(),
                    error,
                    undone,
                    rollback_failures,
                });
            }
            done.push(step.clone());
        }
        Ok(Applied { steps: done })
    }

    /// Undoes applied steps, newest first; failures are collected, not hidden. When permanent changes
    /// were undone after a reload had made them live, one more reload makes the undo live too.
    pub async fn undo(&self, applied: Applied) -> Vec<String> {
        let mut failures = Vec::new();
        let reloaded = applied.steps.contains(&Step::Reload);
        let mut permanent_undone = false;
        for step in applied.steps.iter().rev() {
            let Some(inverse) = step.inverse() else {
                continue;
            };
            match self.apply(&inverse).await {
                Ok(()) => permanent_undone |= inverse.is_permanent(),
                Err(e) => failures.push(format!("could not {inverse}: {e}")),
            }
        }
        if reloaded && permanent_undone {
            if let Err(e) = self.m.reload().await {
                failures.push(format!("could not reload: {e}"));
            }
        }
        failures
    }

    /// Applies independent steps without rollback (a reconcile re-applying bindings: one failure must
    /// not undo the others), at most `in_flight` at a time, pipelined on one connection (firewalld
    /// answers in order). Returns each step with its result, in completion order.
    pub async fn apply_each(
        &self,
        steps: &[Step],
        in_flight: usize,
    ) -> Vec<(Step, firewalld::Result<()>)> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(steps.iter().cloned())
            .map(|step| async move {
                let result = self.apply(&step).await;
                (step, result)
            })
            .buffer_unordered(in_flight.max(1))
            .collect()
            .await
    }
}

/// The live firewalld, as [`Mutations`]: what the executor calls on a real host.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    fw: &'a Firewalld,
    /// Whether firewalld has the dict API (`addZone2`, 0.9.0); older ones take a 16-field tuple.
    dict_api: bool,
}

impl<'a> Live<'a> {
    /// The live client for a firewalld with `caps` (unknown: assume a current firewalld).
    pub fn new(fw: &'a Firewalld, caps: Option<Capabilities>) -> Self {
        Live {
            fw,
            dict_api: caps.is_none_or(|c| c.dict_api),
        }
    }
}

impl Mutations for Live<'_> {
    async fn change_zone_of_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.fw
            .change_zone_of_interface(zone.as_str(), interface.as_str())
            .await
    }

    async fn remove_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.fw
            .remove_interface(zone.as_str(), interface.as_str())
            .await
    }

    async fn add_permanent_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(zone.as_str())
            .await?
            .add_interface(interface.as_str())
            .await
            .map_err(|e| Error::from_call("config.zone.addInterface", e))
    }

    async fn remove_permanent_interface(
        &self,
        zone: &ZoneName,
        interface: &BridgeName,
    ) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(zone.as_str())
            .await?
            .remove_interface(interface.as_str())
            .await
            .map_err(|e| Error::from_call("config.zone.removeInterface", e))
    }

    async fn add_zone(&self, zone: &Zone) -> firewalld::Result<()> {
        let config = self.fw.proxy::<ConfigProxy<'_>>("addZone2").await?;
        let settings = zone.to_settings();
        if self.dict_api {
            config
                .add_zone2(&zone.name, &settings)
                .await
                .map_err(|e| Error::from_call("addZone2", e))?;
        } else {
            config
                .add_zone(&zone.name, &zone_tuple(&settings)?)
                .await
                .map_err(|e| Error::from_call("addZone", e))?;
        }
        Ok(())
    }

    async fn add_policy(&self, policy: &Policy) -> firewalld::Result<()> {
        let config = self.fw.proxy::<ConfigProxy<'_>>("addPolicy").await?;
        config
            .add_policy(&policy.name, &policy.to_settings())
            .await
            .map_err(|e| Error::from_call("addPolicy", e))?;
        Ok(())
    }

    async fn update_zone(&self, zone: &Zone) -> firewalld::Result<()> {
        let mut settings = zone.to_settings();
        // update2 changes only the keys given: leaving these out keeps the zone's bindings.
        settings.remove("interfaces");
        settings.remove("sources");
        self.fw
            .existing_config_zone(&zone.name)
            .await?
            .update2(&settings)
            .await
            .map_err(|e| Error::from_call("config.zone.update2", e))
    }

    async fn remove_zone(&self, name: &str) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(name)
            .await?
            .remove()
            .await
            .map_err(|e| Error::from_call("config.zone.remove", e))
    }

    async fn remove_policy(&self, name: &str) -> firewalld::Result<()> {
        self.fw
            .existing_config_policy(name)
            .await?
            .remove()
            .await
            .map_err(|e| Error::from_call("config.policy.remove", e))
    }

    async fn reload(&self) -> firewalld::Result<()> {
        self.fw.reload().await
    }

    async fn add_forward_port(
        &self,
        zone: &str,
        (port, proto, toport, toaddr): &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        let p = self.fw.proxy::<ZoneProxy<'_>>("addForwardPort").await?;
        p.add_forward_port(zone, port, proto, toport, toaddr, 0)
            .await
            .map_err(|e| Error::from_call("addForwardPort", e))?;
        Ok(())
    }

    async fn remove_forward_port(
        &self,
        zone: &str,
        (port, proto, toport, toaddr): &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        let p = self.fw.proxy::<ZoneProxy<'_>>("removeForwardPort").await?;
        p.remove_forward_port(zone, port, proto, toport, toaddr)
            .await
            .map_err(|e| Error::from_call("removeForwardPort", e))?;
        Ok(())
    }

    async fn add_permanent_forward_port(
        &self,
        zone: &str,
        (port, proto, toport, toaddr): &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(zone)
            .await?
            .add_forward_port(port, proto, toport, toaddr)
            .await
            .map_err(|e| Error::from_call("config.zone.addForwardPort", e))
    }

    async fn remove_permanent_forward_port(
        &self,
        zone: &str,
        (port, proto, toport, toaddr): &ForwardPortEntry,
    ) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(zone)
            .await?
            .remove_forward_port(port, proto, toport, toaddr)
            .await
            .map_err(|e| Error::from_call("config.zone.removeForwardPort", e))
    }

    async fn add_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        let p = self.fw.proxy::<ZoneProxy<'_>>("addRichRule").await?;
        p.add_rich_rule(zone, rule, 0)
            .await
            .map_err(|e| Error::from_call("addRichRule", e))?;
        Ok(())
    }

    async fn remove_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        let p = self.fw.proxy::<ZoneProxy<'_>>("removeRichRule").await?;
        p.remove_rich_rule(zone, rule)
            .await
            .map_err(|e| Error::from_call("removeRichRule", e))?;
        Ok(())
    }

    async fn add_permanent_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(zone)
            .await?
            .add_rich_rule(rule)
            .await
            .map_err(|e| Error::from_call("config.zone.addRichRule", e))
    }

    async fn remove_permanent_rich_rule(&self, zone: &str, rule: &str) -> firewalld::Result<()> {
        self.fw
            .existing_config_zone(zone)
            .await?
            .remove_rich_rule(rule)
            .await
            .map_err(|e| Error::from_call("config.zone.removeRichRule", e))
    }

    async fn add_own_policy(&self, policy: &OwnPolicy) -> firewalld::Result<()> {
        let config = self.fw.proxy::<ConfigProxy<'_>>("addPolicy").await?;
        config
            .add_policy(&policy.name, &policy.to_settings()?)
            .await
            .map_err(|e| Error::from_call("addPolicy", e))?;
        Ok(())
    }

    async fn set_policy_entries(&self, name: &str, entries: &Entries) -> firewalld::Result<()> {
        let p = self
            .fw
            .proxy::<PolicyProxy<'_>>("setPolicySettings")
            .await?;
        p.set_policy_settings(name, &entries.to_policy_settings()?)
            .await
            .map_err(|e| Error::from_call("setPolicySettings", e))
    }

    async fn set_permanent_policy_entries(
        &self,
        name: &str,
        entries: &Entries,
    ) -> firewalld::Result<()> {
        self.fw
            .existing_config_policy(name)
            .await?
            .update(&entries.to_policy_settings()?)
            .await
            .map_err(|e| Error::from_call("config.policy.update", e))
    }

    async fn passthrough(&self, table: &str, args: &[String]) -> firewalld::Result<()> {
        let d = self.fw.proxy::<DirectProxy<'_>>("direct").await?;
        let mut all = vec!["-t".to_string(), table.to_string()];
        all.extend(args.iter().cloned());
        d.passthrough("ipv4", &all)
            .await
            .map_err(|e| Error::from_call("direct.passthrough", e))?;
        Ok(())
    }

    async fn nft(&self, commands: &[serde_json::Value]) -> firewalld::Result<()> {
        local::nft(commands).await
    }

    async fn write_sysctl(&self, key: &str, value: &str) -> firewalld::Result<()> {
        local::write_sysctl(key, value)
    }

    async fn set_connection_zone(
        &self,
        uuid: &str,
        zone: &str,
        to_disk: bool,
    ) -> firewalld::Result<()> {
        crate::networkmanager::NetworkManager::new(self.fw.connection())
            .set_zone(uuid, zone, to_disk)
            .await
            .map_err(|e| Error::Local(e.to_string()))
    }

    async fn iptables(&self, args: &[String]) -> firewalld::Result<()> {
        local::iptables(args).await
    }

    async fn write_file(
        &self,
        path: &std::path::Path,
        content: Option<&str>,
        mode: u32,
    ) -> firewalld::Result<()> {
        local::write_file(path, content, mode).await
    }
}

impl Firewalld {
    /// Binds `interface` to `zone` at runtime, moving it from any other zone.
    async fn change_zone_of_interface(&self, zone: &str, interface: &str) -> firewalld::Result<()> {
        let p = self.proxy::<ZoneProxy<'_>>("changeZoneOfInterface").await?;
        p.change_zone_of_interface(zone, interface)
            .await
            .map_err(|e| Error::from_call("changeZoneOfInterface", e))?;
        Ok(())
    }

    /// Unbinds `interface` at runtime from `zone`.
    async fn remove_interface(&self, zone: &str, interface: &str) -> firewalld::Result<()> {
        let p = self.proxy::<ZoneProxy<'_>>("removeInterface").await?;
        p.remove_interface(zone, interface)
            .await
            .map_err(|e| Error::from_call("removeInterface", e))?;
        Ok(())
    }

    /// Reloads firewalld's permanent configuration.
    async fn reload(&self) -> firewalld::Result<()> {
        let p = self.proxy::<RuntimeProxy<'_>>("reload").await?;
        p.reload().await.map_err(|e| Error::from_call("reload", e))
    }
}

/// The pre-0.9.0 `addZone` tuple, from a settings dict.
fn zone_tuple(settings: &Settings) -> firewalld::Result<ZoneTuple> {
    fn get<T: TryFrom<zbus::OwnedVariant> + Default>(
        s: &Settings,
        key: &str,
    ) -> firewalld::Result<T> {
        match s.get(key) {
            None => Ok(T::default()),
            Some(v) => v
                .try_clone()
                .ok()
                .and_then(|v| T::try_from(v).ok())
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "internal error: settings key {key} has an unexpected type"
                    ))
                }),
        }
    }
    Ok((
        get(settings, "version")?,
        get(settings, "short")?,
        get(settings, "description")?,
        false,
        get(settings, "target")?,
        get(settings, "services")?,
        get(settings, "ports")?,
        get(settings, "icmp_blocks")?,
        get(settings, "masquerade")?,
        get(settings, "forward_ports")?,
        get(settings, "interfaces")?,
        get(settings, "sources")?,
        get(settings, "rules_str")?,
        get(settings, "protocols")?,
        get(settings, "source_ports")?,
        get(settings, "icmp_block_inversion")?,
    ))
}

pub mod local;

#[cfg(test)]
pub mod fake;
pub use local::Local;

#[cfg(test)]
mod tests;
