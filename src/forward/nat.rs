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
//! The table also carries each plain forward's DNAT (chain `prerouting` at `dstnat - 1`), copied
//! from the forward-port firewalld holds in virtzone's `ANY → HOST` policy (firewalld >= 2.2,
//! [`Shape::Policy`](super::plan::Shape)): firewalld's reload re-creates its policies in a later
//! transaction than its zones, and a firewalld restart takes them away until firewalld is back
//! (measured with `ReloadPolicy=ACCEPT`: 60-140 ms per reload, 0.7-1 s per restart). Only
//! forwards that firewalld holds as a plain forward-port are copied (all of the host's addresses,
//! one IPv4 guest, one port on each side); the DNAT of the other kinds (a host address, ranges,
//! IPv6, the host's loopback, domain forwards) and of firewalld < 2.2 (zone entries, whose ingress
//! is the zones' interfaces) stays with firewalld alone. The kernel binds a connection's DNAT at
//! the first NAT chain that sets it, so firewalld's own forward-port never applies a second time.
//!
//! Pure planning here ([`wanted`], [`wanted_dnats`], [`plan`], and
//! [`commands`](super::masquerade::commands)); [`check`] reads the table with nft and
//! applies the plan through the executor ([`Step::OwnNat`]). The hook checks after recording a
//! network start or stop, the daemon at start and after every burst of ruleset changes (which
//! puts the table back after `nft flush ruleset`), `forward purge` removes it, and
//! `OwnNat=no` in virtzone.conf turns it off (the table goes at the next check).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::masquerade::{
    wanted_comments, Dnat, Masquerade, CHAIN, DNAT_CHAIN, DNAT_PRIORITY, FAMILY, PRIORITY, TABLE,
};
use super::model::{is_localnet, Declared};
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

/// The DNATs virtzone carries: every declared forward on a running network that firewalld holds
/// as a plain forward-port of virtzone's policy (see the module's doc); none when `policy` is false
/// (firewalld < 2.2 holds forwards in zones) or `enabled` is false (`OwnNat=no`).
pub fn wanted_dnats(
    declared: &Declared,
    networks: &Networks,
    policy: bool,
    enabled: bool,
) -> Vec<Dnat> {
    if !policy || !enabled {
        return Vec::new();
    }
    let mut out: Vec<Dnat> = declared
        .forwards
        .iter()
        .filter(|f| !is_localnet(f) && f.host_address.is_none())
        .filter(|f| f.host_port.len() == 1 && f.guest_port.len() == 1)
        .filter(|f| networks.networks.get(&f.network).is_some_and(|r| r.active))
        .filter_map(|f| match f.guest {
            std::net::IpAddr::V4(to_addr) => Some(Dnat {
                proto: f.proto.as_str().to_string(),
                port: f.host_port.lo,
                to_addr,
                to_port: f.guest_port.lo,
            }),
            std::net::IpAddr::V6(_) => None,
        })
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
    /// `(type, hook, prio)` of [`DNAT_CHAIN`].
    pub dnat_chain: Option<(String, String, i64)>,
    /// The comments of the rules of [`DNAT_CHAIN`], first to last.
    pub dnat_comments: Vec<String>,
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
    let shape = |c: &Value| {
        Some((
            c["type"].as_str().unwrap_or_default().to_string(),
            c["hook"].as_str().unwrap_or_default().to_string(),
            c["prio"].as_i64().unwrap_or(i64::MIN),
        ))
    };
    for item in items {
        if let Some(c) = item.get("chain") {
            if c["name"] == CHAIN {
                seen.chain = shape(c);
            } else if c["name"] == DNAT_CHAIN {
                seen.dnat_chain = shape(c);
            } else {
                seen.other = true;
            }
        } else if let Some(r) = item.get("rule") {
            let comment = r["comment"].as_str().unwrap_or_default().to_string();
            if r["chain"] == CHAIN {
                seen.comments.push(comment);
            } else if r["chain"] == DNAT_CHAIN {
                seen.dnat_comments.push(comment);
            }
        } else if item.get("table").is_none() && item.get("metainfo").is_none() {
            seen.other = true;
        }
    }
    Ok(seen)
}

/// The step that makes the table right, if any: nothing when `seen` (`None`: no table) already
/// holds exactly the wanted rules, each kind in a chain of the right shape (and no chain for a
/// kind with no rules).
pub fn plan(wanted: &[Masquerade], dnats: &[Dnat], seen: Option<&Seen>) -> Plan {
    let chain_right =
        |chain: &Option<(String, String, i64)>, hook: &str, prio: i64, rules: bool| {
            if rules {
                chain.as_ref() == Some(&("nat".to_string(), hook.to_string(), prio))
            } else {
                chain.is_none()
            }
        };
    let right = match seen {
        None => wanted.is_empty() && dnats.is_empty(),
        Some(s) => {
            (!wanted.is_empty() || !dnats.is_empty())
                && !s.other
                && chain_right(&s.chain, "postrouting", PRIORITY, !wanted.is_empty())
                && s.comments == wanted_comments(wanted)
                && chain_right(
                    &s.dnat_chain,
                    "prerouting",
                    DNAT_PRIORITY,
                    !dnats.is_empty(),
                )
                && s.dnat_comments == dnats.iter().map(Dnat::comment).collect::<Vec<_>>()
        }
    };
    Plan {
        steps: if right {
            Vec::new()
        } else {
            vec![Step::OwnNat {
                masquerades: wanted.to_vec(),
                dnats: dnats.to_vec(),
            }]
        },
        warnings: Vec::new(),
    }
}

/// What the last firewalld answer said about where forwards live: [`SHAPE_UNKNOWN`] before any,
/// then [`SHAPE_ZONE`] or [`SHAPE_POLICY`]. While firewalld is away (a restart) the DNATs stay as
/// the last answer had them, which is the point of carrying them.
static SHAPE: AtomicU8 = AtomicU8::new(SHAPE_UNKNOWN);
const SHAPE_UNKNOWN: u8 = 0;
const SHAPE_ZONE: u8 = 1;
const SHAPE_POLICY: u8 = 2;

/// Whether firewalld holds forwards in virtzone's policy (firewalld >= 2.2), from its version when
/// it runs, else from its last answer (`false` before any). Asked only when firewalld owns its bus
/// name: a call to a stopped firewalld could activate it.
async fn forwards_in_policy(fw: &Firewalld) -> bool {
    let ask = async {
        match fw.is_running().await {
            Ok(true) => fw.version_text().await.ok(),
            _ => None,
        }
    };
    if let Ok(Some(text)) = tokio::time::timeout(NFT_TIMEOUT, ask).await {
        if let Ok(v) = crate::firewalld::parse_version(&text) {
            let policy = crate::firewalld::Capabilities::of(&v).policy_forward_to_addr;
            SHAPE.store(
                if policy { SHAPE_POLICY } else { SHAPE_ZONE },
                Ordering::Relaxed,
            );
        }
    }
    SHAPE.load(Ordering::Relaxed) == SHAPE_POLICY
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

/// What the table should hold for the networks and forwards recorded in `state`: the masquerades
/// and (when `policy`: firewalld holds forwards in virtzone's policy) the DNATs.
pub fn desired(
    state: &crate::state::StateDir,
    policy: bool,
) -> Result<(Vec<Masquerade>, Vec<Dnat>), super::ForwardError> {
    desired_in(&super::store(state)?, policy)
}

/// [`desired`] from the forwards' store `store`.
fn desired_in(
    store: &crate::state::StateDir,
    policy: bool,
) -> Result<(Vec<Masquerade>, Vec<Dnat>), super::ForwardError> {
    if !store.path().is_dir() {
        return Ok((Vec::new(), Vec::new()));
    }
    let networks = super::networks_in(store)?;
    let on = enabled();
    let dnats = if policy && on {
        wanted_dnats(&super::declared_in(store)?, &networks, policy, on)
    } else {
        Vec::new()
    };
    Ok((wanted(&networks, on), dnats))
}

/// One check: reads the table, plans, applies through the executor. Returns whether anything was
/// changed; problems are logged (the network's own masquerade by libvirt, and firewalld's
/// forward-ports, stay meanwhile).
pub async fn check(fw: &Firewalld, wanted: &[Masquerade], dnats: &[Dnat]) -> bool {
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
    let wanted_plan = plan(wanted, dnats, seen.as_ref());
    if wanted_plan.is_empty() {
        return false;
    }
    let live = Live::new(fw, None);
    match tokio::time::timeout(NFT_TIMEOUT, Executor::new(&live).run(&wanted_plan)).await {
        Ok(Ok(_)) => {
            tracing::info!(
                "virtzone's NAT table: {} ({} network subnet(s), {} forward(s))",
                if seen.is_none() {
                    "put in place"
                } else if wanted.is_empty() && dnats.is_empty() {
                    "removed"
                } else {
                    "rewritten"
                },
                wanted.len(),
                dnats.len()
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
    let policy = forwards_in_policy(fw).await;
    match desired(state, policy) {
        Ok((wanted, dnats)) => check(fw, &wanted, &dnats).await,
        Err(e) => {
            tracing::warn!("virtzone's NAT table: cannot read the recorded networks: {e}");
            false
        }
    }
}

/// [`check_state`] from the forwards' store `store` (after a forward was added or removed).
pub(super) async fn check_store(fw: &Firewalld, store: &crate::state::StateDir) -> bool {
    let policy = forwards_in_policy(fw).await;
    match desired_in(store, policy) {
        Ok((wanted, dnats)) => check(fw, &wanted, &dnats).await,
        Err(e) => {
            tracing::warn!("virtzone's NAT table: cannot read the recorded forwards: {e}");
            false
        }
    }
}

/// The daemon's part: checks at start, then after every burst of ruleset changes (a wipe of the
/// ruleset takes the table away; nothing else does), until the netlink watch ends.
pub async fn run(fw: Firewalld, state: crate::state::StateDir) {
    let mut changes = match super::watch::ruleset_changes() {
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
        let d = dnat(8080, "192.0.2.50", 80);
        for cmds in [
            commands(std::slice::from_ref(&m), &[]),
            commands(&[m], std::slice::from_ref(&d)),
            commands(&[], &[d]),
            commands(&[], &[]),
        ] {
            for c in cmds {
                serde_json::from_value::<nftables::schema::NfCmd<'static>>(c.clone())
                    .unwrap_or_else(|e| panic!("{c}: {e}"));
            }
        }
        assert_eq!(
            commands(&[], &[]).len(),
            2,
            "add and delete: gone, present or not"
        );
    }

    fn dnat(port: u16, to: &str, to_port: u16) -> Dnat {
        Dnat {
            proto: "tcp".into(),
            port,
            to_addr: to.parse().unwrap(),
            to_port,
        }
    }

    #[test]
    fn the_dnat_rule_is_firewalds_forward_port() {
        let cmds = commands(&[], &[dnat(8080, "192.0.2.50", 80)]);
        let text: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
        let chain = text.iter().find(|c| c.contains("\"chain\":{")).unwrap();
        assert!(
            chain.contains(r#""hook":"prerouting""#) && chain.contains(r#""prio":-101"#),
            "before firewalld's dstnat + 10 and Docker's dstnat: {chain}"
        );
        assert!(
            !text.iter().any(|c| c.contains("postrouting")),
            "no masquerade chain without masquerades: {text:?}"
        );
        let rule = text.last().unwrap();
        for part in [
            r#""payload":{"field":"dport","protocol":"tcp"}},"op":"==","right":8080"#,
            r#""dnat":{"addr":"192.0.2.50","port":80}"#,
            "virtzone-dnat tcp 8080 to 192.0.2.50:80",
        ] {
            assert!(rule.contains(part), "{part} in {rule}");
        }
        assert!(
            !rule.contains("saddr") && !rule.contains("daddr") && !rule.contains("iif"),
            "like firewalld's ANY → HOST forward-port: every interface, every destination: {rule}"
        );
    }

    #[test]
    fn only_plain_ipv4_forwards_of_running_networks_in_the_policy_are_carried() {
        use crate::forward::model::{Forward, ForwardRule, PortMap};
        let forward = |id: u32, net: &str, guest: &str, ports: &str, host: Option<&str>| Forward {
            id,
            network: crate::names::NetworkName::new(net).unwrap(),
            guest: guest.parse().unwrap(),
            rule: ForwardRule::new(
                ports.parse::<PortMap>().unwrap(),
                host.map(|h| h.parse().unwrap()),
                false,
                false,
            ),
        };
        let declared = Declared {
            forwards: vec![
                forward(1, "a", "192.0.2.50", "tcp/8080:80", None),
                forward(2, "a", "192.0.2.50", "udp/5353", None),
                forward(3, "a", "192.0.2.50", "tcp/9000-9010", None),
                forward(4, "a", "192.0.2.50", "tcp/8443:443", Some("198.51.100.1")),
                forward(5, "a", "2001:db8::5", "tcp/8081:80", None),
                forward(6, "b", "198.51.100.5", "tcp/8082:80", None),
                forward(7, "a", "192.0.2.51", "tcp/2222:22", Some("127.0.0.1")),
            ],
            ..Declared::default()
        };
        let n = nets(vec![
            ("a", record(&["192.0.2.0/24"], true, default_nat())),
            ("b", record(&["198.51.100.0/24"], false, default_nat())),
        ]);
        let mut udp = dnat(5353, "192.0.2.50", 5353);
        udp.proto = "udp".into();
        assert_eq!(
            wanted_dnats(&declared, &n, true, true),
            vec![dnat(8080, "192.0.2.50", 80), udp]
        );
        assert!(wanted_dnats(&declared, &n, false, true).is_empty(), "zones");
        assert!(
            wanted_dnats(&declared, &n, true, false).is_empty(),
            "OwnNat=no"
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
            ..Seen::default()
        };
        let put = vec![Step::OwnNat {
            masquerades: vec![m.clone()],
            dnats: vec![],
        }];
        let remove = vec![Step::OwnNat {
            masquerades: vec![],
            dnats: vec![],
        }];
        let ms = std::slice::from_ref(&m);
        assert!(plan(ms, &[], Some(&good)).is_empty());
        assert!(plan(&[], &[], None).is_empty());
        assert_eq!(plan(ms, &[], None).steps, put, "wiped");
        assert_eq!(plan(&[], &[], Some(&good)).steps, remove, "network gone");
        let mut short = good.clone();
        short.comments.pop();
        assert_eq!(plan(ms, &[], Some(&short)).steps, put);
        let mut moved = good.clone();
        moved.chain = Some(("nat".into(), "postrouting".into(), 100));
        assert_eq!(plan(ms, &[], Some(&moved)).steps, put);

        // The forwards' DNATs: a new one, one gone, an empty chain left over.
        let d = dnat(8080, "192.0.2.50", 80);
        let with_dnat = vec![Step::OwnNat {
            masquerades: vec![m.clone()],
            dnats: vec![d.clone()],
        }];
        assert_eq!(
            plan(ms, std::slice::from_ref(&d), Some(&good)).steps,
            with_dnat
        );
        let both = Seen {
            dnat_chain: Some(("nat".into(), "prerouting".into(), DNAT_PRIORITY)),
            dnat_comments: vec![d.comment()],
            ..good.clone()
        };
        assert!(plan(ms, std::slice::from_ref(&d), Some(&both)).is_empty());
        assert_eq!(plan(ms, &[], Some(&both)).steps, put, "forward removed");
        let empty_chain = Seen {
            dnat_comments: vec![],
            ..both.clone()
        };
        assert_eq!(plan(ms, &[], Some(&empty_chain)).steps, put);
        let mut other = both.clone();
        other.dnat_comments = vec![dnat(8081, "192.0.2.50", 80).comment()];
        assert_eq!(
            plan(ms, std::slice::from_ref(&d), Some(&other)).steps,
            with_dnat
        );
    }

    #[test]
    fn parses_nfts_listing() {
        let json = r#"{"nftables":[{"metainfo":{"json_schema_version":1}},
            {"table":{"family":"ip","name":"virtzone_nat","handle":1}},
            {"chain":{"family":"ip","table":"virtzone_nat","name":"postrouting","handle":1,
              "type":"nat","hook":"postrouting","prio":99,"policy":"accept"}},
            {"rule":{"family":"ip","table":"virtzone_nat","chain":"postrouting","handle":2,
              "comment":"virtzone-nat 192.0.2.0/24 masquerade","expr":[]}},
            {"chain":{"family":"ip","table":"virtzone_nat","name":"prerouting","handle":3,
              "type":"nat","hook":"prerouting","prio":-101,"policy":"accept"}},
            {"rule":{"family":"ip","table":"virtzone_nat","chain":"prerouting","handle":4,
              "comment":"virtzone-dnat tcp 8080 to 192.0.2.50:80","expr":[]}}]}"#;
        let s = parse(json).unwrap();
        assert_eq!(
            s.chain,
            Some(("nat".into(), "postrouting".into(), PRIORITY))
        );
        assert_eq!(s.comments, ["virtzone-nat 192.0.2.0/24 masquerade"]);
        assert_eq!(
            s.dnat_chain,
            Some(("nat".into(), "prerouting".into(), DNAT_PRIORITY))
        );
        assert_eq!(s.dnat_comments, ["virtzone-dnat tcp 8080 to 192.0.2.50:80"]);
        assert!(!s.other);
        assert!(parse("{").is_err());
    }
}
