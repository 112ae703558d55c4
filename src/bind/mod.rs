//! Binding bridges to zones: the decisions (`plan`), the record of what virtzone bound (kept in the
//! state directory so the daemon can re-apply it after firewalld reloads), and the effects.

pub mod plan;
pub mod record;

pub use plan::RowState;
pub use record::{Binding, Bindings, NmBinding, BINDINGS_FILE};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::change::converge::{converge, Decision, Domain, Seam};
use crate::change::reads::Reads;
use crate::change::snapshot::{Scope, Snapshot};
use crate::change::{ExecError, Executor, Refusal};
use crate::firewalld::{self, Capabilities, Firewalld};
use crate::names::{BridgeName, NetworkName, ZoneName};
use crate::networkmanager::{self, Owner, Profile};
use crate::state::{StateDir, StateError};

/// Why a bind operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Refused, said in full (exit status 1).
    #[error("{0}")]
    Refused(String),
    /// firewalld failed a call.
    #[error("{0}")]
    Firewalld(#[from] firewalld::Error),
    /// NetworkManager failed a call.
    #[error("{0}")]
    NetworkManager(#[from] networkmanager::Error),
    /// The state directory failed.
    #[error("{0}")]
    State(#[from] StateError),
}

impl From<Refusal> for BindError {
    fn from(r: Refusal) -> Self {
        BindError::Refused(r.message)
    }
}

impl From<ExecError> for BindError {
    /// A failed write is a refusal (it says what failed and that it was rolled back), not a failure to
    /// read firewalld's state.
    fn from(e: ExecError) -> Self {
        BindError::Refused(e.to_string())
    }
}

/// An attach request.
#[derive(Debug, Clone)]
pub struct Attach {
    /// The bridge.
    pub bridge: BridgeName,
    /// The zone.
    pub zone: ZoneName,
    /// Also bind in the permanent configuration.
    pub permanent: bool,
    /// Move the bridge even out of a zone virtzone did not set.
    pub force: bool,
    /// The libvirt network, when the hook asks.
    pub network: Option<NetworkName>,
    /// The drop-in file declaring it, when `virtzone apply` asks.
    pub source: Option<String>,
}

/// Binds a bridge to a zone and records it: snapshot → [`plan::plan_attach`] (or
/// [`plan::plan_attach_nm`] when NetworkManager owns the bridge's zone) → executor, through
/// [`converge`]. Either all of it happens, or firewalld, NetworkManager and the record stay as they
/// were.
pub async fn attach(seam: &impl Seam, state: &StateDir, req: &Attach) -> Result<String, BindError> {
    Ok(converge(seam, state, &Attaching(req)).await?.outcome)
}

/// The attach domain: `bindings.json` as its record, a snapshot (with the bridge's permanent zone
/// under `--permanent`) and the bridge's owner as its facts.
struct Attaching<'a>(&'a Attach);

impl Domain for Attaching<'_> {
    type Record = Bindings;
    type Facts = (Snapshot, Owner);
    type Outcome = String;
    type Error = BindError;

    fn load(&self, state: &StateDir) -> Result<Bindings, BindError> {
        Ok(state.read(BINDINGS_FILE)?)
    }

    async fn gather(
        &self,
        reads: &impl Reads,
        _record: &Bindings,
    ) -> Result<(Snapshot, Owner), BindError> {
        let req = self.0;
        let scope = Scope {
            permanent_interface: req.permanent.then(|| req.bridge.clone()),
            ..Scope::default()
        };
        Ok(tokio::try_join!(
            async {
                Snapshot::gather(reads, &scope)
                    .await
                    .map_err(BindError::from)
            },
            async {
                reads
                    .bridge_owner(req.bridge.as_str())
                    .await
                    .map_err(BindError::from)
            },
        )?)
    }

    fn plan(
        &self,
        (snap, owner): &(Snapshot, Owner),
        bindings: &Bindings,
    ) -> Result<Decision<Bindings, String>, BindError> {
        let req = self.0;
        let recorded = bindings.bindings.get(&req.bridge);
        let request = plan::AttachRequest {
            bridge: &req.bridge,
            zone: &req.zone,
            permanent: req.permanent,
            force: req.force,
        };
        let planned = match owner {
            Owner::NetworkManager(profile) => {
                plan::plan_attach_nm(&request, snap, recorded, profile)?
            }
            Owner::Firewalld => plan::plan_attach(&request, snap, recorded)?,
        };
        let mut record = bindings.clone();
        record.bindings.insert(
            req.bridge.clone(),
            Binding {
                zone: req.zone.clone(),
                permanent: planned.permanent,
                network: req.network.clone(),
                networkmanager: planned.networkmanager.clone(),
                // A file's binding stays the file's, even when the CLI binds it again.
                source: req
                    .source
                    .clone()
                    .or_else(|| recorded.and_then(|r| r.source.clone())),
            },
        );
        Ok(Decision {
            plan: planned.plan,
            record: Some(record),
            outcome: planned.message,
        })
    }

    fn store(&self, state: &StateDir, bindings: &Bindings) -> Result<(), BindError> {
        Ok(state.write(BINDINGS_FILE, bindings)?)
    }

    fn failed(&self, error: ExecError) -> BindError {
        error.into()
    }

    fn capabilities(&self, (snap, _): &(Snapshot, Owner)) -> Option<Capabilities> {
        snap.capabilities()
    }
}

/// Unbinds a bridge virtzone bound (any bridge with `force`) and forgets it: snapshot →
/// [`plan::plan_detach`] (or [`plan::plan_detach_nm`] for a binding held by a NetworkManager
/// profile) → executor, through [`converge`].
pub async fn detach(
    seam: &impl Seam,
    state: &StateDir,
    bridge: &BridgeName,
    permanent: bool,
    force: bool,
) -> Result<String, BindError> {
    let detaching = Detaching {
        bridge,
        permanent,
        force,
        declared: false,
    };
    Ok(converge(seam, state, &detaching).await?.outcome)
}

/// [`detach`] of a binding a drop-in file declared (`virtzone apply`, once the declaration is
/// gone); `detach` refuses those.
pub async fn detach_declared(
    seam: &impl Seam,
    state: &StateDir,
    bridge: &BridgeName,
    permanent: bool,
) -> Result<String, BindError> {
    let detaching = Detaching {
        bridge,
        permanent,
        force: false,
        declared: true,
    };
    Ok(converge(seam, state, &detaching).await?.outcome)
}

/// The detach domain: `bindings.json` as its record; a snapshot and, for a binding a NetworkManager
/// profile holds, that profile as it is now, as its facts.
struct Detaching<'a> {
    bridge: &'a BridgeName,
    permanent: bool,
    force: bool,
    /// The caller is `virtzone apply` removing a file's binding (the CLI may not).
    declared: bool,
}

impl Domain for Detaching<'_> {
    type Record = Bindings;
    type Facts = (Snapshot, Option<Profile>);
    type Outcome = String;
    type Error = BindError;

    fn load(&self, state: &StateDir) -> Result<Bindings, BindError> {
        Ok(state.read(BINDINGS_FILE)?)
    }

    fn check_record(&self, bindings: &Bindings) -> Result<(), BindError> {
        let bridge = self.bridge;
        match bindings.bindings.get(bridge).and_then(|b| b.source.as_ref()) {
            Some(file) if !self.declared => Err(BindError::Refused(format!(
                "bridge {bridge} is bound by {file}: remove its [Bind] section there and run virtzone apply"
            ))),
            _ => Ok(()),
        }
    }

    async fn gather(
        &self,
        reads: &impl Reads,
        bindings: &Bindings,
    ) -> Result<(Snapshot, Option<Profile>), BindError> {
        let scope = Scope {
            permanent_interface: self.permanent.then(|| self.bridge.clone()),
            ..Scope::default()
        };
        let nm = bindings
            .bindings
            .get(self.bridge)
            .and_then(|b| b.networkmanager.as_ref());
        Ok(tokio::try_join!(
            async {
                Snapshot::gather(reads, &scope)
                    .await
                    .map_err(BindError::from)
            },
            async {
                match nm {
                    Some(nm) => reads.profile(&nm.uuid).await.map_err(BindError::from),
                    None => Ok(None),
                }
            },
        )?)
    }

    fn plan(
        &self,
        (snap, profile): &(Snapshot, Option<Profile>),
        bindings: &Bindings,
    ) -> Result<Decision<Bindings, String>, BindError> {
        let bridge = self.bridge;
        let recorded = bindings.bindings.get(bridge);
        let planned = match recorded.and_then(|b| b.networkmanager.as_ref().map(|n| (b, n))) {
            Some((binding, nm)) => {
                plan::plan_detach_nm(bridge, self.force, binding, nm, profile.as_ref())
            }
            None => plan::plan_detach(bridge, self.permanent, self.force, snap, recorded)?,
        };
        let record = recorded.is_some().then(|| {
            let mut record = bindings.clone();
            record.bindings.remove(bridge);
            record
        });
        Ok(Decision {
            plan: planned.plan,
            record,
            outcome: planned.message,
        })
    }

    fn store(&self, state: &StateDir, bindings: &Bindings) -> Result<(), BindError> {
        Ok(state.write(BINDINGS_FILE, bindings)?)
    }

    fn failed(&self, error: ExecError) -> BindError {
        error.into()
    }

    fn capabilities(&self, (snap, _): &(Snapshot, Option<Profile>)) -> Option<Capabilities> {
        snap.capabilities()
    }
}

/// What one reconcile saw, decided and did.
#[derive(Debug)]
pub struct Reconciled {
    /// The facts it decided from (version, backend, bindings …).
    pub snapshot: Snapshot,
    /// The plan: the lost bindings to re-apply, the drift it leaves alone.
    pub plan: plan::ReconcilePlan,
    /// Each re-applied binding with firewalld's last answer (failures are not rolled back: the
    /// bindings are independent, and the next reconcile tries again).
    pub results: Vec<(crate::change::Step, firewalld::Result<()>)>,
}

/// Passes over the missing bindings in one reconcile: a call that failed (a transient error) gets
/// another chance, after a pause, before the daemon goes back to waiting for events.
const PASSES: usize = 3;
/// Pause before the second and third pass: a firewalld still settling after a reload gets time,
/// instead of three failures in a row within milliseconds.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// One reconcile of the `desired` bindings against firewalld: snapshot → [`plan::plan_reconcile`] →
/// executor, with at most `in_flight` calls pipelined, and a failed call tried again in up to
/// [`PASSES`] passes. The daemon's, on its start, on firewalld's `Reloaded` signal and on a new owner
/// of firewalld's bus name.
pub async fn reconcile(
    seam: &impl Seam,
    desired: &Bindings,
    in_flight: usize,
) -> firewalld::Result<Reconciled> {
    let snapshot = Snapshot::gather(seam.reads(), &Scope::default()).await?;
    if snapshot.running().is_none() {
        // Nothing to compare with: the next owner of firewalld's name is the next event.
        return Ok(Reconciled {
            snapshot,
            plan: plan::ReconcilePlan::default(),
            results: Vec::new(),
        });
    }
    let plan = plan::plan_reconcile(desired, &snapshot.interfaces);
    let mutations = seam.mutations(snapshot.capabilities());
    let executor = Executor::new(&mutations);
    let mut missing = plan.plan.steps.clone();
    let mut results = Vec::new();
    for pass in 1..=PASSES {
        if missing.is_empty() {
            break;
        }
        if pass > 1 {
            tokio::time::sleep(RETRY_PAUSE * (pass as u32 - 1)).await;
        }
        let done = executor.apply_each(&missing, in_flight).await;
        missing.clear();
        for (step, result) in done {
            match result {
                Err(e) if pass < PASSES => {
                    tracing::warn!("cannot {step} yet ({e}); trying again");
                    missing.push(step);
                }
                result => results.push((step, result)),
            }
        }
    }
    Ok(Reconciled {
        snapshot,
        plan,
        results,
    })
}

/// The recorded NetworkManager profiles of `bindings`, by uuid, as they are now (`None`: gone, or
/// NetworkManager not running). Asks nothing when no binding goes through NetworkManager.
pub async fn profiles(
    reads: &impl Reads,
    bindings: &Bindings,
) -> networkmanager::Result<BTreeMap<String, Option<Profile>>> {
    let mut out = BTreeMap::new();
    for b in bindings.bindings.values() {
        if let Some(n) = &b.networkmanager {
            if !out.contains_key(&n.uuid) {
                out.insert(n.uuid.clone(), reads.profile(&n.uuid).await?);
            }
        }
    }
    Ok(out)
}

/// The NetworkManager side of a reconcile: the recorded profiles → [`plan::plan_nm_reconcile`] →
/// executor. For the daemon, on its start (a boot forgets in-memory profile changes) and whenever
/// NetworkManager's bus name gets a new owner.
pub async fn reconcile_nm(
    seam: &impl Seam,
    desired: &Bindings,
) -> networkmanager::Result<(
    plan::ReconcilePlan,
    Vec<(crate::change::Step, firewalld::Result<()>)>,
)> {
    let profiles = profiles(seam.reads(), desired).await?;
    let plan = plan::plan_nm_reconcile(desired, &profiles);
    let mutations = seam.mutations(None);
    let results = Executor::new(&mutations)
        .apply_each(&plan.plan.steps, 1)
        .await;
    Ok((plan, results))
}

/// Which path holds a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindPath {
    /// firewalld's own interface binding (kept by the daemon across reloads).
    Firewalld,
    /// A NetworkManager profile's `connection.zone`.
    NetworkManager,
}

/// The NetworkManager profile of a row.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRow {
    /// `connection.id` (as recorded when the profile is gone).
    pub name: String,
    /// `connection.uuid`.
    pub uuid: String,
    /// `connection.zone` now (`""`: the default zone; `null`: the profile is gone or NetworkManager
    /// is not running).
    pub zone: Option<String>,
}

/// One row of `virtzone list`: what virtzone was asked for beside what firewalld (and, for a
/// binding held by a NetworkManager profile, NetworkManager) has.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The bridge.
    pub bridge: BridgeName,
    /// The zone virtzone was asked for.
    pub zone: ZoneName,
    /// Whether it is also bound permanently.
    pub permanent: bool,
    /// The libvirt network, when the hook bound it.
    pub network: Option<NetworkName>,
    /// The zone firewalld has it in now (`null`: unbound, or firewalld not running).
    pub actual: Option<String>,
    /// The drop-in file declaring it, or `cli` (the CLI, the hook, the D-Bus API).
    pub source: String,
    /// `bound` (as asked), `missing` (unbound: firewalld reloaded or restarted without the daemon
    /// re-applying), `moved` (someone put it in another zone, or changed the profile's
    /// `connection.zone`), `unknown` (firewalld not running).
    pub state: RowState,
    /// Which path holds it.
    pub path: BindPath,
    /// The NetworkManager profile holding it (`null` on firewalld's path).
    pub profile: Option<ProfileRow>,
    /// Whether virtzone's record, firewalld and (on NetworkManager's path) the profile all say `zone`.
    pub agree: bool,
}

/// Compares recorded bindings with firewalld's interface → zone map and the recorded NetworkManager
/// profiles (from [`profiles`]) (pure).
pub fn compare(
    bindings: &Bindings,
    actual: Option<&BTreeMap<String, String>>,
    profiles: &BTreeMap<String, Option<Profile>>,
) -> Vec<Row> {
    bindings
        .bindings
        .iter()
        .map(|(bridge, b)| {
            let now = actual.and_then(|a| a.get(bridge.as_str()).cloned());
            let profile = b.networkmanager.as_ref().map(|n| {
                let current = profiles.get(&n.uuid).cloned().flatten();
                ProfileRow {
                    name: current
                        .as_ref()
                        .map_or_else(|| n.profile.clone(), |p| p.id.clone()),
                    uuid: n.uuid.clone(),
                    zone: current.map(|p| p.zone),
                }
            });
            let profile_agrees = profile
                .as_ref()
                .is_none_or(|p| p.zone.as_deref() == Some(b.zone.as_str()));
            let mut state = match actual {
                None => RowState::Unknown,
                Some(_) => plan::binding_state(&b.zone, now.as_deref()),
            };
            if state == RowState::Bound && !profile_agrees {
                state = RowState::Moved;
            }
            Row {
                bridge: bridge.clone(),
                zone: b.zone.clone(),
                permanent: b.permanent,
                network: b.network.clone(),
                actual: now,
                state,
                path: if profile.is_some() {
                    BindPath::NetworkManager
                } else {
                    BindPath::Firewalld
                },
                profile,
                agree: state == RowState::Bound,
                source: b.source.clone().unwrap_or_else(|| "cli".into()),
            }
        })
        .collect()
}

/// firewalld's runtime interface → zone map, in one call (see [`Firewalld::interface_zones`]).
pub async fn interface_zones(fw: &Firewalld) -> firewalld::Result<BTreeMap<String, String>> {
    fw.interface_zones().await
}

/// Forgets a binding without asking firewalld (it is not running, so it holds no binding either).
pub async fn forget(state: &StateDir, bridge: &BridgeName) -> Result<String, BindError> {
    let _lock = state.lock().await?;
    let mut bindings: Bindings = state.read(BINDINGS_FILE)?;
    if bindings.bindings.remove(bridge).is_some() {
        state.write(BINDINGS_FILE, &bindings)?;
        return Ok(format!("forgot virtzone's binding of bridge {bridge}"));
    }
    Ok(format!("virtzone had no binding of bridge {bridge}"))
}

/// `virtzone apply`'s part for bindings: each `[Bind]` of `binds` (its file, its declaration)
/// bound as declared through [`attach`] (recording the file as its `source`), each binding a file
/// declared before and none does now taken out through [`detach_declared`]. With `check`, only
/// says what would change. Returns the changes, one line each (`+ bind virbr1 → libvirt`).
pub async fn apply_declared(
    fw: &Firewalld,
    state: &StateDir,
    binds: &[(String, crate::declare::BindDecl)],
    check: bool,
) -> Result<Vec<String>, BindError> {
    let bindings: Bindings = state.read(BINDINGS_FILE)?;
    let actual = interface_zones(fw).await?;
    // A `[Bind]` without `Zone=` gets its network's zone, as libvirt would give it: firewalld's
    // zones and policies are read only when such a declaration names a recorded network's bridge.
    let networks = if binds.iter().any(|(_, b)| b.zone.is_none()) {
        crate::forward::read_networks(state).map_err(|e| BindError::Refused(e.to_string()))?
    } else {
        Default::default()
    };
    let needs_facts = binds
        .iter()
        .any(|(_, b)| b.zone.is_none() && network_of(&networks, &b.bridge).is_some());
    let snap = if needs_facts {
        Some(Snapshot::gather(fw, &Scope::default()).await?)
    } else {
        None
    };
    let mut changes = Vec::new();
    for (file, b) in binds {
        let zone = declared_zone(b, &networks, snap.as_ref().and_then(Snapshot::running));
        let recorded = bindings.bindings.get(&b.bridge);
        let in_sync = recorded.is_some_and(|r| {
            r.zone == zone && r.permanent == b.permanent && r.source.as_ref() == Some(file)
        }) && actual.get(b.bridge.as_str()).map(String::as_str)
            == Some(zone.as_str());
        if in_sync {
            continue;
        }
        changes.push(format!("+ bind {} → {zone}", b.bridge));
        if !check {
            let req = Attach {
                bridge: b.bridge.clone(),
                zone,
                permanent: b.permanent,
                force: false,
                network: recorded.and_then(|r| r.network.clone()),
                source: Some(file.clone()),
            };
            attach(fw, state, &req).await?;
        }
    }
    for (bridge, rec) in &bindings.bindings {
        if rec.source.is_none() || binds.iter().any(|(_, b)| &b.bridge == bridge) {
            continue;
        }
        changes.push(format!("- bind {bridge} → {}", rec.zone));
        if !check {
            detach_declared(fw, state, bridge, rec.permanent).await?;
        }
    }
    Ok(changes)
}

/// The recorded libvirt network whose bridge is `bridge`.
fn network_of<'a>(
    networks: &'a crate::forward::network::Networks,
    bridge: &BridgeName,
) -> Option<&'a crate::forward::network::NetworkRecord> {
    networks.networks.values().find(|n| &n.bridge == bridge)
}

/// The zone of a `[Bind]` (pure): its `Zone=`; else the zone libvirt gives the network whose
/// bridge it is on this firewalld (`libvirt-routed` for a routed network where that zone and its
/// policy exist, `libvirt` otherwise, see [`crate::precheck::default_zone`]); else `libvirt`, as
/// `virtzone attach` without `--zone`.
pub fn declared_zone(
    decl: &crate::declare::BindDecl,
    networks: &crate::forward::network::Networks,
    running: Option<&firewalld::Running>,
) -> ZoneName {
    if let Some(zone) = &decl.zone {
        return zone.clone();
    }
    network_of(networks, &decl.bridge)
        .zip(running)
        .and_then(|(net, fw)| crate::precheck::default_zone(&net.forward, fw))
        .unwrap_or_else(ZoneName::libvirt)
}

/// Whether any recorded binding came from a drop-in file (then `apply` must look at bindings even
/// when no file declares one any more).
pub fn any_declared(state: &StateDir) -> Result<bool, BindError> {
    let bindings: Bindings = state.read(BINDINGS_FILE)?;
    Ok(bindings.bindings.values().any(|b| b.source.is_some()))
}

#[cfg(test)]
mod declared_zone_tests {
    use super::*;
    use crate::declare::BindDecl;
    use crate::forward::network::{NetworkRecord, Networks};

    fn networks() -> Networks {
        let mut n = Networks::default();
        for (name, bridge, forward) in [("nat1", "virbr1", "nat"), ("routed", "virbr2", "route")] {
            n.networks.insert(
                name.parse().unwrap(),
                NetworkRecord {
                    bridge: BridgeName::new(bridge).unwrap(),
                    forward: crate::libvirt::ForwardMode::from_recorded(forward),
                    subnets: vec![],
                    host: vec![],
                    active: true,
                    hosts: vec![],
                    nat: None,
                },
            );
        }
        n
    }

    fn decl(bridge: &str, zone: Option<&str>) -> BindDecl {
        BindDecl {
            bridge: BridgeName::new(bridge).unwrap(),
            zone: zone.map(|z| ZoneName::new(z).unwrap()),
            permanent: false,
        }
    }

    /// A `[Bind]` without `Zone=` gets its network's zone as libvirt gives it (issue #22).
    #[test]
    fn a_bind_without_zone_gets_its_networks_zone() {
        let snap = crate::change::snapshot::fake::running(
            "1.3.3",
            &["public", "libvirt", "libvirt-routed"],
            &[],
        );
        let mut fw = snap.running().unwrap().clone();
        let n = networks();
        let zone = |b: &str, z: Option<&str>, fw: &firewalld::Running| {
            declared_zone(&decl(b, z), &n, Some(fw))
                .as_str()
                .to_string()
        };
        assert_eq!(zone("virbr1", None, &fw), "libvirt");
        // Without the routed policy libvirt gives a routed network the libvirt zone.
        assert_eq!(zone("virbr2", None, &fw), "libvirt");
        fw.policies = Some(["libvirt-routed-out".to_string()].into());
        assert_eq!(zone("virbr2", None, &fw), "libvirt-routed");
        assert_eq!(zone("virbr2", Some("trusted"), &fw), "trusted");
        // A bridge of no recorded network: attach's default.
        assert_eq!(zone("br0", None, &fw), "libvirt");
        assert_eq!(
            declared_zone(&decl("virbr2", None), &n, None).as_str(),
            "libvirt"
        );
    }
}
