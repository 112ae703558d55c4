//! `virtzone status`: what firewalld is, which of libvirt's zones and policies it has, and which zone
//! each bridge of this namespace sits in. The JSON shape is documented in `docs/json.md` and kept stable.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::change::snapshot::{self, Scope, Snapshot};
use crate::firewalld::{self, Backend, Capabilities, Firewalld, FirewalldFacts};
use crate::install::{Existing, Installed, Kind, Origin, INSTALLED_FILE};
use crate::state::StateDir;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// firewalld itself.
    pub firewalld: FirewalldStatus,
    /// libvirt's zones: present at runtime and in the permanent configuration?
    pub zones: Vec<ObjectStatus>,
    /// libvirt's policies, likewise.
    pub policies: Vec<ObjectStatus>,
    /// The bridges of this network namespace and their zones.
    pub bridges: Vec<BridgeStatus>,
    /// libvirt's firewall backend, where it can be read (`network.conf`, its running rules).
    pub libvirt_firewall: Option<crate::libvirt::firewall::LibvirtFirewall>,
    /// What this firewalld release is known to get wrong for libvirt's networks.
    pub warnings: Vec<String>,
}

/// firewalld's presence and identity.
#[derive(Debug, Clone, Serialize)]
pub struct FirewalldStatus {
    /// Whether firewalld answers on the system bus.
    pub running: bool,
    /// Whether there is a system bus at all.
    pub system_bus: bool,
    /// The version it reports.
    pub version: Option<String>,
    /// INIT, RUNNING or FAILED.
    pub state: Option<String>,
    /// nftables or iptables.
    pub backend: Option<Backend>,
    /// What that version can do.
    pub capabilities: Option<Capabilities>,
}

/// One zone or policy.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectStatus {
    /// Its name.
    pub name: String,
    /// Loaded in the runtime configuration.
    pub runtime: bool,
    /// Present in the permanent configuration.
    pub permanent: bool,
    /// Who put it there: `virtzone`, `package` (firewalld's stock tier) or `admin` (/etc, not
    /// virtzone's); `null` when absent.
    pub origin: Option<Origin>,
    /// Whether it means the same as virtzone's definition; `null` when absent.
    pub matches_shipped: Option<bool>,
    /// How it differs from virtzone's definition.
    pub differences: Vec<String>,
}

/// One bridge.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeStatus {
    /// The interface name.
    pub name: String,
    /// The zone firewalld has bound it to at runtime; `null` when unbound (then the default zone
    /// applies to its traffic).
    pub zone: Option<String>,
    /// The NetworkManager profile that sends its zone to firewalld (NetworkManager manages it with
    /// an active profile); `null`: only firewalld's own binding decides (no NetworkManager, or the
    /// device is unmanaged or "connected (externally)").
    pub networkmanager: Option<NmOwner>,
}

/// The NetworkManager profile owning a bridge's zone.
#[derive(Debug, Clone, Serialize)]
pub struct NmOwner {
    /// `connection.id`.
    pub profile: String,
    /// `connection.uuid`.
    pub uuid: String,
    /// `connection.zone` (`""`: the default zone).
    pub zone: String,
}

/// Everything `status` reads from firewalld beyond the pre-check's facts.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Permanent zones.
    pub permanent_zones: BTreeSet<String>,
    /// Permanent policies.
    pub permanent_policies: BTreeSet<String>,
    /// interface → zone, from `getActiveZones`.
    pub interface_zones: BTreeMap<String, String>,
    /// The permanent shipped objects, with origin and differences.
    pub existing: Existing,
    /// libvirt's firewall backend, when readable.
    pub libvirt_firewall: Option<crate::libvirt::firewall::LibvirtFirewall>,
}

impl Status {
    /// Assembles the report from gathered facts (pure).
    pub fn build(facts: &FirewalldFacts, extra: &Extra, bridges: &[String]) -> Status {
        let objects =
            |kind: Kind, runtime: Option<&BTreeSet<String>>, permanent: &BTreeSet<String>| {
                crate::zone::shipped_names(kind)
                    .map(|n| {
                        let present = extra.existing.get(&(kind, n.to_string()));
                        ObjectStatus {
                            name: n.to_string(),
                            runtime: runtime.is_some_and(|r| r.contains(n)),
                            permanent: permanent.contains(n),
                            origin: present.map(|p| p.origin),
                            matches_shipped: present.map(|p| p.differences.is_empty()),
                            differences: present.map(|p| p.differences.clone()).unwrap_or_default(),
                        }
                    })
                    .collect()
            };
        let bridges = bridges
            .iter()
            .map(|b| BridgeStatus {
                name: b.clone(),
                zone: extra.interface_zones.get(b).cloned(),
                networkmanager: None,
            })
            .collect();
        match facts {
            FirewalldFacts::NotRunning { no_bus } => Status {
                firewalld: FirewalldStatus {
                    running: false,
                    system_bus: !no_bus,
                    version: None,
                    state: None,
                    backend: None,
                    capabilities: None,
                },
                zones: objects(Kind::Zone, None, &extra.permanent_zones),
                policies: objects(Kind::Policy, None, &extra.permanent_policies),
                bridges,
                libvirt_firewall: extra.libvirt_firewall.clone(),
                warnings: Vec::new(),
            },
            FirewalldFacts::Running(r) => Status {
                firewalld: FirewalldStatus {
                    running: true,
                    system_bus: true,
                    version: Some(r.version_text.clone()),
                    state: Some(r.state.as_str().to_string()),
                    backend: Some(r.backend),
                    capabilities: Some(r.capabilities),
                },
                zones: objects(Kind::Zone, Some(&r.zones), &extra.permanent_zones),
                policies: objects(Kind::Policy, r.policies.as_ref(), &extra.permanent_policies),
                bridges,
                libvirt_firewall: extra.libvirt_firewall.clone(),
                warnings: crate::precheck::egress_any_warning(&r.capabilities, &r.version_text)
                    .into_iter()
                    .collect(),
            },
        }
    }

    /// The report as text for people.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let fw = &self.firewalld;
        if !fw.system_bus {
            out.push_str("firewalld: not running (no system bus)\n");
        } else if !fw.running {
            out.push_str("firewalld: not running\n");
        } else {
            let _ = writeln!(
                out,
                "firewalld: {} (state {}, backend {})",
                fw.version.as_deref().unwrap_or("?"),
                fw.state.as_deref().unwrap_or("?"),
                fw.backend.map_or("?", Backend::as_str),
            );
            if let Some(c) = fw.capabilities {
                let yes = |b: bool| if b { "yes" } else { "no" };
                let _ = writeln!(
                    out,
                    "capabilities: rule priorities {}, policies {}, zone priorities {}, reload drops runtime bindings {}",
                    yes(c.rule_priorities),
                    yes(c.policies),
                    yes(c.zone_priorities),
                    yes(c.flush_all_on_reload),
                );
            }
        }
        for (title, list) in [("zones", &self.zones), ("policies", &self.policies)] {
            let _ = writeln!(out, "{title}:");
            for o in list {
                let state = match (o.runtime, o.permanent) {
                    (true, true) => "live and permanent",
                    (true, false) => "live only (lost on reload)",
                    (false, true) => "permanent, not live (reload firewalld)",
                    (false, false) => "missing",
                };
                let origin = match o.origin {
                    Some(origin) => format!(", {origin}"),
                    None => String::new(),
                };
                let matches = match o.matches_shipped {
                    Some(true) => ", same as virtzone's".to_string(),
                    Some(false) => {
                        format!(", differs from virtzone's: {}", o.differences.join("; "))
                    }
                    None => String::new(),
                };
                let _ = writeln!(out, "  {:<20} {state}{origin}{matches}", o.name);
            }
        }
        if let Some(l) = &self.libvirt_firewall {
            let _ = writeln!(
                out,
                "libvirt: firewall backend {} (from {})",
                l.backend, l.source
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(out, "bridges:");
        if self.bridges.is_empty() {
            out.push_str("  (none)\n");
        }
        for b in &self.bridges {
            let owner = match &b.networkmanager {
                Some(nm) => format!(
                    " (NetworkManager profile {}, connection.zone {})",
                    nm.profile,
                    if nm.zone.is_empty() {
                        "empty"
                    } else {
                        &nm.zone
                    }
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<20} {}{owner}",
                b.name,
                b.zone
                    .as_deref()
                    .unwrap_or("(no zone: default zone applies)")
            );
        }
        out
    }
}

impl Extra {
    /// What `status` shows beyond the pre-check's facts, from a snapshot gathered with
    /// [`Scope::shipped`], virtzone's install record and libvirt's firewall backend.
    pub fn of(
        snap: &Snapshot,
        installed: &Installed,
        libvirt_firewall: Option<crate::libvirt::firewall::LibvirtFirewall>,
    ) -> Extra {
        Extra {
            permanent_zones: snap.permanent_zones.clone(),
            permanent_policies: snap.permanent_policies.clone(),
            interface_zones: snap.interfaces.clone(),
            existing: crate::install::plan::existing_in(snap, installed),
            libvirt_firewall,
        }
    }
}

/// libvirt's firewall backend, where it can be read (off the async thread: it reads files).
pub async fn libvirt_firewall() -> Option<crate::libvirt::firewall::LibvirtFirewall> {
    tokio::task::spawn_blocking(crate::libvirt::firewall::detect)
        .await
        .ok()
        .flatten()
}

/// Reads everything `status` shows, on one connection. A missing firewalld is a fact, not an error.
pub async fn gather() -> firewalld::Result<Status> {
    let (fw, snap) = snapshot::connect_and_gather(&Scope::shipped()).await?;
    // An unusable state directory only hides where objects came from; status still reports the rest.
    let state = StateDir::locate(None).ok();
    let mut status = from_snapshot(&snap, state.as_ref(), libvirt_firewall().await);
    if let Some(fw) = &fw {
        add_owners(&mut status, fw.connection()).await;
    }
    Ok(status)
}

/// Names the NetworkManager profile of each bridge NetworkManager manages. Asks nothing more without
/// NetworkManager; a bridge NetworkManager does not answer about keeps `null`.
pub async fn add_owners(status: &mut Status, conn: &zbus::Connection) {
    let nm = crate::networkmanager::NetworkManager::new(conn);
    if !nm.is_running().await.unwrap_or(false) {
        return;
    }
    for b in &mut status.bridges {
        if let Ok(crate::networkmanager::Owner::NetworkManager(p)) = nm.owner(&b.name).await {
            b.networkmanager = Some(NmOwner {
                profile: p.id,
                uuid: p.uuid,
                zone: p.zone,
            });
        }
    }
}

/// [`gather`] on an existing connection, reading virtzone's records from `state` (the daemon passes
/// its own, so its `--state-dir` holds for `Status` too).
pub async fn gather_on(fw: &Firewalld, state: Option<&StateDir>) -> firewalld::Result<Status> {
    let snap = Snapshot::gather(fw, &Scope::shipped()).await?;
    let mut status = from_snapshot(&snap, state, libvirt_firewall().await);
    add_owners(&mut status, fw.connection()).await;
    Ok(status)
}

/// The status of a snapshot gathered with [`Scope::shipped`].
pub fn from_snapshot(
    snap: &Snapshot,
    state: Option<&StateDir>,
    libvirt_firewall: Option<crate::libvirt::firewall::LibvirtFirewall>,
) -> Status {
    let bridges = crate::host::bridges().unwrap_or_default();
    // Status reads the record without its lock: a stale read only mislabels an origin.
    let installed: Installed = state
        .and_then(|s| s.read(INSTALLED_FILE).ok())
        .unwrap_or_default();
    Status::build(
        &snap.firewalld,
        &Extra::of(snap, &installed, libvirt_firewall),
        &bridges,
    )
}
