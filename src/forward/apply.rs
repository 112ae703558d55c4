//! The gather of forwards and allows: [`Facts`] through the read side of the seam ([`Reads`]:
//! firewalld's reads, iptables' listing through firewalld's direct interface, nft and `/proc/sys`),
//! in full ([`facts`]) or the ruleset side over an earlier gather (`refresh_ruleset`), and the
//! wait for libvirt's rebuild after a reload. What to read is the planner's decision
//! ([`ReadScope`], [`LastFullRead`]); this module only reads. The convergence itself is the one
//! runner's ([`super::runner`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::model::Declared;
use super::network::Networks;
use super::plan::{
    route_localnet_key, uplink_candidates, Facts, LastFullRead, Layers, ReadScope, ALLOW_POLICY,
    FORWARD_POLICY, FROM_HOST_POLICY,
};
use crate::change::reads::Reads;
use crate::firewalld::{parse_version, Entries, Error};

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
    fw: &impl Reads,
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

/// The runtime and permanent entries of every zone firewalld has, or of `only` (read
/// concurrently: about a dozen zones, two calls each).
async fn zone_layers(
    fw: &impl Reads,
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

/// The ruleset side of the facts: what libvirt's rebuilds, other programs' rules and virtzone's own
/// accepts change, and what a firewalld reload wipes.
struct RulesetSide {
    iptables: Option<String>,
    iptables_nat: Option<String>,
    libvirt_nft: Option<super::nft::GuestInput>,
    libvirt_nft6: Option<super::nft::GuestInput>,
    localnet_guard: Option<bool>,
    route_localnet: BTreeMap<String, bool>,
    route_localnet_elsewhere: bool,
    sysctl_writable: bool,
}

/// Reads the ruleset side for `networks` within `scope`; `nat`: read iptables' nat table.
async fn ruleset_side(
    fw: &impl Reads,
    networks: &Networks,
    scope: &ReadScope,
    nat: bool,
) -> RulesetSide {
    // The bridges of running networks: those a loopback forward may need `route_localnet` on,
    // and those it must be turned off on again.
    let route_localnet: BTreeMap<String, bool> = networks
        .networks
        .values()
        .filter(|r| r.active)
        .filter_map(|r| {
            let v = fw.sysctl(&route_localnet_key(r.bridge.as_str()))?;
            Some((r.bridge.to_string(), v == "1"))
        })
        .collect();
    let route_localnet_elsewhere = fw
        .route_localnet_on()
        .iter()
        .any(|name| !route_localnet.contains_key(name));
    let sysctl_writable = route_localnet
        .keys()
        .next()
        .is_some_and(|b| fw.sysctl_writable(&route_localnet_key(b)));
    let guard_wanted = scope.guard(&route_localnet, route_localnet_elsewhere);
    let iptables_nat = async {
        if nat {
            fw.iptables_rules("nat").await
        } else {
            None
        }
    };
    let localnet_guard = async {
        if guard_wanted {
            fw.localnet_guard_present().await
        } else {
            // Nothing could need it.
            Some(false)
        }
    };
    let (libvirt_nft, libvirt_nft6, iptables, iptables_nat, localnet_guard) = tokio::join!(
        libvirt_nft(fw, super::nft::FAMILY),
        libvirt_nft(fw, super::nft::FAMILY6),
        fw.iptables_rules("filter"),
        iptables_nat,
        localnet_guard,
    );
    RulesetSide {
        iptables,
        iptables_nat,
        libvirt_nft,
        libvirt_nft6,
        localnet_guard,
        route_localnet,
        route_localnet_elsewhere,
        sysctl_writable,
    }
}

/// Gathers the facts for `declared` given the recorded networks; `removing`: forwards are being
/// taken out (their entries are looked for in every zone); `last`: the caller's record of its last
/// full read of the zones.
pub async fn facts(
    fw: &impl Reads,
    declared: &Declared,
    networks: Networks,
    removing: bool,
    last: &mut LastFullRead,
) -> Result<Facts, Error> {
    let (version_text, default_zone, policies) =
        tokio::try_join!(fw.version_text(), fw.default_zone(), fw.policies())?;
    let version = parse_version(&version_text).map_err(|e| Error::Protocol(e.to_string()))?;
    let scope = ReadScope::of(declared, &version, &default_zone);
    let zone_facts = async {
        if !scope.zones {
            return Ok(Default::default());
        }
        let active = fw.active_zones().await?;
        let only = last.zones_to_read(uplink_candidates(&default_zone, &active), removing);
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
    // The rest is independent reads (D-Bus calls, nft runs): all at once, so that a check costs
    // about its slowest read rather than the sum (it runs after every ruleset change).
    let bridge_zones = async {
        if !scope.bridge_zones {
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
    let (bridge_zones, side) =
        tokio::join!(bridge_zones, ruleset_side(fw, &networks, &scope, true));
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
        libvirt_nft: side.libvirt_nft,
        libvirt_nft6: side.libvirt_nft6,
        iptables: side.iptables,
        iptables_nat: side.iptables_nat,
        localnet_guard: side.localnet_guard,
        route_localnet: side.route_localnet,
        route_localnet_elsewhere: side.route_localnet_elsewhere,
        sysctl_writable: side.sysctl_writable,
    })
}

/// `basis` (a full gather's facts) with its ruleset side read again: the check after virtzone's
/// own ruleset-only changes, which firewalld's side cannot have seen change. iptables' nat table is
/// read only where the planner would look at it.
pub(super) async fn refresh_ruleset(fw: &impl Reads, basis: Facts, declared: &Declared) -> Facts {
    let scope = ReadScope::of(declared, &basis.version, &basis.default_zone);
    let nat = scope.localnet
        || scope.hairpin
        || basis.iptables_nat.as_deref().is_some_and(|l| {
            l.lines().any(|l| {
                l == format!("-N {}", super::iptables::HAIRPIN_CHAIN)
                    || l == format!("-N {}", super::iptables::LOCALNET_CHAIN)
            })
        });
    let side = ruleset_side(fw, &basis.networks, &scope, nat).await;
    Facts {
        libvirt_nft: side.libvirt_nft,
        libvirt_nft6: side.libvirt_nft6,
        iptables: side.iptables,
        iptables_nat: side.iptables_nat,
        localnet_guard: side.localnet_guard,
        route_localnet: side.route_localnet,
        route_localnet_elsewhere: side.route_localnet_elsewhere,
        sysctl_writable: side.sysctl_writable,
        ..basis
    }
}

/// How long to wait after a reload for libvirt to rebuild its chains (it does so on `Reloaded`).
const LIBVIRT_REBUILD: Duration = Duration::from_secs(10);

/// `nft -j list table FAMILY libvirt_network` (libvirt's nftables firewall backend), parsed;
/// `None` when the table does not exist, nft is missing, or its answer does not parse (then only
/// the iptables path is planned, as before libvirt had this backend).
pub(super) async fn libvirt_nft(
    fw: &impl Reads,
    family: &'static str,
) -> Option<super::nft::GuestInput> {
    let json = fw.nft_table(family, super::nft::TABLE).await?;
    match super::nft::GuestInput::parse(&json, family) {
        Ok(chain) => Some(chain),
        Err(e) => {
            tracing::warn!("cannot read libvirt's nftables table: {e}");
            None
        }
    }
}

/// Whether libvirt's iptables backend has its chains in place (`LIBVIRT_FWI` in the filter table).
async fn libvirt_iptables_present(fw: &impl Reads) -> bool {
    fw.iptables_rules("filter")
        .await
        .is_some_and(|l| l.lines().any(|l| l == "-N LIBVIRT_FWI"))
}

/// The libvirt-backend fact per bridge: whether libvirt keeps rules for `bridge` with either
/// firewall backend, as the one decision (`libvirt::firewall::Rules`) reads its two listings:
/// `iptables -S` of table `filter` (through firewalld) and libvirt's nftables chain `guest_input`.
pub async fn libvirt_rules_present(fw: &impl Reads, bridge: &str) -> bool {
    let (iptables, nft) = tokio::join!(
        fw.iptables_rules("filter"),
        libvirt_nft(fw, super::nft::FAMILY)
    );
    crate::libvirt::firewall::Rules::from_listings(iptables.as_deref(), nft.map(|c| c.bridges()))
        .present_for(bridge)
}

/// After a reload, polls (with a deadline) until libvirt has rebuilt its rules, so the accepts
/// are planned after libvirt's rebuild rather than wiped (iptables: `LIBVIRT_FWI` is back after the
/// flush) or buried behind its reject (nftables: libvirt re-inserts its rules at the top of
/// `guest_input` on `Reloaded`; `nft_before` is that chain before the reload). The daemon re-checks
/// on every ruleset change anyway; this keeps the CLI alone from racing libvirt.
pub(super) async fn wait_for_libvirt(fw: &impl Reads, nft_before: Option<super::nft::GuestInput>) {
    let start = Instant::now();
    let nft_before = nft_before.filter(|c| !c.bridges().is_empty());
    while start.elapsed() < LIBVIRT_REBUILD {
        if let Some(before) = &nft_before {
            if libvirt_nft(fw, super::nft::FAMILY)
                .await
                .is_some_and(|now| now.rebuilt_since(before))
            {
                return;
            }
        } else if libvirt_iptables_present(fw).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::reads::fake::Recorded;

    /// firewalld 1.3.3 (forwards are zone entries) with five zones, `eth0` in `public` and the
    /// network's bridge in `libvirt`.
    fn firewalld_1_3_3() -> Recorded {
        let zones: BTreeMap<String, Entries> = ["block", "dmz", "libvirt", "public", "work"]
            .into_iter()
            .map(|z| (z.to_string(), Entries::default()))
            .collect();
        let policies: BTreeMap<String, Entries> =
            [("allow-host-ipv6".to_string(), Entries::default())].into();
        Recorded {
            version: Some("1.3.3".into()),
            default_zone: "public".into(),
            zones: zones.clone(),
            permanent_zones: zones,
            policies: Some(policies.clone()),
            permanent_policies: Some(policies),
            interfaces: [
                ("eth0".to_string(), "public".to_string()),
                ("virbr1".to_string(), "libvirt".to_string()),
            ]
            .into(),
            iptables: [("filter".to_string(), "-P FORWARD ACCEPT\n".to_string())].into(),
            ..Recorded::default()
        }
    }

    fn count(calls: &[String], prefix: &str) -> usize {
        calls.iter().filter(|c| c.starts_with(prefix)).count()
    }

    #[tokio::test]
    async fn a_gather_reads_every_zone_once_per_owner_and_then_only_the_uplinks() {
        let fw = firewalld_1_3_3();
        let d = Declared::default();
        let mut daemon = LastFullRead::default();
        let f = facts(&fw, &d, Networks::default(), false, &mut daemon)
            .await
            .unwrap();
        assert_eq!(f.zones.len(), 5);
        assert_eq!(count(&fw.take_calls(), "getZoneSettings2"), 5);
        // The same owner's next check: the uplink zone only.
        let f = facts(&fw, &d, Networks::default(), false, &mut daemon)
            .await
            .unwrap();
        assert_eq!(f.zones.keys().collect::<Vec<_>>(), ["public"]);
        assert_eq!(count(&fw.take_calls(), "getZoneSettings2"), 1);
        // A second owner in the same process is not misled by the first one's reads (a
        // process-global record made it skip zones it never read).
        let mut command = LastFullRead::default();
        facts(&fw, &d, Networks::default(), false, &mut command)
            .await
            .unwrap();
        assert_eq!(count(&fw.take_calls(), "getZoneSettings2"), 5);
    }

    #[tokio::test]
    async fn the_check_after_own_ruleset_changes_reads_the_ruleset_only() {
        let fw = firewalld_1_3_3();
        let d = Declared::default();
        let basis = facts(&fw, &d, Networks::default(), false, &mut Default::default())
            .await
            .unwrap();
        let full = fw.take_calls();
        assert!(count(&full, "getZone") > 5, "{full:?}");
        let fresh = "-P FORWARD ACCEPT\n-N VIRTZONE_FWD\n";
        let fw = Recorded {
            iptables: [("filter".to_string(), fresh.to_string())].into(),
            ..firewalld_1_3_3()
        };
        let light = refresh_ruleset(&fw, basis.clone(), &d).await;
        assert_eq!(light.iptables.as_deref(), Some(fresh));
        assert_eq!(light.zones, basis.zones);
        // One firewalld call (the filter listing), no nat listing nobody plans with, no version,
        // zones, policies or interfaces; libvirt's nft tables are host reads.
        let calls = fw.take_calls();
        let dbus: Vec<&String> = calls.iter().filter(|c| !c.starts_with("nft")).collect();
        assert_eq!(dbus, ["passthrough -t filter -S"], "{calls:?}");
    }

    #[tokio::test]
    async fn libvirt_rules_present_answers_from_either_backend_through_the_reads() {
        let mut fw = firewalld_1_3_3();
        assert!(!libvirt_rules_present(&fw, "virbr1").await);
        fw.iptables.insert(
            "filter".into(),
            "-P FORWARD ACCEPT\n-N LIBVIRT_FWI\n".into(),
        );
        assert!(libvirt_rules_present(&fw, "virbr1").await);
    }
}
