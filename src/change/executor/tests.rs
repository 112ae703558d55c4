//! The executor against a recording fake of [`Mutations`]: order, rollback in reverse, failures of the
//! rollback itself. No root, no bus; the lab tests run the same paths against a real firewalld.

use super::fake::Fake;
use super::*;
use crate::change::step::Plan;
use crate::firewalld::{Entries, ForwardPortEntry, OwnPolicy};
use crate::zone::{shipped_policy, shipped_zone};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn install_plan() -> Plan {
    Plan {
        steps: vec![
            Step::AddZone(shipped_zone("libvirt")),
            Step::AddZone(shipped_zone("libvirt-routed")),
            Step::AddPolicy(shipped_policy("libvirt-to-host")),
            Step::Reload,
        ],
        warnings: vec![],
    }
}

#[test]
fn a_plan_runs_in_order() {
    let fake = Fake::default();
    let applied = block_on(Executor::new(&fake).run(&install_plan())).unwrap();
    assert_eq!(applied.steps, install_plan().steps);
    assert_eq!(
        fake.calls(),
        [
            "addZone libvirt",
            "addZone libvirt-routed",
            "addPolicy libvirt-to-host",
            "reload"
        ]
    );
}

#[test]
fn a_failure_undoes_what_succeeded_newest_first() {
    let fake = Fake::failing(&["addPolicy"]);
    let err = block_on(Executor::new(&fake).run(&install_plan())).unwrap_err();
    assert_eq!(
        fake.calls(),
        [
            "addZone libvirt",
            "addZone libvirt-routed",
            "addPolicy libvirt-to-host",
            "removeZone libvirt-routed",
            "removeZone libvirt",
        ]
    );
    assert_eq!(err.undone, 2);
    assert!(err.rollback_failures.is_empty());
    let text = err.to_string();
    assert!(
        text.starts_with(
            "firewalld refused to add policy libvirt-to-host: firewalld said INVALID_ZONE"
        ) && text.ends_with("removed what this run had added"),
        "{text}"
    );
}

#[test]
fn a_failed_reload_removes_the_added_objects_without_reloading_again() {
    let fake = Fake::failing(&["reload"]);
    let err = block_on(Executor::new(&fake).run(&install_plan())).unwrap_err();
    assert_eq!(err.step, Step::Reload);
    assert_eq!(
        fake.calls()[4..],
        [
            "removePolicy libvirt-to-host",
            "removeZone libvirt-routed",
            "removeZone libvirt"
        ]
    );
    assert!(err
        .to_string()
        .contains("keeps running its previous configuration"));
}

#[test]
fn the_first_failure_changes_nothing() {
    let fake = Fake::failing(&["addZone libvirt"]);
    let err = block_on(Executor::new(&fake).run(&install_plan())).unwrap_err();
    assert_eq!(fake.calls(), ["addZone libvirt"]);
    assert!(err.to_string().ends_with("nothing was changed"), "{err}");
}

#[test]
fn failures_of_the_rollback_are_reported() {
    let fake = Fake::failing(&["changeZoneOfInterface", "config.removeInterface"]);
    let br = BridgeName::new("virbr0").unwrap();
    let plan = Plan {
        steps: vec![
            Step::AddPermanentInterface {
                zone: ZoneName::libvirt(),
                interface: br.clone(),
            },
            Step::ChangeZoneOfInterface {
                zone: ZoneName::libvirt(),
                interface: br,
                previous: None,
            },
        ],
        warnings: vec![],
    };
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert_eq!(
        fake.calls(),
        [
            "config.addInterface libvirt virbr0",
            "changeZoneOfInterface libvirt virbr0",
            "config.removeInterface libvirt virbr0",
        ]
    );
    assert_eq!(err.rollback_failures.len(), 1);
    assert!(
        err.to_string().contains("rolling back failed too: could not unbind bridge virbr0 from zone libvirt in the permanent configuration"),
        "{err}"
    );
}

#[test]
fn undo_after_a_reload_reloads_again() {
    let fake = Fake::default();
    let exec = Executor::new(&fake);
    let applied = block_on(exec.run(&install_plan())).unwrap();
    let failures = block_on(exec.undo(applied));
    assert!(failures.is_empty());
    assert_eq!(
        fake.calls()[4..],
        [
            "removePolicy libvirt-to-host",
            "removeZone libvirt-routed",
            "removeZone libvirt",
            "reload"
        ]
    );
}

#[test]
fn a_moved_bridge_goes_back_where_it_was() {
    let fake = Fake::failing(&["config.addInterface"]);
    let br = BridgeName::new("virbr0").unwrap();
    let trusted = ZoneName::new("trusted").unwrap();
    let plan = Plan {
        steps: vec![
            Step::ChangeZoneOfInterface {
                zone: ZoneName::libvirt(),
                interface: br.clone(),
                previous: Some(trusted),
            },
            Step::AddPermanentInterface {
                zone: ZoneName::libvirt(),
                interface: br,
            },
        ],
        warnings: vec![],
    };
    block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert_eq!(
        fake.calls(),
        [
            "changeZoneOfInterface libvirt virbr0",
            "config.addInterface libvirt virbr0",
            "changeZoneOfInterface trusted virbr0",
        ]
    );
}

#[test]
fn independent_steps_are_all_tried() {
    let fake = Fake::failing(&["changeZoneOfInterface libvirt virbr1"]);
    let steps: Vec<Step> = ["virbr0", "virbr1", "virbr2"]
        .iter()
        .map(|b| Step::ChangeZoneOfInterface {
            zone: ZoneName::libvirt(),
            interface: BridgeName::new(b).unwrap(),
            previous: None,
        })
        .collect();
    let results = block_on(Executor::new(&fake).apply_each(&steps, 2));
    let mut ok: Vec<(String, bool)> = results
        .iter()
        .map(|(s, r)| (s.to_string(), r.is_ok()))
        .collect();
    ok.sort();
    assert_eq!(
        ok,
        [
            ("bind bridge virbr0 to zone libvirt".to_string(), true),
            ("bind bridge virbr1 to zone libvirt".to_string(), false),
            ("bind bridge virbr2 to zone libvirt".to_string(), true),
        ]
    );
    assert_eq!(fake.calls().len(), 3);
}

fn entry(port: &str) -> ForwardPortEntry {
    (port.into(), "tcp".into(), "80".into(), "192.0.2.5".into())
}

fn entries(rule: &str) -> Entries {
    Entries {
        rich_rules: [rule.to_string()].into(),
        ..Entries::default()
    }
}

fn own_policy(name: &str) -> OwnPolicy {
    OwnPolicy {
        name: name.into(),
        ingress: vec!["ANY".into()],
        egress: vec!["HOST".into()],
        priority: -100,
        target: "CONTINUE".into(),
        description: "test".into(),
        entries: Entries::default(),
    }
}

/// Every forward/allow step is undone by its inverse, newest first; iptables commands are not
/// (they are re-planned from `iptables -S`), and a failed reload needs no undo of its own.
#[test]
fn forward_steps_roll_back_through_their_inverses() {
    let fake = Fake::failing(&["reload"]);
    let plan = Plan {
        steps: vec![
            Step::Iptables {
                table: "filter".into(),
                args: vec!["-N".into(), "VIRTZONE_FWD".into()],
            },
            Step::AddPermanentForwardPort {
                zone: "public".into(),
                entry: entry("8080"),
            },
            Step::RemovePermanentForwardPort {
                zone: "public".into(),
                entry: entry("8081"),
            },
            Step::AddPermanentRichRule {
                zone: "public".into(),
                rule: "r1".into(),
            },
            Step::RemovePermanentRichRule {
                zone: "public".into(),
                rule: "r2".into(),
            },
            Step::AddOwnPolicy(own_policy("virtzone-forward")),
            Step::SetPermanentPolicyEntries {
                name: "virtzone-allow".into(),
                entries: entries("new"),
                previous: entries("old"),
            },
            Step::Reload,
        ],
        warnings: vec![],
    };
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert_eq!(err.step, Step::Reload);
    assert_eq!(err.undone, 7);
    assert!(err.rollback_failures.is_empty());
    assert_eq!(
        fake.calls()[8..],
        [
            "config.policy.update virtzone-allow old",
            "removePolicy virtzone-forward",
            "config.addRichRule public r2",
            "config.removeRichRule public r1",
            "config.addForwardPort public 8081",
            "config.removeForwardPort public 8080",
        ]
    );
}

#[test]
fn runtime_forward_steps_roll_back_through_their_inverses() {
    let fake = Fake::failing(&["passthrough"]);
    let plan = Plan {
        steps: vec![
            Step::AddForwardPort {
                zone: "public".into(),
                entry: entry("8080"),
            },
            Step::RemoveForwardPort {
                zone: "public".into(),
                entry: entry("8081"),
            },
            Step::AddRichRule {
                zone: "public".into(),
                rule: "r1".into(),
            },
            Step::RemoveRichRule {
                zone: "public".into(),
                rule: "r2".into(),
            },
            Step::SetPolicyEntries {
                name: "virtzone-from-host".into(),
                entries: entries("new"),
                previous: entries("old"),
            },
            Step::Iptables {
                table: "nat".into(),
                args: vec!["-N".into(), "VIRTZONE_HAIRPIN".into()],
            },
        ],
        warnings: vec![],
    };
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert_eq!(
        fake.calls()[5..],
        [
            "passthrough -t nat -N VIRTZONE_HAIRPIN",
            "setPolicySettings virtzone-from-host old",
            "addRichRule public r2",
            "removeRichRule public r1",
            "addForwardPort public 8081",
            "removeForwardPort public 8080",
        ]
    );
    assert!(
        err.to_string()
            .starts_with("firewalld refused to run iptables -t nat -N VIRTZONE_HAIRPIN:"),
        "{err}"
    );
}

/// Undoing a plan that created a policy and reloaded removes the policy and reloads again, so the
/// removal is live too.
#[test]
fn undo_of_a_created_policy_reloads_again() {
    let fake = Fake::default();
    let exec = Executor::new(&fake);
    let plan = Plan {
        steps: vec![
            Step::AddOwnPolicy(own_policy("virtzone-allow")),
            Step::Reload,
        ],
        warnings: vec![],
    };
    let applied = block_on(exec.run(&plan)).unwrap();
    assert!(block_on(exec.undo(applied)).is_empty());
    assert_eq!(
        fake.calls(),
        [
            "addPolicy virtzone-allow",
            "reload",
            "removePolicy virtzone-allow",
            "reload"
        ]
    );
}

/// S2 of issue #24: a plan that put the localnet guard back (after `nft flush ruleset` took it
/// while a bridge kept `route_localnet` on) and then failed must leave the guard in place.
#[test]
fn a_rollback_never_removes_the_localnet_guard() {
    let fake = Fake::failing(&["config.policy.update"]);
    let plan = Plan {
        steps: vec![
            Step::LocalnetGuard { present: true },
            Step::Sysctl {
                key: "net/ipv4/conf/virbr0/route_localnet".into(),
                value: "1".into(),
                previous: "0".into(),
            },
            Step::SetPermanentPolicyEntries {
                name: "virtzone-forward".into(),
                entries: entries("rule"),
                previous: Entries::default(),
            },
        ],
        warnings: vec![],
    };
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert!(err.rollback_failures.is_empty());
    let calls = fake.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[0].starts_with("nft "), "{calls:?}");
    // The sysctl goes back; the guard is not deleted.
    assert_eq!(calls[3], "sysctl net/ipv4/conf/virbr0/route_localnet=0");
    assert!(!calls.iter().any(|c| c.contains("\"delete\"")), "{calls:?}");
}

#[test]
fn a_profile_zone_is_set_through_networkmanager_and_restored_on_failure() {
    let nm = Step::SetConnectionZone {
        uuid: "u-1".into(),
        profile: "br0".into(),
        zone: "internal".into(),
        previous: String::new(),
        to_disk: true,
    };
    let plan = Plan {
        steps: vec![nm, Step::AddZone(shipped_zone("libvirt"))],
        warnings: vec![],
    };
    let fake = Fake::failing(&["addZone"]);
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    // The inverse writes the previous zone back, to the same place (disk).
    assert_eq!(
        fake.calls(),
        [
            "nm.Update2 u-1 zone=internal disk",
            "addZone libvirt",
            "nm.Update2 u-1 zone= disk",
        ]
    );
    assert!(err.rollback_failures.is_empty());
    // A failed profile update is said as what it is, not as firewalld's refusal.
    let fake = Fake::failing(&["nm.Update2"]);
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "could not set connection.zone of NetworkManager profile br0 to internal:"
        ),
        "{err}"
    );
}

/// `doctor --fix`'s local steps (issue #19): a failing step undoes the ones before it, newest
/// first: the accepts inserted in `DOCKER-USER` are deleted, a sysctl goes back to its value, and
/// a file virtzone created is removed again (one it replaced gets its old content back).
#[test]
fn local_steps_roll_back_through_their_inverses() {
    let accept = |words: &str| Step::IptablesRule {
        chain: "DOCKER-USER".into(),
        rule: words.split(' ').map(String::from).collect(),
        insert: true,
    };
    let plan = Plan {
        steps: vec![
            accept("-i virbr0 -o eth0 -j ACCEPT"),
            Step::Sysctl {
                key: "net/bridge/bridge-nf-call-iptables".into(),
                value: "0".into(),
                previous: "1".into(),
            },
            Step::WriteFile {
                path: "/etc/sysctl.d/90-virtzone-bridge.conf".into(),
                content: Some("a = 0\n".into()),
                previous: None,
                mode: 0o644,
            },
            Step::WriteFile {
                path: "/etc/sysctl.d/91-other.conf".into(),
                content: Some("new\n".into()),
                previous: Some("old\n".into()),
                mode: 0o644,
            },
            accept("-i eth0 -o virbr0 -j ACCEPT"),
        ],
        warnings: vec![],
    };
    let fake = Fake::failing(&["iptables -I DOCKER-USER -i eth0"]);
    let err = block_on(Executor::new(&fake).run(&plan)).unwrap_err();
    assert_eq!(err.undone, 4);
    assert!(err.rollback_failures.is_empty());
    assert_eq!(
        fake.calls(),
        [
            "iptables -I DOCKER-USER -i virbr0 -o eth0 -j ACCEPT",
            "sysctl net/bridge/bridge-nf-call-iptables=0",
            "write /etc/sysctl.d/90-virtzone-bridge.conf 644 \"a = 0\\n\"",
            "write /etc/sysctl.d/91-other.conf 644 \"new\\n\"",
            "iptables -I DOCKER-USER -i eth0 -o virbr0 -j ACCEPT",
            "write /etc/sysctl.d/91-other.conf 644 \"old\\n\"",
            "remove /etc/sysctl.d/90-virtzone-bridge.conf",
            "sysctl net/bridge/bridge-nf-call-iptables=1",
            "iptables -D DOCKER-USER -i virbr0 -o eth0 -j ACCEPT",
        ]
    );
    // Said as what failed locally, not as firewalld's refusal.
    assert!(
        err.to_string()
            .starts_with("could not run iptables -I DOCKER-USER -i eth0 -o virbr0 -j ACCEPT: "),
        "{err}"
    );
}

/// [`Local`] carries out no firewalld call: a plan that needs firewalld fails before changing
/// anything.
#[test]
fn the_local_executor_refuses_firewalld_calls() {
    let err = block_on(Executor::new(&local::Local).run(&install_plan())).unwrap_err();
    assert_eq!(err.undone, 0);
    assert!(err.to_string().contains("needs firewalld"), "{err}");
}

/// Issue #21: virtzone's NAT table is changed through the executor, as one nft transaction that
/// re-creates the table with the masquerade (or only deletes it); no rollback takes it away.
#[test]
fn the_own_nat_table_is_one_nft_transaction() {
    let fake = Fake::default();
    let m = crate::forward::masquerade::Masquerade {
        subnet: "192.0.2.0/24".parse().unwrap(),
        dev: None,
        ports: (1024, 65535),
    };
    let plan = Plan {
        steps: vec![
            Step::OwnNat {
                masquerades: vec![m],
                dnats: vec![],
            },
            Step::OwnNat {
                masquerades: vec![],
                dnats: vec![],
            },
        ],
        warnings: vec![],
    };
    block_on(Executor::new(&fake).run(&plan)).unwrap();
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("virtzone_nat")
            && calls[0].contains("\"masquerade\"")
            && calls[0].contains("\"prio\":99"),
        "{calls:?}"
    );
    assert!(!calls[1].contains("\"rule\""), "{calls:?}");
    assert_eq!(plan.steps[0].inverse(), None);
}
