//! The effects: reading firewalld's and the kernel's side into [`Facts`], and carrying out
//! [`Step`]s. [`Executor`] is the one narrow seam through which every forward/allow mutation goes
//! (firewalld over D-Bus, iptables through firewalld's direct passthrough), so it can join the
//! shared executor later without touching the planner.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use zbus::{proxy, OwnedObjectPath, OwnedVariant, Variant};

use super::model::Declared;
use super::network::Networks;
use super::plan::{
    Entries, Facts, Layer, Layers, Shape, Step, ALLOW_POLICY, FORWARD_POLICY, FROM_HOST_POLICY,
    HAIRPIN_CHAIN, POLICY_PRIORITY,
};
use crate::firewalld::proxy::Settings;
use crate::firewalld::{parse_version, Error, Firewalld};

/// Runtime zone calls forwards need (the shared proxies do not carry them).
#[proxy(
    interface = "org.fedoraproject.FirewallD1.zone",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait FwdZone {
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
    /// Adds a runtime rich rule.
    #[zbus(name = "addRichRule")]
    fn add_rich_rule(&self, zone: &str, rule: &str, timeout: i32) -> zbus::Result<String>;
    /// Removes a runtime rich rule.
    #[zbus(name = "removeRichRule")]
    fn remove_rich_rule(&self, zone: &str, rule: &str) -> zbus::Result<String>;
    /// A runtime zone's settings.
    #[zbus(name = "getZoneSettings2")]
    fn get_zone_settings2(&self, zone: &str) -> zbus::Result<Settings>;
}

/// Main-object calls.
#[proxy(
    interface = "org.fedoraproject.FirewallD1",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait FwdMain {
    /// The default zone.
    #[zbus(name = "getDefaultZone")]
    fn get_default_zone(&self) -> zbus::Result<String>;
    /// The services firewalld knows.
    #[zbus(name = "listServices")]
    fn list_services(&self) -> zbus::Result<Vec<String>>;
    /// Reloads the permanent configuration.
    #[zbus(name = "reload")]
    fn reload(&self) -> zbus::Result<()>;
}

/// Runtime policy calls (0.9.0).
#[proxy(
    interface = "org.fedoraproject.FirewallD1.policy",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait FwdPolicy {
    /// Runtime policies.
    #[zbus(name = "getPolicies")]
    fn get_policies(&self) -> zbus::Result<Vec<String>>;
    /// A runtime policy's settings.
    #[zbus(name = "getPolicySettings")]
    fn get_policy_settings(&self, policy: &str) -> zbus::Result<Settings>;
    /// Changes the keys given of a runtime policy.
    #[zbus(name = "setPolicySettings")]
    fn set_policy_settings(&self, policy: &str, settings: &Settings) -> zbus::Result<()>;
}

/// firewalld's direct interface: only `passthrough`, to reach iptables' `filter` table.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.direct",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait FwdDirect {
    /// Runs `iptables ARGS` (ipv = `ipv4`) inside firewalld and returns its output.
    #[zbus(name = "passthrough")]
    fn passthrough(&self, ipv: &str, args: &[String]) -> zbus::Result<String>;
}

/// The permanent configuration's lookups.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.config",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1/config"
)]
trait FwdConfig {
    /// A permanent zone's object.
    #[zbus(name = "getZoneByName")]
    fn get_zone_by_name(&self, zone: &str) -> zbus::Result<OwnedObjectPath>;
    /// A permanent policy's object.
    #[zbus(name = "getPolicyByName")]
    fn get_policy_by_name(&self, policy: &str) -> zbus::Result<OwnedObjectPath>;
    /// Names of the permanent policies.
    #[zbus(name = "getPolicyNames")]
    fn get_policy_names(&self) -> zbus::Result<Vec<String>>;
    /// Adds a permanent policy.
    #[zbus(name = "addPolicy")]
    fn add_policy(&self, policy: &str, settings: &Settings) -> zbus::Result<OwnedObjectPath>;
}

/// One permanent zone.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.config.zone",
    default_service = "org.fedoraproject.FirewallD1",
    assume_defaults = false
)]
trait FwdConfigZone {
    /// Its settings.
    #[zbus(name = "getSettings2")]
    fn get_settings2(&self) -> zbus::Result<Settings>;
    /// Adds a forward port.
    #[zbus(name = "addForwardPort")]
    fn add_forward_port(
        &self,
        port: &str,
        protocol: &str,
        toport: &str,
        toaddr: &str,
    ) -> zbus::Result<()>;
    /// Removes a forward port.
    #[zbus(name = "removeForwardPort")]
    fn remove_forward_port(
        &self,
        port: &str,
        protocol: &str,
        toport: &str,
        toaddr: &str,
    ) -> zbus::Result<()>;
    /// Adds a rich rule.
    #[zbus(name = "addRichRule")]
    fn add_rich_rule(&self, rule: &str) -> zbus::Result<()>;
    /// Removes a rich rule.
    #[zbus(name = "removeRichRule")]
    fn remove_rich_rule(&self, rule: &str) -> zbus::Result<()>;
}

/// One permanent policy.
#[proxy(
    interface = "org.fedoraproject.FirewallD1.config.policy",
    default_service = "org.fedoraproject.FirewallD1",
    assume_defaults = false
)]
trait FwdConfigPolicy {
    /// Its settings.
    #[zbus(name = "getSettings")]
    fn get_settings(&self) -> zbus::Result<Settings>;
    /// Changes the keys given.
    #[zbus(name = "update")]
    fn update(&self, settings: &Settings) -> zbus::Result<()>;
}

fn owned(v: Variant<'static>) -> Result<OwnedVariant, Error> {
    OwnedVariant::try_from(v).map_err(|e| Error::Protocol(e.to_string()))
}

fn strings(settings: &Settings, key: &str) -> BTreeSet<String> {
    settings
        .get(key)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<String>::try_from(v).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The entries of a zone's (`rules_key` = `rules_str`) or policy's (`rich_rules`) settings.
fn entries(settings: &Settings, rules_key: &str) -> Entries {
    let forward_ports = settings
        .get("forward_ports")
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<(String, String, String, String)>::try_from(v).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    Entries {
        forward_ports,
        rich_rules: strings(settings, rules_key),
        ingress_zones: strings(settings, "ingress_zones"),
    }
}

/// A policy's settings dict carrying `e`.
fn policy_settings(e: &Entries) -> Result<Settings, Error> {
    let mut s = Settings::new();
    s.insert(
        "forward_ports".into(),
        owned(Variant::from(
            e.forward_ports.iter().cloned().collect::<Vec<_>>(),
        ))?,
    );
    s.insert(
        "rich_rules".into(),
        owned(Variant::from(
            e.rich_rules.iter().cloned().collect::<Vec<_>>(),
        ))?,
    );
    s.insert(
        "ingress_zones".into(),
        owned(Variant::from(
            e.ingress_zones.iter().cloned().collect::<Vec<_>>(),
        ))?,
    );
    Ok(s)
}

fn call(what: &'static str) -> impl Fn(zbus::Error) -> Error {
    move |e| Error::from_call(what, e)
}

/// Reads firewalld's side of forwards and allows, and iptables' `filter` table.
pub struct Reader<'a> {
    fw: &'a Firewalld,
}

impl<'a> Reader<'a> {
    /// A reader on `fw`'s connection.
    pub fn new(fw: &'a Firewalld) -> Self {
        Reader { fw }
    }

    async fn runtime_policy(&self, name: &str) -> Result<Option<Entries>, Error> {
        let p = FwdPolicyProxy::new(self.fw.connection())
            .await
            .map_err(call("policy"))?;
        let names = p.get_policies().await.map_err(call("getPolicies"))?;
        if !names.iter().any(|n| n == name) {
            return Ok(None);
        }
        let s = p
            .get_policy_settings(name)
            .await
            .map_err(call("getPolicySettings"))?;
        Ok(Some(entries(&s, "rich_rules")))
    }

    async fn config_policy(
        &self,
        name: &str,
    ) -> Result<Option<FwdConfigPolicyProxy<'static>>, Error> {
        let c = FwdConfigProxy::new(self.fw.connection())
            .await
            .map_err(call("config"))?;
        let names = c.get_policy_names().await.map_err(call("getPolicyNames"))?;
        if !names.iter().any(|n| n == name) {
            return Ok(None);
        }
        let path = c
            .get_policy_by_name(name)
            .await
            .map_err(call("getPolicyByName"))?;
        let p = FwdConfigPolicyProxy::builder(self.fw.connection())
            .path(path)
            .build()
            .await
            .map_err(call("config.policy"))?;
        Ok(Some(p))
    }

    async fn config_zone(&self, zone: &str) -> Result<FwdConfigZoneProxy<'static>, Error> {
        let c = FwdConfigProxy::new(self.fw.connection())
            .await
            .map_err(call("config"))?;
        let path = c
            .get_zone_by_name(zone)
            .await
            .map_err(call("getZoneByName"))?;
        FwdConfigZoneProxy::builder(self.fw.connection())
            .path(path)
            .build()
            .await
            .map_err(call("config.zone"))
    }

    async fn policy_layers(&self, name: &str) -> Result<Layers, Error> {
        let permanent = match self.config_policy(name).await? {
            Some(p) => Some(entries(
                &p.get_settings()
                    .await
                    .map_err(call("config.policy.getSettings"))?,
                "rich_rules",
            )),
            None => None,
        };
        Ok(Layers {
            runtime: self.runtime_policy(name).await?,
            permanent,
        })
    }

    /// `iptables -t filter -S` through firewalld; `None` when firewalld cannot run it (no
    /// iptables on the host: then libvirt has no iptables rules to get past either).
    pub async fn iptables(&self) -> Option<String> {
        self.iptables_table("filter").await
    }

    /// `iptables -t TABLE -S` through firewalld.
    pub async fn iptables_table(&self, table: &str) -> Option<String> {
        let d = FwdDirectProxy::new(self.fw.connection()).await.ok()?;
        let args: Vec<String> = ["-t", table, "-S"].iter().map(|s| s.to_string()).collect();
        d.passthrough("ipv4", &args).await.ok()
    }

    /// The services firewalld knows (for validating `allow`).
    pub async fn services(&self) -> Result<BTreeSet<String>, Error> {
        let m = FwdMainProxy::new(self.fw.connection())
            .await
            .map_err(call("main"))?;
        Ok(m.list_services()
            .await
            .map_err(call("listServices"))?
            .into_iter()
            .collect())
    }

    /// Gathers the facts for `declared` given the recorded networks.
    pub async fn facts(&self, declared: &Declared, networks: Networks) -> Result<Facts, Error> {
        let m = FwdMainProxy::new(self.fw.connection())
            .await
            .map_err(call("main"))?;
        let (version_text, default_zone, policies) = tokio::try_join!(
            self.fw.version_text(),
            async { m.get_default_zone().await.map_err(call("getDefaultZone")) },
            self.fw.policies(),
        )?;
        let version = parse_version(&version_text).map_err(|e| Error::Protocol(e.to_string()))?;
        let has_policies = policies.is_some();
        let zone = match Shape::of(&version, &default_zone) {
            Shape::Zone(z) => {
                let rt = FwdZoneProxy::new(self.fw.connection())
                    .await
                    .map_err(call("zone"))?;
                let runtime = rt
                    .get_zone_settings2(&z)
                    .await
                    .map_err(call("getZoneSettings2"))?;
                let permanent = self
                    .config_zone(&z)
                    .await?
                    .get_settings2()
                    .await
                    .map_err(call("config.zone.getSettings2"))?;
                Layers {
                    runtime: Some(entries(&runtime, "rules_str")),
                    permanent: Some(entries(&permanent, "rules_str")),
                }
            }
            Shape::Policy => Layers::default(),
        };
        let (forward_policy, allow_policy, from_host_policy) = if has_policies {
            (
                self.policy_layers(FORWARD_POLICY).await?,
                self.policy_layers(ALLOW_POLICY).await?,
                self.policy_layers(FROM_HOST_POLICY).await?,
            )
        } else {
            (Layers::default(), Layers::default(), Layers::default())
        };
        let mut bridge_zones = BTreeMap::new();
        if !declared.allows.is_empty() {
            for rec in networks.networks.values() {
                if let Some(z) = self.fw.zone_of_interface(rec.bridge.as_str()).await? {
                    bridge_zones.insert(rec.bridge.to_string(), z);
                }
            }
        }
        Ok(Facts {
            version,
            default_zone,
            zone,
            forward_policy,
            allow_policy,
            from_host_policy,
            policies: has_policies,
            networks,
            bridge_zones,
            iptables: self.iptables().await,
            iptables_nat: if declared.forwards.iter().any(|f| f.hairpin) {
                self.iptables_table("nat").await
            } else {
                // Nothing to plan there unless a hairpin chain of ours is left over.
                self.iptables_table("nat")
                    .await
                    .filter(|l| l.lines().any(|l| l == format!("-N {HAIRPIN_CHAIN}")))
            },
        })
    }
}

/// Carries out one step. The only code that changes firewalld or iptables for forwards and allows.
pub trait Executor {
    /// Applies `step`.
    fn run(&self, step: &Step) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The executor talking to firewalld.
pub struct FirewalldExecutor<'a> {
    reader: Reader<'a>,
}

impl<'a> FirewalldExecutor<'a> {
    /// An executor on `fw`'s connection.
    pub fn new(fw: &'a Firewalld) -> Self {
        FirewalldExecutor {
            reader: Reader::new(fw),
        }
    }
}

impl Executor for FirewalldExecutor<'_> {
    async fn run(&self, step: &Step) -> Result<(), Error> {
        let conn = self.reader.fw.connection();
        match step {
            Step::ZoneForwardPort {
                layer: Layer::Runtime,
                zone,
                entry: (p, pr, tp, ta),
                add,
            } => {
                let z = FwdZoneProxy::new(conn).await.map_err(call("zone"))?;
                if *add {
                    z.add_forward_port(zone, p, pr, tp, ta, 0)
                        .await
                        .map_err(call("addForwardPort"))?;
                } else {
                    z.remove_forward_port(zone, p, pr, tp, ta)
                        .await
                        .map_err(call("removeForwardPort"))?;
                }
            }
            Step::ZoneForwardPort {
                layer: Layer::Permanent,
                zone,
                entry: (p, pr, tp, ta),
                add,
            } => {
                let z = self.reader.config_zone(zone).await?;
                if *add {
                    z.add_forward_port(p, pr, tp, ta)
                        .await
                        .map_err(call("config.zone.addForwardPort"))?;
                } else {
                    z.remove_forward_port(p, pr, tp, ta)
                        .await
                        .map_err(call("config.zone.removeForwardPort"))?;
                }
            }
            Step::ZoneRichRule {
                layer: Layer::Runtime,
                zone,
                rule,
                add,
            } => {
                let z = FwdZoneProxy::new(conn).await.map_err(call("zone"))?;
                if *add {
                    z.add_rich_rule(zone, rule, 0)
                        .await
                        .map_err(call("addRichRule"))?;
                } else {
                    z.remove_rich_rule(zone, rule)
                        .await
                        .map_err(call("removeRichRule"))?;
                }
            }
            Step::ZoneRichRule {
                layer: Layer::Permanent,
                zone,
                rule,
                add,
            } => {
                let z = self.reader.config_zone(zone).await?;
                if *add {
                    z.add_rich_rule(rule)
                        .await
                        .map_err(call("config.zone.addRichRule"))?;
                } else {
                    z.remove_rich_rule(rule)
                        .await
                        .map_err(call("config.zone.removeRichRule"))?;
                }
            }
            Step::CreatePolicy {
                name,
                ingress,
                egress,
                entries,
            } => {
                let mut s = policy_settings(entries)?;
                s.insert(
                    "ingress_zones".into(),
                    owned(Variant::from(ingress.clone()))?,
                );
                s.insert("egress_zones".into(), owned(Variant::from(egress.clone()))?);
                s.insert("priority".into(), owned(Variant::from(POLICY_PRIORITY))?);
                s.insert(
                    "target".into(),
                    owned(Variant::from("CONTINUE".to_string()))?,
                );
                s.insert(
                    "description".into(),
                    owned(Variant::from(
                        "Managed by virtzone (virtzone forward/allow); changes here are overwritten."
                            .to_string(),
                    ))?,
                );
                let c = FwdConfigProxy::new(conn).await.map_err(call("config"))?;
                c.add_policy(name, &s).await.map_err(call("addPolicy"))?;
            }
            Step::Reload => {
                let m = FwdMainProxy::new(conn).await.map_err(call("main"))?;
                m.reload().await.map_err(call("reload"))?;
            }
            Step::SetPolicy {
                layer: Layer::Runtime,
                name,
                entries,
                ..
            } => {
                let p = FwdPolicyProxy::new(conn).await.map_err(call("policy"))?;
                p.set_policy_settings(name, &policy_settings(entries)?)
                    .await
                    .map_err(call("setPolicySettings"))?;
            }
            Step::SetPolicy {
                layer: Layer::Permanent,
                name,
                entries,
                ..
            } => {
                let p = self
                    .reader
                    .config_policy(name)
                    .await?
                    .ok_or_else(|| Error::Firewalld {
                        code: crate::firewalld::ErrorCode::InvalidPolicy,
                        detail: name.clone(),
                    })?;
                p.update(&policy_settings(entries)?)
                    .await
                    .map_err(call("config.policy.update"))?;
            }
            Step::Iptables { table, args } => {
                let d = FwdDirectProxy::new(conn).await.map_err(call("direct"))?;
                let mut all = vec!["-t".to_string(), table.clone()];
                all.extend(args.iter().cloned());
                d.passthrough("ipv4", &all)
                    .await
                    .map_err(call("direct.passthrough"))?;
            }
        }
        Ok(())
    }
}

/// Runs `steps` in order; on a failure undoes the ones that ran, newest first, and returns the
/// error. Returns how many ran.
pub async fn execute(exec: &impl Executor, steps: &[Step]) -> Result<usize, Error> {
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = exec.run(step).await {
            for done in steps[..i].iter().rev() {
                if let Some(inverse) = done.inverse() {
                    if let Err(undo) = exec.run(&inverse).await {
                        tracing::warn!("cannot undo {done:?}: {undo}");
                    }
                }
            }
            return Err(e);
        }
    }
    Ok(steps.len())
}

/// How many plan/execute rounds one convergence may take: a round ending in a reload is followed
/// by one that plans against the reloaded firewall.
const ROUNDS: usize = 3;
/// How long to wait after a reload for libvirt to rebuild its chains (it does so on `Reloaded`).
const LIBVIRT_REBUILD: Duration = Duration::from_secs(10);

/// Brings firewalld and iptables to `declared` (removing `gone`'s entries): gather, plan, execute,
/// until nothing is left to do. Returns the steps carried out.
pub async fn converge(
    fw: &Firewalld,
    declared: &Declared,
    gone: &[super::model::Forward],
    networks: &Networks,
) -> Result<usize, super::ForwardError> {
    let reader = Reader::new(fw);
    let exec = FirewalldExecutor::new(fw);
    let mut total = 0;
    for _ in 0..ROUNDS {
        let facts = reader.facts(declared, networks.clone()).await?;
        let steps = super::plan::plan(declared, gone, &facts)
            .map_err(|r| super::ForwardError::Refused(r.0))?;
        if steps.is_empty() {
            return Ok(total);
        }
        total += execute(&exec, &steps).await?;
        if steps.contains(&Step::Reload) && !super::plan::accepts(declared, networks).is_empty() {
            wait_for_libvirt(&reader).await;
        }
    }
    Ok(total)
}

/// Whether libvirt's iptables chains exist (they do while a NAT network runs with libvirt's
/// iptables firewall backend).
pub async fn libvirt_chains_present(fw: &Firewalld) -> bool {
    Reader::new(fw)
        .iptables()
        .await
        .is_some_and(|l| l.lines().any(|l| l == "-N LIBVIRT_FWI"))
}

/// After a reload, polls (with a deadline) until libvirt's `LIBVIRT_FWI` is back, so the accepts
/// are planned after libvirt's rebuild rather than wiped by it. The daemon re-checks on every
/// ruleset change anyway; this keeps the CLI alone from racing libvirt.
async fn wait_for_libvirt(reader: &Reader<'_>) {
    let start = Instant::now();
    while start.elapsed() < LIBVIRT_REBUILD {
        if reader
            .iptables()
            .await
            .is_some_and(|l| l.lines().any(|l| l == "-N LIBVIRT_FWI"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
