//! The effects of forwards and allows: gathering [`Facts`] through the typed client
//! ([`Firewalld`]'s reads, iptables' listing through firewalld's direct interface), and converging:
//! plan, then apply the [`change::Plan`](crate::change::Plan) with the shared
//! [`change::Executor`](crate::change::Executor) over [`Live`], the only code that changes
//! firewalld (and iptables through it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::iptables::{HAIRPIN_CHAIN, LOCALNET_CHAIN};
use super::model::{is_localnet, Declared};
use super::network::Networks;
use super::plan::{
    route_localnet_key, Facts, Layers, Shape, ALLOW_POLICY, FORWARD_POLICY, FROM_HOST_POLICY,
};
use crate::change::executor::Live;
use crate::change::{Executor, Step};
use crate::firewalld::{parse_version, Entries, Error, Firewalld};

/// Both layers of one object, each read (concurrently) only where the object exists: asking
/// firewalld about a zone or policy it does not have makes it log an ERROR.
async fn both_layers(
    runtime: Option<impl std::future::Future<Output = Result<Entries, Error>>>,
    permanent: Option<impl std::future::Future<Output = Result<Entries, Error>>>,
) -> Result<Layers, Error> {
    let (runtime, permanent) = tokio::try_join!(
        async {
            match runtime {
                Some(read) => read.await.map(Some),
                None => Ok(None),
            }
        },
        async {
            match permanent {
                Some(read) => read.await.map(Some),
                None => Ok(None),
            }
        },
    )?;
    Ok(Layers { runtime, permanent })
}

/// The runtime and permanent entries of policy `name`, where it exists.
async fn policy_layers(
    fw: &Firewalld,
    name: &str,
    runtime: &BTreeSet<String>,
    permanent: &BTreeSet<String>,
) -> Result<Layers, Error> {
    both_layers(
        runtime.contains(name).then(|| fw.policy_entries(name)),
        permanent
            .contains(name)
            .then(|| fw.permanent_policy_entries(name)),
    )
    .await
}

/// The runtime and permanent entries of every zone firewalld has (read concurrently: about a
/// dozen zones, two calls each).
async fn zone_layers(
    fw: &Firewalld,
    only: Option<&BTreeSet<String>>,
) -> Result<BTreeMap<String, Layers>, Error> {
    let (runtime, permanent) = tokio::try_join!(fw.zones(), fw.permanent_zones())?;
    let names: BTreeSet<&String> = runtime
        .iter()
        .chain(&permanent)
        .filter(|z| only.is_none_or(|o| o.contains(*z)))
        .collect();
    let layers = futures_util::future::try_join_all(names.iter().map(|&zone| async {
        let layers = both_layers(
            runtime.contains(zone).then(|| fw.zone_entries(zone)),
            permanent
                .contains(zone)
                .then(|| fw.permanent_zone_entries(zone)),
        )
        .await?;
        Ok::<_, Error>((zone.to_string(), layers))
    }))
    .await?;
    Ok(layers.into_iter().collect())
}

/// The zones that may hold forwards' zone entries at this process's last read of every zone.
///
/// Forwards are entries of the uplink zones (before firewalld 2.2), taken out of zones no uplink is
/// bound to any more; only a change of the uplink zones (the default zone and the active zones but
/// libvirt's own) can leave such entries behind. So a check reads every zone (three firewalld calls
/// each, a dozen zones or more) only when those changed since the last full read, or when forwards
/// are removed, and otherwise just them. Guests' zones are left out of the comparison: a firewalld
/// reload drops the virtual networks' runtime bindings until the daemon puts them back, which
/// changed the active zones twice per reload and cost two full reads (72 calls on 1.3.3).
static LAST_FULL_READ: std::sync::Mutex<Option<BTreeSet<String>>> = std::sync::Mutex::new(None);

/// The zones that may hold forwards' zone entries: the default zone and every active zone except
/// libvirt's (whose interfaces are guests' bridges, see `plan::uplink_zones`).
fn uplink_candidates(default_zone: &str, active: &BTreeSet<String>) -> BTreeSet<String> {
    active
        .iter()
        .filter(|z| ![crate::LIBVIRT_ZONE, crate::LIBVIRT_ROUTED_ZONE].contains(&z.as_str()))
        .cloned()
        .chain([default_zone.to_string()])
        .collect()
}

/// Whether this check must read every zone (see [`LAST_FULL_READ`]); records it when so.
fn full_zone_read(uplinks: &BTreeSet<String>, removing: bool) -> bool {
    let mut last = LAST_FULL_READ
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if removing || last.as_ref() != Some(uplinks) {
        *last = Some(uplinks.clone());
        true
    } else {
        false
    }
}

/// `iptables -t filter -S` through firewalld; `None` when firewalld cannot run it.
async fn iptables(fw: &Firewalld) -> Option<String> {
    fw.iptables_rules("filter").await
}

/// Gathers the facts for `declared` given the recorded networks; `removing`: forwards are being
/// taken out (their entries are looked for in every zone).
pub async fn facts(
    fw: &Firewalld,
    declared: &Declared,
    networks: Networks,
    removing: bool,
) -> Result<Facts, Error> {
    let (version_text, default_zone, policies) =
        tokio::try_join!(fw.version_text(), fw.default_zone(), fw.policies())?;
    let version = parse_version(&version_text).map_err(|e| Error::Protocol(e.to_string()))?;
    let zone_shape = matches!(Shape::of(&version, &default_zone), Shape::Zone(_));
    let zone_facts = async {
        if !zone_shape {
            return Ok(Default::default());
        }
        let active: BTreeSet<String> = fw.active_zones().await?.into_keys().collect();
        let uplinks = uplink_candidates(&default_zone, &active);
        let only = (!full_zone_read(&uplinks, removing)).then_some(uplinks);
        Ok((zone_layers(fw, only.as_ref()).await?, active))
    };
    let has_policies = policies.is_some();
    let policy_facts = async {
        match &policies {
            Some(runtime) => {
                let permanent = fw.permanent_policies().await?.unwrap_or_default();
                tokio::try_join!(
                    policy_layers(fw, FORWARD_POLICY, runtime, &permanent),
                    policy_layers(fw, ALLOW_POLICY, runtime, &permanent),
                    policy_layers(fw, FROM_HOST_POLICY, runtime, &permanent),
                )
            }
            None => Ok(Default::default()),
        }
    };
    let ((zones, active_zones), (forward_policy, allow_policy, from_host_policy)) =
        tokio::try_join!(zone_facts, policy_facts)?;
    // The bridges of running networks: those a loopback forward may need `route_localnet` on,
    // and those it must be turned off on again.
    let route_localnet: BTreeMap<String, bool> = networks
        .networks
        .values()
        .filter(|r| r.active)
        .filter_map(|r| {
            let v = crate::host::read_sysctl(&route_localnet_key(r.bridge.as_str()))?;
            Some((r.bridge.to_string(), v == "1"))
        })
        .collect();
    let route_localnet_elsewhere = crate::host::route_localnet_on()
        .iter()
        .any(|name| !route_localnet.contains_key(name));
    let sysctl_writable = route_localnet
        .keys()
        .next()
        .is_some_and(|b| crate::host::sysctl_writable(&route_localnet_key(b)));
    let localnet = declared.forwards.iter().any(is_localnet);
    let hairpin = declared.forwards.iter().any(|f| f.hairpin);
    let need_bridge_zones = !declared.allows.is_empty() || zone_shape || localnet;
    // The rest is independent reads (D-Bus calls, nft runs): all at once, so that a check costs
    // about its slowest read rather than the sum (it runs after every ruleset change).
    let bridge_zones = async {
        if !need_bridge_zones {
            return Ok(BTreeMap::new());
        }
        let found = futures_util::future::try_join_all(networks.networks.values().map(|rec| {
            let bridge = rec.bridge.to_string();
            async move {
                let zone = fw.zone_of_interface(&bridge).await?;
                Ok::<_, Error>(zone.map(|z| (bridge, z)))
            }
        }))
        .await?;
        Ok::<_, Error>(found.into_iter().flatten().collect::<BTreeMap<_, _>>())
    };
    let iptables_nat = async {
        let listing = fw.iptables_rules("nat").await;
        if localnet || hairpin {
            listing
        } else {
            // Nothing to plan there unless a chain of ours is left over.
            listing.filter(|l| {
                l.lines().any(|l| {
                    l == format!("-N {HAIRPIN_CHAIN}") || l == format!("-N {LOCALNET_CHAIN}")
                })
            })
        }
    };
    let guard_wanted =
        localnet || route_localnet_elsewhere || route_localnet.values().any(|&on| on);
    let localnet_guard = async {
        if guard_wanted {
            tokio::task::spawn_blocking(crate::host::localnet_guard_present)
                .await
                .ok()
                .flatten()
        } else {
            // Nothing could need it.
            Some(false)
        }
    };
    let (bridge_zones, libvirt_nft, libvirt_nft6, iptables, iptables_nat, localnet_guard) = tokio::join!(
        bridge_zones,
        libvirt_nft(super::nft::FAMILY),
        libvirt_nft(super::nft::FAMILY6),
        iptables(fw),
        iptables_nat,
        localnet_guard,
    );
    Ok(Facts {
        version,
        default_zone,
        zones,
        active_zones,
        forward_policy,
        allow_policy,
        from_host_policy,
        policies: has_policies,
        networks,
        bridge_zones: bridge_zones?,
        libvirt_nft,
        libvirt_nft6,
        iptables,
        iptables_nat,
        localnet_guard,
        route_localnet,
        route_localnet_elsewhere,
        sysctl_writable,
    })
}

/// How many plan/execute rounds one convergence may take: a round ending in a reload is followed
/// by one that plans against the reloaded firewall.
const ROUNDS: usize = 3;
/// How long to wait after a reload for libvirt to rebuild its chains (it does so on `Reloaded`).
const LIBVIRT_REBUILD: Duration = Duration::from_secs(10);

/// Whether a convergence gathers once more after its changes to see that nothing is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Gather, plan and execute until a plan is empty (commands and the hook, which nothing else
    /// checks after them).
    Regather,
    /// Stop after one executed plan unless it reloaded firewalld: the daemon's ruleset watch sees
    /// the changes and checks again anyway, so a second gather here would only double its calls.
    ByTheWatch,
}

/// Brings firewalld and iptables to `declared` (removing `gone`'s entries): gather, plan, execute,
/// until nothing is left to do (see [`Verify`]). Returns the steps carried out.
pub async fn converge(
    fw: &Firewalld,
    declared: &Declared,
    gone: &[super::model::Forward],
    networks: &Networks,
    verify: Verify,
) -> Result<usize, super::ForwardError> {
    // The capabilities only choose how zones are added, which forwards never do.
    let live = Live::new(fw, None);
    let exec = Executor::new(&live);
    let mut total = 0;
    for _ in 0..ROUNDS {
        let facts = facts(fw, declared, networks.clone(), !gone.is_empty()).await?;
        let plan =
            super::plan::plan(declared, gone, &facts).map_err(super::ForwardError::Refused)?;
        for w in &plan.warnings {
            tracing::warn!("{}", w.message);
        }
        if plan.is_empty() {
            return Ok(total);
        }
        // All or nothing: a refused step undoes the ones before it. Not `apply_each`: the steps
        // depend on each other (chain before rule before jump, accepts before the DNAT).
        let reload = plan.steps.contains(&Step::Reload);
        // libvirt's nftables rules before the reload, to see its rebuild after it.
        let nft_before = if reload {
            libvirt_nft(super::nft::FAMILY).await
        } else {
            None
        };
        total += exec.run(&plan).await?.steps.len();
        if reload && !super::accept::accepts(declared, networks).is_empty() {
            wait_for_libvirt(fw, nft_before).await;
        }
        if !reload && verify == Verify::ByTheWatch {
            return Ok(total);
        }
    }
    Ok(total)
}

/// `nft -j list table FAMILY libvirt_network` (libvirt's nftables firewall backend), parsed;
/// `None` when the table does not exist, nft is missing, or its answer does not parse (then only
/// the iptables path is planned, as before libvirt had this backend).
async fn libvirt_nft(family: &'static str) -> Option<super::nft::GuestInput> {
    let json = tokio::task::spawn_blocking(move || {
        crate::external::nft_json(&["list", "table", family, super::nft::TABLE])
    })
    .await
    .ok()?
    .ok()?;
    match super::nft::GuestInput::parse(&json, family) {
        Ok(chain) => Some(chain),
        Err(e) => {
            tracing::warn!("cannot read libvirt's nftables table: {e}");
            None
        }
    }
}

/// Whether libvirt keeps rules for `bridge` with either firewall backend: its iptables chain
/// `LIBVIRT_FWI` exists, or its nftables chain `guest_input` names the bridge.
pub async fn libvirt_rules_present(fw: &Firewalld, bridge: &str) -> bool {
    if iptables(fw)
        .await
        .is_some_and(|l| l.lines().any(|l| l == "-N LIBVIRT_FWI"))
    {
        return true;
    }
    libvirt_nft(super::nft::FAMILY)
        .await
        .is_some_and(|c| c.bridges().contains(bridge))
}

/// After a reload, polls (with a deadline) until libvirt has rebuilt its rules, so the accepts
/// are planned after libvirt's rebuild rather than wiped (iptables: `LIBVIRT_FWI` is back after the
/// flush) or buried behind its reject (nftables: libvirt re-inserts its rules at the top of
/// `guest_input` on `Reloaded`; `nft_before` is that chain before the reload). The daemon re-checks
/// on every ruleset change anyway; this keeps the CLI alone from racing libvirt.
async fn wait_for_libvirt(fw: &Firewalld, nft_before: Option<super::nft::GuestInput>) {
    let start = Instant::now();
    let nft_before = nft_before.filter(|c| !c.bridges().is_empty());
    while start.elapsed() < LIBVIRT_REBUILD {
        if let Some(before) = &nft_before {
            if libvirt_nft(super::nft::FAMILY)
                .await
                .is_some_and(|now| now.rebuilt_since(before))
            {
                return;
            }
        } else if iptables(fw)
            .await
            .is_some_and(|l| l.lines().any(|l| l == "-N LIBVIRT_FWI"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
