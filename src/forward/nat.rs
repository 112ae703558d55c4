//! virtzone's own NAT table (issue #21): the masquerade of the NAT networks the hook records, in
//! `table ip virtzone_nat`, which no firewalld reload or restart touches.
//!
//! libvirt re-creates its masquerade one rule at a time after every firewalld reload and restart
//! (its iptables backend through firewalld's passthrough), and until it is back a guest's new
//! connections out leave un-NATed: measured 0.5–1.5 s per reload (docs/performance.md). The same
//! rules in a table of virtzone's own stay in place throughout. Its chain hooks `postrouting` at
//! priority `srcnat - 1`, before libvirt's and firewalld's NAT chains; the kernel binds a
//! connection's source NAT once, at the first chain that sets it, and skips the later NAT chains
//! for it, so libvirt's own masquerade (still there) never applies a second time.
//!
//! The rules copy libvirt's exactly, from what the hook recorded of the network's live XML: no NAT
//! for `224.0.0.0/24` and `255.255.255.255`, TCP and UDP masqueraded to the network's source ports
//! (`<nat><port>`, default 1024-65535), everything else masqueraded, all only for the subnet's
//! sources leaving to other destinations (and only out of `<forward dev>` when it names one).
//! Networks that SNAT to an address range (`<nat><address>`) stay with libvirt's rules, and so does
//! IPv6 (`<nat ipv6='yes'>`).
//!
//! Pure planning here ([`wanted`], [`plan`], [`commands`]); [`check`] reads the table with nft and
//! applies the plan through the executor ([`Step::OwnNat`]). The hook checks after recording a
//! network start or stop, the daemon at start and after every burst of ruleset changes (which
//! puts the table back after `nft flush ruleset`), `forward purge` removes it, and
//! `OwnNat=no` in virtzone.conf turns it off (the table goes at the next check).

use std::time::Duration;

use serde_json::Value;

use super::masquerade::{wanted_comments, Masquerade, CHAIN, FAMILY, PRIORITY, TABLE};
use super::network::{NetworkRecord, Networks};
use crate::change::executor::Live;
use crate::change::{Executor, Plan, Step};
use crate::firewalld::Firewalld;

/// How long one nft run (listing or transaction) may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// The masquerades virtzone carries: every running NAT network's IPv4 subnets whose record says
/// how libvirt NATs them (not an address range); none when `enabled` is false (`OwnNat=no`).
pub fn wanted(networks: &Networks, enabled: bool) -> Vec<Masquerade> {
    if !enabled {
        return Vec::new();
    }
    let mut out: Vec<Masquerade> = networks
        .networks
        .values()
        .filter(|r| r.active && r.forward == crate::libvirt::ForwardMode::Nat)
        .flat_map(of_record)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn of_record(r: &NetworkRecord) -> Vec<Masquerade> {
    let Some(nat) = r.nat.as_ref().filter(|n| !n.address_range) else {
        return Vec::new();
    };
    r.subnets
        .iter()
        .filter(|s| s.addr.is_ipv4())
        .map(|s| Masquerade {
            subnet: *s,
            dev: nat.dev.clone(),
            ports: nat.ports,
        })
        .collect()
}

/// The table as nft lists it: `None` when it is absent, else its base chain's shape (`type`,
/// `hook`, priority; `None` when the chain is missing) and its rules' comments in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    /// `(type, hook, prio)` of [`CHAIN`].
    pub chain: Option<(String, String, i64)>,
    /// The comments of the rules of [`CHAIN`], first to last (empty for a rule without one).
    pub comments: Vec<String>,
    /// Whether the table has anything else (another chain, a set): it is then made again.
    pub other: bool,
}

/// Parses `nft -j list table ip virtzone_nat`.
pub fn parse(json: &str) -> Result<Seen, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("nft printed bad JSON: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft's JSON has no \"nftables\" array")?;
    let mut seen = Seen::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            if c["name"] == CHAIN {
                seen.chain = Some((
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["hook"].as_str().unwrap_or_default().to_string(),
                    c["prio"].as_i64().unwrap_or(i64::MIN),
                ));
            } else {
                seen.other = true;
            }
        } else if let Some(r) = item.get("rule") {
            if r["chain"] == CHAIN {
                seen.comments
                    .push(r["comment"].as_str().unwrap_or_default().to_string());
            }
        } else if item.get("table").is_none() && item.get("metainfo").is_none() {
            seen.other = true;
        }
    }
    Ok(seen)
}

/// The step that makes the table right, if any: nothing when `seen` (`None`: no table) already
/// holds exactly the wanted rules in a chain of the right shape.
pub fn plan(wanted: &[Masquerade], seen: Option<&Seen>) -> Plan {
    let right = match seen {
        None => wanted.is_empty(),
        Some(s) => {
            !wanted.is_empty()
                && !s.other
                && s.chain == Some(("nat".to_string(), "postrouting".to_string(), PRIORITY))
                && s.comments == wanted_comments(wanted)
        }
    };
    Plan {
        steps: if right {
            Vec::new()
        } else {
            vec![Step::OwnNat {
                masquerades: wanted.to_vec(),
            }]
        },
        warnings: Vec::new(),
    }
}

/// Reads the table: `Ok(None)` when it is absent.
fn read_table() -> Result<Option<Seen>, String> {
    let tables = crate::external::nft_json(&["list", "tables", FAMILY])?;
    let tables: Value =
        serde_json::from_str(&tables).map_err(|e| format!("nft printed bad JSON: {e}"))?;
    let present = tables["nftables"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["table"]["name"] == TABLE));
    if !present {
        return Ok(None);
    }
    parse(&crate::external::nft_json(&[
        "list", "table", FAMILY, TABLE,
    ])?)
    .map(Some)
}

/// Whether the own NAT table is on: `OwnNat=` of virtzone.conf (default yes). A broken
/// configuration file is reported by every command; here it leaves the table on.
pub fn enabled() -> bool {
    crate::state::Config::load()
        .ok()
        .and_then(|c| c.own_nat)
        .unwrap_or(true)
}

/// What the table should hold for the networks recorded in `state` (the desired virtzone-own
/// NAT state; the heal-after-wipe code asks for it too).
pub fn desired(
    state: &crate::state::StateDir,
) -> Result<Vec<Masquerade>, super::error::ForwardError> {
    let store = super::store::store(state)?;
    if !store.path().is_dir() {
        return Ok(Vec::new());
    }
    Ok(wanted(&super::store::networks_in(&store)?, enabled()))
}

/// One check: reads the table, plans, applies through the executor. Returns whether anything was
/// changed; problems are logged (the network's own masquerade by libvirt stays meanwhile).
pub async fn check(fw: &Firewalld, wanted: &[Masquerade]) -> bool {
    let listing = tokio::task::spawn_blocking(read_table);
    let seen = match tokio::time::timeout(NFT_TIMEOUT, listing).await {
        Ok(Ok(Ok(seen))) => seen,
        Ok(Ok(Err(e))) => {
            tracing::warn!("virtzone's NAT table: cannot list it: {e}");
            return false;
        }
        _ => {
            tracing::warn!("virtzone's NAT table: nft did not answer within {NFT_TIMEOUT:?}");
            return false;
        }
    };
    let wanted_plan = plan(wanted, seen.as_ref());
    if wanted_plan.is_empty() {
        return false;
    }
    let live = Live::new(fw, None);
    match tokio::time::timeout(NFT_TIMEOUT, Executor::new(&live).run(&wanted_plan)).await {
        Ok(Ok(_)) => {
            tracing::info!(
                "virtzone's NAT table: {} ({} network subnet(s))",
                if seen.is_none() {
                    "put in place"
                } else if wanted.is_empty() {
                    "removed"
                } else {
                    "rewritten"
                },
                wanted.len()
            );
            true
        }
        Ok(Err(e)) => {
            tracing::error!("virtzone's NAT table: {e}");
            false
        }
        Err(_) => {
            tracing::error!("virtzone's NAT table: nft did not finish within {NFT_TIMEOUT:?}");
            false
        }
    }
}

/// [`check`] against what `state` records; a state that cannot be read changes nothing.
pub async fn check_state(fw: &Firewalld, state: &crate::state::StateDir) -> bool {
    match desired(state) {
        Ok(wanted) => check(fw, &wanted).await,
        Err(e) => {
            tracing::warn!("virtzone's NAT table: cannot read the recorded networks: {e}");
            false
        }
    }
}

/// The daemon's part: checks at start, then after every burst of ruleset changes (a wipe of the
/// ruleset takes the table away; nothing else does), until the netlink watch ends.
pub async fn run(fw: Firewalld, state: crate::state::StateDir) {
    let mut changes = match super::triggers::ruleset_changes() {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(
                "cannot watch the netfilter ruleset ({e}); virtzone's NAT table is checked at start only"
            );
            check_state(&fw, &state).await;
            return;
        }
    };
    loop {
        check_state(&fw, &state).await;
        if changes.recv().await.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::masquerade::{commands, rules};
    use crate::forward::network::NatRecord;
    use crate::names::BridgeName;

    fn record(subnets: &[&str], active: bool, nat: Option<NatRecord>) -> NetworkRecord {
        NetworkRecord {
            bridge: BridgeName::new("virbr1").unwrap(),
            forward: if nat.is_some() {
                crate::libvirt::ForwardMode::Nat
            } else {
                crate::libvirt::ForwardMode::Route
            },
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            host: vec![],
            active,
            hosts: vec![],
            nat,
        }
    }

    fn default_nat() -> Option<NatRecord> {
        Some(NatRecord {
            dev: None,
            address_range: false,
            ports: NatRecord::DEFAULT_PORTS,
            ipv6: false,
        })
    }

    fn nets(records: Vec<(&str, NetworkRecord)>) -> Networks {
        Networks {
            version: 1,
            networks: records
                .into_iter()
                .map(|(n, r)| (crate::names::NetworkName::new(n).unwrap(), r))
                .collect(),
        }
    }

    #[test]
    fn only_running_nat_networks_ipv4_without_an_address_range() {
        let ranged = Some(NatRecord {
            address_range: true,
            ..default_nat().unwrap()
        });
        let n = nets(vec![
            (
                "a",
                record(&["192.0.2.0/24", "2001:db8::/64"], true, default_nat()),
            ),
            ("b", record(&["198.51.100.0/24"], false, default_nat())),
            ("c", record(&["203.0.113.0/24"], true, None)),
            ("d", record(&["10.0.0.0/24"], true, ranged)),
        ]);
        let w = wanted(&n, true);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].subnet.to_string(), "192.0.2.0/24");
        assert_eq!(w[0].ports, (1024, 65535));
        assert!(wanted(&n, false).is_empty(), "OwnNat=no");
    }

    #[test]
    fn the_rules_copy_libvirts_exceptions_and_ports() {
        let m = Masquerade {
            subnet: "192.0.2.0/24".parse().unwrap(),
            dev: Some("eth1".into()),
            ports: (2000, 3000),
        };
        let r = rules(&m);
        let text: Vec<String> = r.iter().map(|(_, e)| e.to_string()).collect();
        assert_eq!(r.len(), 5);
        assert!(text[0].contains("224.0.0.0") && text[0].contains("return"));
        assert!(text[1].contains("255.255.255.255") && text[1].contains("return"));
        for (t, proto) in [(&text[2], "tcp"), (&text[3], "udp")] {
            assert!(t.contains(proto) && t.contains("[2000,3000]"), "{t}");
            assert!(t.contains(r#""op":"!=""#), "! -d net: {t}");
        }
        assert!(text[4].contains(r#""masquerade":null"#) && text[4].contains(r#""op":"!=""#));
        for t in &text {
            assert!(t.contains(r#""addr":"192.0.2.0","len":24"#), "-s net: {t}");
            assert!(t.contains("eth1"), "-o dev: {t}");
        }
    }

    #[test]
    fn the_commands_parse_as_nft_commands() {
        // What the executor does with them before nft runs: a command the nftables crate
        // cannot represent would fail there.
        let m = Masquerade {
            subnet: "192.0.2.0/24".parse().unwrap(),
            dev: None,
            ports: NatRecord::DEFAULT_PORTS,
        };
        for cmds in [commands(&[m]), commands(&[])] {
            for c in cmds {
                serde_json::from_value::<nftables::schema::NfCmd<'static>>(c.clone())
                    .unwrap_or_else(|e| panic!("{c}: {e}"));
            }
        }
        assert_eq!(
            commands(&[]).len(),
            2,
            "add and delete: gone, present or not"
        );
    }

    #[test]
    fn plans_from_the_listing() {
        let m = Masquerade {
            subnet: "192.0.2.0/24".parse().unwrap(),
            dev: None,
            ports: NatRecord::DEFAULT_PORTS,
        };
        let good = Seen {
            chain: Some(("nat".into(), "postrouting".into(), PRIORITY)),
            comments: wanted_comments(std::slice::from_ref(&m)),
            other: false,
        };
        let put = vec![Step::OwnNat {
            masquerades: vec![m.clone()],
        }];
        let remove = vec![Step::OwnNat {
            masquerades: vec![],
        }];
        assert!(plan(std::slice::from_ref(&m), Some(&good)).is_empty());
        assert!(plan(&[], None).is_empty());
        assert_eq!(plan(std::slice::from_ref(&m), None).steps, put, "wiped");
        assert_eq!(plan(&[], Some(&good)).steps, remove, "network gone");
        let mut short = good.clone();
        short.comments.pop();
        assert_eq!(plan(std::slice::from_ref(&m), Some(&short)).steps, put);
        let mut moved = good.clone();
        moved.chain = Some(("nat".into(), "postrouting".into(), 100));
        assert_eq!(plan(std::slice::from_ref(&m), Some(&moved)).steps, put);
    }

    #[test]
    fn parses_nfts_listing() {
        let json = r#"{"nftables":[{"metainfo":{"json_schema_version":1}},
            {"table":{"family":"ip","name":"virtzone_nat","handle":1}},
            {"chain":{"family":"ip","table":"virtzone_nat","name":"postrouting","handle":1,
              "type":"nat","hook":"postrouting","prio":99,"policy":"accept"}},
            {"rule":{"family":"ip","table":"virtzone_nat","chain":"postrouting","handle":2,
              "comment":"virtzone-nat 192.0.2.0/24 masquerade","expr":[]}}]}"#;
        let s = parse(json).unwrap();
        assert_eq!(
            s.chain,
            Some(("nat".into(), "postrouting".into(), PRIORITY))
        );
        assert_eq!(s.comments, ["virtzone-nat 192.0.2.0/24 masquerade"]);
        assert!(!s.other);
        assert!(parse("{").is_err());
    }
}
