//! The facts a command needs from firewalld, gathered once through the read side of the seam
//! ([`Reads`]: one connection in the live implementation), concurrently, typed.
//!
//! Every read asks what exists first and then reads only that: asking firewalld for an object it does
//! not have makes it log `ERROR: INVALID_ZONE` (or `INVALID_POLICY`), the very lines admins search
//! for when guest networking breaks. virtzone must never be their source.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;

use super::reads::Reads;
use crate::firewalld::{
    parse_version, Capabilities, Definition, Error, Firewalld, FirewalldFacts, Object, Result,
    Running, State,
};
use crate::names::BridgeName;
use crate::zone::{self, ObjectKind};

/// What to gather beyond firewalld's identity and its runtime and permanent object names.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The permanent copies of the shipped zones and policies that exist (status, install, uninstall).
    pub shipped: bool,
    /// The zones every permanent policy names (uninstall: a zone removed under a policy that names it
    /// keeps firewalld from starting).
    pub policy_zones: bool,
    /// The permanent zone of this interface (attach/detach `--permanent`).
    pub permanent_interface: Option<BridgeName>,
}

impl Scope {
    /// What `status`, `install` and `uninstall` read.
    pub fn shipped() -> Self {
        Scope {
            shipped: true,
            ..Scope::default()
        }
    }
}

/// Everything a command knows about firewalld. Plain data: the planners decide from it alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Presence, version, state, backend, capabilities, runtime zones and policies.
    pub firewalld: FirewalldFacts,
    /// Permanent zones.
    pub permanent_zones: BTreeSet<String>,
    /// Permanent policies (empty before 0.9.0).
    pub permanent_policies: BTreeSet<String>,
    /// Runtime interface → zone.
    pub interfaces: BTreeMap<String, String>,
    /// Permanent zone of [`Scope::permanent_interface`], when bound.
    pub permanent_zone_of_interface: Option<String>,
    /// Permanent shipped objects that exist, by kind and name ([`Scope::shipped`]).
    pub shipped: BTreeMap<(ObjectKind, String), Object>,
    /// Permanent policy → the zones it names in ingress or egress ([`Scope::policy_zones`]); a policy
    /// whose settings cannot be read is listed with no zones.
    pub policy_zones: BTreeMap<String, BTreeSet<String>>,
}

impl Snapshot {
    /// A snapshot of a host where firewalld does not answer.
    pub fn not_running(no_bus: bool) -> Self {
        Snapshot {
            firewalld: FirewalldFacts::NotRunning { no_bus },
            permanent_zones: BTreeSet::new(),
            permanent_policies: BTreeSet::new(),
            interfaces: BTreeMap::new(),
            permanent_zone_of_interface: None,
            shipped: BTreeMap::new(),
            policy_zones: BTreeMap::new(),
        }
    }

    /// The facts of a running firewalld, `None` when it is not running.
    pub fn running(&self) -> Option<&Running> {
        match &self.firewalld {
            FirewalldFacts::Running(r) => Some(r),
            FirewalldFacts::NotRunning { .. } => None,
        }
    }

    /// What the running firewalld can do, `None` when it is not running.
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.running().map(|r| r.capabilities)
    }

    /// The runtime zone of `interface`, `None` when unbound.
    pub fn zone_of_interface(&self, interface: &str) -> Option<&str> {
        self.interfaces.get(interface).map(String::as_str)
    }

    /// Runtime and permanent interfaces of `zone` (the permanent ones only when its settings were
    /// read, i.e. for shipped zones).
    pub fn interfaces_of(&self, zone: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .interfaces
            .iter()
            .filter(|(_, z)| *z == zone)
            .map(|(i, _)| i.clone())
            .collect();
        if let Some(Object {
            body: Ok(Definition::Zone(z)),
            ..
        }) = self.shipped.get(&(ObjectKind::Zone, zone.to_string()))
        {
            out.extend(z.interfaces.iter().cloned());
        }
        out
    }

    /// Gathers the snapshot on `fw`'s connection. firewalld not running is a fact, not an error. A
    /// FAILED firewalld may refuse some reads: those become empty, since its state is the fact that
    /// matters then.
    pub async fn gather(fw: &impl Reads, scope: &Scope) -> Result<Snapshot> {
        let facts = firewalld_facts(fw).await?;
        let FirewalldFacts::Running(r) = &facts else {
            return Ok(Snapshot {
                firewalld: facts,
                ..Snapshot::not_running(false)
            });
        };
        let tolerate = r.state == State::Failed;
        fn lenient<T: Default>(tolerate: bool) -> impl Fn(Error) -> Result<T> {
            move |e| if tolerate { Ok(T::default()) } else { Err(e) }
        }
        let permanent_interface = async {
            match &scope.permanent_interface {
                Some(i) => fw.permanent_zone_of_interface(i.as_str()).await,
                None => Ok(None),
            }
        };
        let (zones, policies, active, perm_iface) = tokio::join!(
            fw.permanent_zones(),
            fw.permanent_policies(),
            fw.interface_zones(),
            permanent_interface,
        );
        let mut snap = Snapshot {
            permanent_zones: zones.or_else(lenient(tolerate))?,
            permanent_policies: policies
                .map(Option::unwrap_or_default)
                .or_else(lenient(tolerate))?,
            interfaces: active.or_else(lenient(tolerate))?,
            permanent_zone_of_interface: perm_iface.or_else(lenient(tolerate))?,
            firewalld: facts.clone(),
            shipped: BTreeMap::new(),
            policy_zones: BTreeMap::new(),
        };
        let dict_api = r.capabilities.dict_api;
        if scope.shipped {
            let wanted: Vec<(ObjectKind, &str)> = zone::SHIPPED
                .iter()
                .filter(|(kind, name)| match kind {
                    ObjectKind::Zone => snap.permanent_zones.contains(*name),
                    ObjectKind::Policy => snap.permanent_policies.contains(*name),
                })
                .map(|&(kind, name)| (kind, name))
                .collect();
            let read = join_all(
                wanted
                    .iter()
                    .map(|&(kind, name)| fw.permanent_object(kind, name, dict_api)),
            )
            .await;
            for ((kind, name), object) in wanted.into_iter().zip(read) {
                match object {
                    Ok(o) => {
                        snap.shipped.insert((kind, name.to_string()), o);
                    }
                    Err(_) if tolerate => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if scope.policy_zones && dict_api {
            let names: Vec<String> = snap.permanent_policies.iter().cloned().collect();
            let read = join_all(
                names
                    .iter()
                    .map(|name| fw.permanent_object(ObjectKind::Policy, name, true)),
            )
            .await;
            for (name, object) in names.into_iter().zip(read) {
                let zones = match object {
                    Ok(Object {
                        body: Ok(Definition::Policy(p)),
                        ..
                    }) => p.ingress_zones.into_iter().chain(p.egress_zones).collect(),
                    Ok(_) => BTreeSet::new(),
                    Err(_) if tolerate => BTreeSet::new(),
                    Err(e) => return Err(e),
                };
                snap.policy_zones.insert(name, zones);
            }
        }
        Ok(snap)
    }
}

/// firewalld's identity: whether it runs (the one "is firewalld running", [`Reads::is_running`]),
/// its version, state, backend, capabilities and runtime zone and policy names. What the pre-check
/// and `status` need, read concurrently.
///
/// A firewalld in FAILED state still answers, but some reads may fail: those become empty sets
/// rather than errors, since the state itself is the fact that matters then.
pub async fn firewalld_facts(fw: &impl Reads) -> Result<FirewalldFacts> {
    if !fw.is_running().await? {
        return Ok(FirewalldFacts::NotRunning { no_bus: false });
    }
    let (version_text, state, backend) =
        tokio::try_join!(fw.version_text(), fw.state(), fw.backend())?;
    let version = parse_version(&version_text).map_err(|e| Error::Protocol(e.to_string()))?;
    let (zones, policies) = tokio::join!(fw.zones(), fw.policies());
    let tolerate = state == State::Failed;
    let zones = match zones {
        Ok(z) => z,
        Err(_) if tolerate => BTreeSet::new(),
        Err(e) => return Err(e),
    };
    let policies = match policies {
        Ok(p) => p,
        Err(_) if tolerate => Some(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    Ok(FirewalldFacts::Running(Running {
        capabilities: Capabilities::of(&version),
        version,
        version_text,
        state,
        backend,
        zones,
        policies,
    }))
}

/// [`firewalld_facts`] from the system bus, a missing bus being "not running".
pub async fn gather_facts() -> Result<FirewalldFacts> {
    match Firewalld::connect().await {
        Ok(fw) => firewalld_facts(&fw).await,
        Err(Error::NoBus(_)) => Ok(FirewalldFacts::NotRunning { no_bus: true }),
        Err(e) => Err(e),
    }
}

/// Connects and gathers a snapshot; a host without a system bus is a snapshot of "not running".
pub async fn connect_and_gather(scope: &Scope) -> Result<(Option<Firewalld>, Snapshot)> {
    match Firewalld::connect().await {
        Ok(fw) => {
            let snap = Snapshot::gather(&fw, scope).await?;
            Ok((Some(fw), snap))
        }
        Err(Error::NoBus(_)) => Ok((None, Snapshot::not_running(true))),
        Err(e) => Err(e),
    }
}

/// Snapshots for the planners' table tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use crate::firewalld::{parse_version, Backend, Capabilities};

    /// A running firewalld `version` with runtime and permanent `zones` and the shipped policies, the
    /// runtime bindings `interfaces` (interface, zone) and nothing else.
    pub fn running(version: &str, zones: &[&str], interfaces: &[(&str, &str)]) -> Snapshot {
        let v = parse_version(version).unwrap();
        let zones: BTreeSet<String> = zones.iter().map(|z| z.to_string()).collect();
        Snapshot {
            firewalld: FirewalldFacts::Running(Running {
                capabilities: Capabilities::of(&v),
                version: v,
                version_text: version.into(),
                state: State::Running,
                backend: Backend::Nftables,
                zones: zones.clone(),
                policies: Some(BTreeSet::new()),
            }),
            permanent_zones: zones,
            interfaces: interfaces
                .iter()
                .map(|(i, z)| (i.to_string(), z.to_string()))
                .collect(),
            ..Snapshot::not_running(false)
        }
    }
}
