//! The orchestration of `forward add` and `allow add` against the recording fakes of both sides of
//! the seam (no root, no bus): what is read, what is changed, what is recorded, and what an error
//! means. The real-daemon tests of the same paths are `tests/forwards.rs`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::change::converge::fake::FakeSeam;
use crate::change::executor::fake::Fake;
use crate::change::reads::fake::Recorded;
use crate::firewalld::Entries;
use crate::forward::network::{NetworkRecord, Subnet, NETWORKS_FILE};
use crate::forward::store::{FORWARDS_FILE, STORE_DIR};

/// firewalld 1.3.3 (forwards are zone entries) with `eth0` in `public` and the network's bridge
/// in `libvirt`; libvirt's iptables backend in place.
pub(in crate::forward) fn firewalld_1_3_3() -> Recorded {
    let zones: BTreeMap<String, Entries> = ["libvirt", "public"]
        .into_iter()
        .map(|z| (z.to_string(), Entries::default()))
        .collect();
    Recorded {
        version: Some("1.3.3".into()),
        default_zone: "public".into(),
        zones: zones.clone(),
        permanent_zones: zones,
        policies: Some(BTreeMap::new()),
        permanent_policies: Some(BTreeMap::new()),
        interfaces: [
            ("eth0".to_string(), "public".to_string()),
            ("virbr1".to_string(), "libvirt".to_string()),
        ]
        .into(),
        iptables: [(
            "filter".to_string(),
            "-P FORWARD ACCEPT\n-N LIBVIRT_FWI\n".to_string(),
        )]
        .into(),
        services: ["http".to_string(), "ssh".to_string()].into(),
        ..Recorded::default()
    }
}

/// The fakes have no NAT table of virtzone's to check after a record.
impl crate::forward::reconcile::AfterRecord for FakeSeam {
    async fn after_record(&self, _store: &StateDir) {}
}

/// A state directory whose forwards' store records NAT network `n1` (virbr1, 192.0.2.0/24).
pub(in crate::forward) fn state_with_network() -> (tempfile::TempDir, StateDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut networks = Networks::default();
    networks.networks.insert(
        "n1".parse().unwrap(),
        NetworkRecord {
            bridge: crate::names::BridgeName::new("virbr1").unwrap(),
            forward: ForwardMode::Nat,
            subnets: vec!["192.0.2.0/24".parse::<Subnet>().unwrap()],
            host: vec!["192.0.2.1".parse().unwrap()],
            active: true,
            hosts: vec![],
            nat: None,
        },
    );
    StateDir::at(path.join(STORE_DIR))
        .write(NETWORKS_FILE, &networks)
        .unwrap();
    (dir, StateDir::at(path))
}

pub(in crate::forward) fn add_request() -> AddForward {
    AddForward {
        network: "n1".parse().unwrap(),
        guest: "192.0.2.5".parse().unwrap(),
        rule: ForwardRule::new("tcp/8080:80".parse().unwrap(), None, false, false),
        route_localnet: false,
    }
}

fn recorded(state: &StateDir) -> Declared {
    crate::forward::store::read_declared(state).unwrap()
}

pub(in crate::forward) fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

#[tokio::test]
async fn forward_add_gathers_changes_through_the_executor_and_records() {
    let (_dir, state) = state_with_network();
    let seam = FakeSeam {
        reads: firewalld_1_3_3(),
        mutations: Fake::default(),
    };
    let out = add_forward_on(&state, add_request(), async || Ok(&seam))
        .await
        .unwrap();
    assert_eq!(out, "forward 1: host tcp/8080 → n1 192.0.2.5 port 80");
    // Recorded once applied.
    let d = recorded(&state);
    assert_eq!((d.forwards.len(), d.next_id), (1, 2));
    // Read through the seam's read side: firewalld's version, zones and policies, the ruleset.
    let reads = seam.reads.take_calls();
    assert!(count(&reads, "getDefaultZone") >= 1, "{reads:?}");
    assert!(count(&reads, "passthrough -t filter -S") >= 1, "{reads:?}");
    // Changed only through the executor: the DNAT into the uplink zone, both layers, and the
    // accept in libvirt's iptables chain. The fake firewalld never takes a change in, so each
    // round plans the same again: the runner stops after its bounded rounds (3).
    let changes = seam.mutations.calls();
    let dnat = changes
        .iter()
        .filter(|c| c.contains("8080") && c.contains("public"))
        .count();
    assert!(dnat >= 1, "{changes:?}");
    assert_eq!(count(&reads, "getDefaultZone"), 3, "{reads:?}");
    assert!(
        changes
            .iter()
            .any(|c| c.contains("-A VIRTZONE_FWD -d 192.0.2.5/32")),
        "{changes:?}"
    );
}

#[tokio::test]
async fn a_record_that_cannot_be_written_is_undone_by_planning_back_to_the_old_one() {
    let (_dir, state) = state_with_network();
    // firewalld and iptables as the add's steps leave them (the fakes never change): its DNAT in
    // the uplink zone, both layers, and its accept.
    let mut reads = firewalld_1_3_3();
    let dnat: crate::firewalld::ForwardPortEntry =
        ("8080".into(), "tcp".into(), "80".into(), "192.0.2.5".into());
    for zones in [&mut reads.zones, &mut reads.permanent_zones] {
        if let Some(public) = zones.get_mut("public") {
            public.forward_ports.insert(dnat.clone());
        }
    }
    reads.iptables.insert(
        "filter".into(),
        "-P FORWARD ACCEPT\n-N LIBVIRT_FWI\n-N VIRTZONE_FWD\n-A FORWARD -j VIRTZONE_FWD\n\
         -A VIRTZONE_FWD -d 192.0.2.5/32 -o virbr1 -p tcp -m tcp --dport 80 -m conntrack \
         --ctstate DNAT -m comment --comment virtzone-fwd -j ACCEPT\n"
            .into(),
    );
    let seam = FakeSeam {
        reads,
        mutations: Fake::default(),
    };
    let store = state.path().join(STORE_DIR);
    // Once the request is judged (this is when it connects), the record's place is taken by a
    // directory: the rename of the new record over it fails.
    let connect = async || {
        std::fs::create_dir_all(store.join(FORWARDS_FILE).join("x")).unwrap();
        Ok(&seam)
    };
    let err = add_forward_on(&state, add_request(), connect)
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Failed(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("the change to firewalld was undone"),
        "{err}"
    );
    // Nothing was left to add; the undo gathered again and took out what the add would leave:
    // the DNAT in both layers and the accept (which has no inverse step to undo it with).
    let changes = seam.mutations.calls();
    assert!(!changes.iter().any(|c| c.starts_with("add")), "{changes:?}");
    for removal in [
        "removeForwardPort public 8080",
        "config.removeForwardPort public 8080",
    ] {
        assert!(
            changes.iter().any(|c| c.starts_with(removal)),
            "{changes:?}"
        );
    }
    assert!(
        changes.iter().any(|c| c.contains("-D VIRTZONE_FWD")),
        "{changes:?}"
    );
    // One gather for the add, then the undo's (bounded: the fakes never change, so it plans the
    // same removal in each of its 3 rounds).
    assert_eq!(count(&seam.reads.take_calls(), "getDefaultZone"), 1 + 3);
}

#[tokio::test]
async fn a_failed_read_is_a_read_error_and_changes_nothing() {
    let (_dir, state) = state_with_network();
    // firewalld's name has no owner: every read fails.
    let seam = FakeSeam {
        reads: Recorded {
            version: None,
            ..firewalld_1_3_3()
        },
        mutations: Fake::default(),
    };
    let err = add_forward_on(&state, add_request(), async || Ok(&seam))
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Firewalld(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("cannot read firewalld's state"), "{text}");
    assert!(!text.contains("refused"), "{text}");
    assert_eq!(seam.mutations.calls(), Vec::<String>::new());
    assert!(recorded(&state).forwards.is_empty());
    // A firewalld that does not answer one read: the same, and the sentence says so.
    let seam = FakeSeam {
        reads: Recorded {
            fail_reads: vec!["getZoneSettings2"],
            ..firewalld_1_3_3()
        },
        mutations: Fake::default(),
    };
    let err = add_forward_on(&state, add_request(), async || Ok(&seam))
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Firewalld(_)), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains("refused"), "{text}");
    assert_eq!(seam.mutations.calls(), Vec::<String>::new());
    assert!(recorded(&state).forwards.is_empty());
}

#[tokio::test]
async fn a_change_firewalld_refuses_is_rolled_back_and_not_recorded() {
    let (_dir, state) = state_with_network();
    let seam = FakeSeam {
        reads: firewalld_1_3_3(),
        mutations: Fake::failing(&["config."]),
    };
    let err = add_forward_on(&state, add_request(), async || Ok(&seam))
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Change(_)), "{err:?}");
    assert!(recorded(&state).forwards.is_empty());
}

#[tokio::test]
async fn allow_add_asks_for_the_services_then_opens_it_and_records() {
    let (_dir, state) = state_with_network();
    let seam = FakeSeam {
        reads: firewalld_1_3_3(),
        mutations: Fake::default(),
    };
    let allow = Allow {
        network: "n1".parse().unwrap(),
        opening: Opening::Service("nosuch".into()),
    };
    // An unknown service: refused as bad input after one read, nothing changed or recorded.
    let err = change_allow_on(&state, allow.clone(), true, async || Ok(&seam))
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardError::Usage(_)), "{err:?}");
    assert_eq!(seam.reads.take_calls(), ["listServices"]);
    assert_eq!(seam.mutations.calls(), Vec::<String>::new());
    assert!(recorded(&state).allows.is_empty());
    // A known one: opened through the executor, recorded.
    let allow = Allow {
        opening: Opening::Service("http".into()),
        ..allow
    };
    let out = change_allow_on(&state, allow.clone(), true, async || Ok(&seam))
        .await
        .unwrap();
    assert_eq!(out, "http opened to network n1's guests");
    assert_eq!(recorded(&state).allows, [allow]);
    let changes = seam.mutations.calls();
    assert!(
        changes.iter().any(|c| c == "addPolicy virtzone-allow"),
        "{changes:?}"
    );
}
