//! The daemon's forward check against the recording fakes (no root, no bus): a check after the
//! daemon's own ruleset-only changes reads the ruleset side only, over the full gather before it.

use super::*;
use crate::change::converge::fake::FakeSeam;
use crate::change::executor::fake::Fake;
use crate::forward::ops::tests::{add_request, count, firewalld_1_3_3, state_with_network};
use crate::forward::store::{FORWARDS_FILE, STORE_DIR};

#[tokio::test]
async fn the_watchs_check_after_its_own_ruleset_changes_reads_only_the_ruleset() {
    let (_dir, state) = state_with_network();
    let declared = Declared {
        forwards: vec![add_request().forward(1)],
        next_id: 2,
        ..Declared::default()
    };
    StateDir::at(state.path().join(STORE_DIR))
        .write(FORWARDS_FILE, &declared)
        .unwrap();
    // A reload dropped the accept (iptables), the DNAT (a zone entry) is in place.
    let mut reads = firewalld_1_3_3();
    let dnat: crate::firewalld::ForwardPortEntry =
        ("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into());
    for zones in [&mut reads.zones, &mut reads.permanent_zones] {
        if let Some(public) = zones.get_mut("public") {
            public.forward_ports.insert(dnat.clone());
        }
    }
    let seam = FakeSeam {
        reads,
        mutations: Fake::default(),
    };
    let mut memo = Memo::by_the_watch();

    // The first check: a full gather, and only ruleset steps (the accept) planned and applied.
    let done = reconcile_checked(&seam, &state, None, &mut memo)
        .await
        .unwrap();
    assert!(done.steps > 0);
    let full = seam.reads.take_calls();
    assert_eq!(count(&full, "getDefaultZone"), 1, "{full:?}");
    let changes = seam.mutations.calls();
    assert!(
        changes.iter().all(|c| c.starts_with("passthrough")),
        "{changes:?}"
    );
    // The watch verifies through its next ruleset event, not with another gather here; the full
    // gather is kept for that check.
    assert!(memo.has_ruleset_basis());

    // That next check: no NameHasOwner, no zones or policies: the filter listing only (and the
    // host's reads: nft, /proc/sys).
    reconcile_checked(&seam, &state, None, &mut memo)
        .await
        .unwrap();
    let light = seam.reads.take_calls();
    let dbus: Vec<&String> = light
        .iter()
        .filter(|c| !c.starts_with("nft") && !c.starts_with("sysctl"))
        .collect();
    assert_eq!(dbus, ["passthrough -t filter -S"], "{light:?}");

    // Something else woke it (a state file changed): a full gather again.
    memo.forget_ruleset_basis();
    reconcile_checked(&seam, &state, None, &mut memo)
        .await
        .unwrap();
    assert_eq!(count(&seam.reads.take_calls(), "getDefaultZone"), 1);
}

/// libvirt 12's own rules for virbr1 in `guest_input` (from the lab's listing), none of virtzone's.
const LIBVIRT_CHAIN: &str = r#"{"nftables": [{"metainfo": {"version": "1.1.7", "json_schema_version": 1}},
 {"table": {"family": "ip", "name": "libvirt_network", "handle": 5}},
 {"chain": {"family": "ip", "table": "libvirt_network", "name": "guest_input", "handle": 4}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 39,
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr1"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}},
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
            {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "ip", "table": "libvirt_network", "chain": "guest_input", "handle": 36,
   "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "virbr1"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"reject": {"type": "icmp", "expr": "port-unreachable"}}]}}
]}"#;

#[tokio::test]
async fn after_a_reload_the_accepts_in_libvirts_chain_come_back_before_the_binding_reconcile() {
    let (_dir, state) = state_with_network();
    let declared = Declared {
        forwards: vec![add_request().forward(1)],
        next_id: 2,
        ..Declared::default()
    };
    let store = StateDir::at(state.path().join(STORE_DIR));
    store.write(FORWARDS_FILE, &declared).unwrap();
    let mut reads = firewalld_1_3_3();
    reads.nft.insert("ip".into(), LIBVIRT_CHAIN.into());
    let seam = FakeSeam {
        reads,
        mutations: Fake::default(),
    };
    let mut memo = Memo::by_the_watch();
    // The daemon's full check puts the accept into libvirt's chain (and keeps its gather).
    reconcile_checked(&seam, &state, None, &mut memo)
        .await
        .unwrap();
    let nft = |calls: Vec<String>| calls.into_iter().filter(|c| c.starts_with("nft ")).count();
    assert_eq!(nft(seam.mutations.calls()), 1);
    seam.reads.take_calls();

    // A reload: libvirt rebuilt its chain without virtzone's accept (the fake's listing). The
    // early pass puts it back from the kept gather, reading libvirt's chain and nothing of
    // firewalld's.
    early_accepts(&seam, &state, &memo).await;
    assert_eq!(nft(seam.mutations.calls()), 2);
    let reads = seam.reads.take_calls();
    assert!(
        reads.iter().all(|c| c.starts_with("nft list table")),
        "{reads:?}"
    );

    // A declaration changed since that gather: the early pass leaves it to the full check.
    let mut changed = declared.clone();
    changed.forwards.clear();
    store.write(FORWARDS_FILE, &changed).unwrap();
    early_accepts(&seam, &state, &memo).await;
    assert_eq!(nft(seam.mutations.calls()), 2);
}
