//! Table tests of the checks: facts in, verdicts out (no root, no daemon).

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::bind::{Binding, Bindings};
use crate::firewalld::{parse_version, Backend, Capabilities, Running};
use crate::libvirt::parse_network_xml;
use crate::names::{BridgeName, ZoneName};
use crate::status::{BridgeStatus, FirewalldStatus, ObjectStatus};

fn running(version: &str) -> FirewalldFacts {
    let v = parse_version(version).unwrap();
    FirewalldFacts::Running(Running {
        capabilities: Capabilities::of(&v),
        version: v,
        version_text: version.into(),
        state: State::Running,
        backend: Backend::Nftables,
        zones: ["libvirt", "libvirt-routed", "public"]
            .map(String::from)
            .into(),
        policies: Some(
            ["libvirt-routed-in", "libvirt-routed-out", "libvirt-to-host"]
                .map(String::from)
                .into(),
        ),
    })
}

fn object(name: &str, runtime: bool, differences: &[&str]) -> ObjectStatus {
    ObjectStatus {
        name: name.into(),
        runtime,
        permanent: runtime,
        origin: None,
        matches_shipped: runtime.then_some(differences.is_empty()),
        differences: differences.iter().map(|d| d.to_string()).collect(),
    }
}

fn status(bridges: &[(&str, Option<&str>)]) -> crate::status::Status {
    crate::status::Status {
        firewalld: FirewalldStatus {
            running: true,
            system_bus: true,
            version: Some("1.3.3".into()),
            state: Some("RUNNING".into()),
            backend: Some(Backend::Nftables),
            capabilities: None,
        },
        zones: vec![
            object("libvirt", true, &[]),
            object("libvirt-routed", true, &[]),
        ],
        policies: ["libvirt-routed-in", "libvirt-routed-out", "libvirt-to-host"]
            .iter()
            .map(|p| object(p, true, &[]))
            .collect(),
        bridges: bridges
            .iter()
            .map(|(b, z)| BridgeStatus {
                name: b.to_string(),
                zone: z.map(String::from),
                networkmanager: None,
            })
            .collect(),
        libvirt_firewall: None,
        warnings: Vec::new(),
    }
}

fn network(xml: &str) -> NetworkFacts {
    let network = parse_network_xml(xml, None).unwrap();
    NetworkFacts {
        ipv6: network.has_ipv6(),
        network,
    }
}

const NAT: &str =
    "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/></network>";
const ROUTED: &str =
    "<network><name>r</name><forward mode='route'/><bridge name='virbr1'/></network>";

/// A healthy host: firewalld 1.3.3, zones loaded, the NAT network's bridge in its zone.
fn healthy() -> Facts {
    let mut f = Facts::empty();
    f.firewalld = Ok(running("1.3.3"));
    f.status = Some(status(&[("virbr0", Some("libvirt"))]));
    f.networks = vec![network(NAT)];
    f.zone_copies = Some(Vec::new());
    f.nm_running = Some(false);
    f.sysctl.insert("net/ipv4/ip_forward".into(), "1".into());
    f.foreign_tables = Some(Vec::new());
    f.strict_forward_ports = Some(false);
    f.hook = facts::HookFacts {
        path: PathBuf::from("/etc/libvirt/hooks/network.d/50-virtzone"),
        exists: true,
        executable: true,
        installed_at: None,
        libvirtd_started: None,
    };
    f.daemon_running = Some(false);
    f
}

fn find<'a>(r: &'a Report, id: &str) -> &'a Check {
    r.checks.iter().find(|c| c.id == id).unwrap()
}

#[test]
fn forwards_to_domains_need_the_qemu_hook() {
    let mut f = healthy();
    // No domain forwards: the qemu hook is not looked at.
    assert_eq!(find(&diagnose(&f), "hook").status, Status::Ok);
    f.domain_forwards = 2;
    f.qemu_hook = facts::HookFacts {
        path: PathBuf::from("/etc/libvirt/hooks/qemu.d/50-virtzone"),
        ..facts::HookFacts::default()
    };
    let r = diagnose(&f);
    let c = find(&r, "hook");
    assert_eq!(c.status, Status::Problem, "{}", c.summary);
    assert!(
        c.summary.contains("2 forward(s) to domains"),
        "{}",
        c.summary
    );
    assert!(c.evidence[0].contains("qemu.d/50-virtzone does not exist"));
    f.qemu_hook.exists = true;
    f.qemu_hook.executable = true;
    assert_eq!(find(&diagnose(&f), "hook").status, Status::Ok);
    // A missing network hook is named first.
    f.hook.exists = false;
    assert!(find(&diagnose(&f), "hook").summary.contains("network hook"));
}

#[test]
fn a_healthy_host_has_no_problem_and_no_warning() {
    let r = diagnose(&healthy());
    let ids: Vec<&str> = r.checks.iter().map(|c| c.id).collect();
    assert_eq!(ids, CHECK_IDS);
    for c in &r.checks {
        assert!(
            matches!(c.status, Status::Ok | Status::Skipped),
            "{}: {:?} {}",
            c.id,
            c.status,
            c.summary
        );
    }
    assert_eq!((r.problems, r.warnings), (0, 0));
}

#[test]
fn each_fault_is_one_problem_with_evidence() {
    type Inject = fn(&mut Facts);
    let table: [(&str, Inject, Status, Option<bool>); 10] = [
        (
            "firewalld",
            |f| {
                f.firewalld = Ok(running("2.0.1"));
                f.networks.push(network(ROUTED));
                if let Some(s) = &mut f.status {
                    s.bridges.push(BridgeStatus {
                        name: "virbr1".into(),
                        zone: Some("libvirt-routed".into()),
                        networkmanager: None,
                    });
                }
            },
            Status::Problem,
            Some(false),
        ),
        (
            "libvirt-zones",
            |f| {
                if let Some(s) = &mut f.status {
                    s.zones[0] = object("libvirt", false, &[]);
                }
            },
            Status::Problem,
            Some(true),
        ),
        (
            "libvirt-zones",
            |f| {
                if let Some(s) = &mut f.status {
                    s.zones[0] = object(
                        "libvirt",
                        true,
                        &["rule priority=\"32767\" reject is missing"],
                    );
                }
            },
            Status::Problem,
            Some(false),
        ),
        (
            "bridge-zones",
            |f| {
                f.status = Some(status(&[("virbr0", None)]));
            },
            Status::Problem,
            Some(true),
        ),
        (
            "bridge-zones",
            |f| {
                f.status = Some(status(&[("virbr0", Some("public"))]));
            },
            Status::Problem,
            Some(false),
        ),
        (
            "nm-zone-override",
            |f| {
                f.nm_running = Some(true);
                let mut st = status(&[("virbr0", Some("libvirt"))]);
                st.bridges[0].networkmanager = Some(nm_owner("virbr0", "trusted"));
                f.status = Some(st);
            },
            Status::Problem,
            Some(false),
        ),
        (
            "ip-forward",
            |f| {
                f.sysctl.insert("net/ipv4/ip_forward".into(), "0".into());
                f.sysctl_sources = vec!["/etc/sysctl.d/99-x.conf: net.ipv4.ip_forward = 0".into()];
            },
            Status::Problem,
            Some(false),
        ),
        (
            "br-netfilter",
            |f| {
                f.sysctl
                    .insert("net/bridge/bridge-nf-call-iptables".into(), "1".into());
                f.bridge_ports
                    .insert("br0".into(), vec!["eth1".into(), "vnet3".into()]);
            },
            Status::Problem,
            Some(true),
        ),
        (
            "foreign-firewall",
            |f| {
                f.foreign_tables = Some(vec![
                    "nftables table inet filter: forward (hook forward)".into()
                ]);
            },
            Status::Warning,
            None,
        ),
        (
            "daemon",
            |f| {
                let mut b = Bindings::default();
                b.bindings.insert(
                    BridgeName::new("virbr0").unwrap(),
                    Binding {
                        zone: ZoneName::libvirt(),
                        permanent: false,
                        network: None,
                        networkmanager: None,
                        source: None,
                    },
                );
                f.recorded = Some(b);
            },
            Status::Warning,
            Some(false),
        ),
    ];
    for (id, inject, want, safe) in table {
        let mut f = healthy();
        inject(&mut f);
        let r = diagnose(&f);
        let c = find(&r, id);
        assert_eq!(c.status, want, "{id}: {}", c.summary);
        assert!(!c.evidence.is_empty(), "{id} has no evidence");
        assert_eq!(c.fix.as_ref().map(|f| f.safe), safe, "{id}: {:?}", c.fix);
        let others: BTreeSet<&str> = r
            .checks
            .iter()
            .filter(|c| c.id != id && !matches!(c.status, Status::Ok | Status::Skipped))
            .map(|c| c.id)
            .collect();
        assert!(others.is_empty(), "{id} also raised {others:?}");
    }
}

#[test]
fn what_cannot_be_read_is_skipped_not_guessed() {
    let mut f = Facts::empty();
    f.networks = vec![network(NAT)];
    let r = diagnose(&f);
    for id in [
        "libvirt-zones",
        "bridge-zones",
        "stale-zone-copy",
        "nm-zone-override",
        "ip-forward",
        "foreign-firewall",
        "strict-forward-ports",
    ] {
        assert_eq!(find(&r, id).status, Status::Skipped, "{id}");
    }
    assert_eq!(r.problems, 0);
}

#[test]
fn strict_forward_ports_is_read_from_firewalld_conf() {
    assert!(facts::strict_forward_ports("# x\nStrictForwardPorts=yes\n"));
    assert!(!facts::strict_forward_ports(
        "#StrictForwardPorts=yes\nStrictForwardPorts=no\n"
    ));
    assert!(!facts::strict_forward_ports(""));
}

fn nm_owner(profile: &str, zone: &str) -> crate::status::NmOwner {
    crate::status::NmOwner {
        profile: profile.into(),
        uuid: format!("uuid-{profile}"),
        zone: zone.into(),
    }
}

/// nm-zone-override asks NetworkManager over D-Bus (the profiles in `status`): without it on the
/// bus the check says so; a bridge virtzone bound over firewalld's API that a profile manages is a
/// problem, one bound through the profile is fine while the profile agrees.
#[test]
fn nm_zone_override_reads_network_manager_over_the_bus() {
    let mut f = healthy();
    let c = find(&diagnose(&f), "nm-zone-override").clone();
    assert_eq!(c.status, Status::Ok);
    assert!(c.summary.contains("not on the system bus"), "{}", c.summary);
    f.nm_running = None;
    assert_eq!(
        find(&diagnose(&f), "nm-zone-override").status,
        Status::Skipped
    );

    f.nm_running = Some(true);
    let mut st = status(&[("virbr0", Some("libvirt")), ("br0", Some("public"))]);
    st.bridges[1].networkmanager = Some(nm_owner("br0", ""));
    f.status = Some(st);
    f.bridge_ports.insert("br0".into(), vec!["vnet0".into()]);
    let mut bound = Binding {
        zone: ZoneName::new("internal").unwrap(),
        permanent: false,
        network: None,
        networkmanager: None,
        source: None,
    };
    let mut b = Bindings::default();
    b.bindings
        .insert(BridgeName::new("br0").unwrap(), bound.clone());
    f.recorded = Some(b);
    let c = find(&diagnose(&f), "nm-zone-override").clone();
    assert_eq!(c.status, Status::Problem, "{c:?}");
    let ev = c.evidence.join("\n");
    assert!(ev.contains("over firewalld's API"), "{ev}");
    assert!(
        ev.contains(
            "NetworkManager profile br0 (uuid uuid-br0, connection.zone empty: the default zone)"
        ),
        "{ev}"
    );
    // Bound through the profile, which says the same zone: nothing to report.
    bound.networkmanager = Some(crate::bind::NmBinding {
        uuid: "uuid-br0".into(),
        profile: "br0".into(),
        previous: String::new(),
    });
    let mut st = status(&[("virbr0", Some("libvirt")), ("br0", Some("internal"))]);
    st.bridges[1].networkmanager = Some(nm_owner("br0", "internal"));
    f.status = Some(st);
    let mut b = Bindings::default();
    b.bindings.insert(BridgeName::new("br0").unwrap(), bound);
    f.recorded = Some(b);
    assert_eq!(find(&diagnose(&f), "nm-zone-override").status, Status::Ok);
}

/// A ruleset whose forward hook has one base chain (`ip filter FORWARD`) with `policy` and
/// `rules` (nft JSON expressions, one array per rule).
fn forward_ruleset(policy: &str, rules: &[&str]) -> crate::verify::Ruleset {
    let mut items = vec![
        r#"{"table": {"family": "ip", "name": "filter"}}"#.to_string(),
        format!(
            r#"{{"chain": {{"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "prio": 0, "type": "filter", "policy": "{policy}"}}}}"#
        ),
    ];
    for (i, r) in rules.iter().enumerate() {
        items.push(format!(
            r#"{{"rule": {{"family": "ip", "table": "filter", "chain": "FORWARD", "handle": {}, "expr": {r}}}}}"#,
            i + 2
        ));
    }
    crate::verify::Ruleset::from_json(&format!(r#"{{"nftables": [{}]}}"#, items.join(","))).unwrap()
}

/// Issue #20: a bridge bound by hand behind a Docker-style `FORWARD DROP` is examined (before, doctor
/// looked only at libvirt's running networks: "no NAT, routed or open network runs").
#[test]
fn forward_drop_examines_bridges_bound_by_hand() {
    let mut f = healthy();
    f.networks.clear();
    f.status = Some(status(&[("br-lab", Some("libvirt"))]));
    let mut b = Bindings::default();
    b.bindings.insert(
        BridgeName::new("br-lab").unwrap(),
        Binding {
            zone: ZoneName::libvirt(),
            permanent: false,
            network: None,
            networkmanager: None,
            source: None,
        },
    );
    f.recorded = Some(b);
    f.bridge_ports.insert("br-lab".into(), vec!["vzg1".into()]);
    f.bridge_addresses
        .insert("br-lab".into(), vec![("192.0.2.1".parse().unwrap(), 24)]);
    f.uplink = Some("eth0".into());
    f.evaluable = Ok(forward_ruleset("drop", &[]));
    let c = find(&diagnose(&f), "forward-drop").clone();
    assert_eq!(c.status, Status::Problem, "{c:?}");
    let ev = c.evidence.join("\n");
    assert!(
        ev.contains("bridge br-lab (bound by virtzone, in zone libvirt)"),
        "{ev}"
    );
    assert!(
        ev.contains("policy drop of ip filter chain FORWARD"),
        "{ev}"
    );
    let rs = forward_ruleset("accept", &[]);
    f.evaluable = Ok(rs);
    assert_eq!(find(&diagnose(&f), "forward-drop").status, Status::Ok);
    // A bound bridge the host has no address on is not routed by the host: not probed here.
    f.bridge_addresses.clear();
    f.evaluable = Ok(forward_ruleset("drop", &[]));
    let c = find(&diagnose(&f), "forward-drop").clone();
    assert_eq!(c.status, Status::Ok, "{c:?}");
}

/// br-netfilter evaluates the bridged guests' traffic: accepted (a zone forwarding within itself)
/// is fine; rejected is a problem naming the rule. bridge-zones names a host bridge's zone and
/// profile, and says that macvtap traffic crosses no bridge.
#[test]
fn bridged_guests_are_judged_by_evaluation_and_their_bridge_named() {
    let mut f = healthy();
    f.networks.push(network(
        "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>",
    ));
    f.networks.push(network(
        "<network><name>tap</name><forward mode='bridge'><interface dev='eth0'/></forward></network>",
    ));
    f.nm_running = Some(true);
    let mut st = status(&[("virbr0", Some("libvirt")), ("br0", Some("internal"))]);
    st.bridges[1].networkmanager = Some(nm_owner("br0", "internal"));
    f.status = Some(st);
    f.sysctl
        .insert("net/bridge/bridge-nf-call-iptables".into(), "1".into());
    f.bridge_ports
        .insert("br0".into(), vec!["eth1".into(), "vnet3".into()]);
    let accept = r#"[{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "br0"}}, {"accept": null}]"#;
    f.evaluable = Ok(forward_ruleset("drop", &[accept]));
    let r = diagnose(&f);
    let c = find(&r, "br-netfilter");
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("bridge br0 (in zone internal")
                && e.contains("accepted by ip filter chain FORWARD handle 2")),
        "{:?}",
        c.evidence
    );
    let bz = find(&r, "bridge-zones");
    let ev = bz.evidence.join("\n");
    assert!(
        ev.contains("network lan: guests on host bridge br0 (forward mode bridge), in zone internal, NetworkManager profile br0 (uuid uuid-br0, connection.zone internal)"),
        "{ev}"
    );
    assert!(ev.contains("network tap: guests on macvtap devices of eth0: their traffic never crosses a host bridge"), "{ev}");
    // The zone does not forward within itself: rejected, a problem that names the rule.
    f.evaluable = Ok(forward_ruleset("accept", &[r#"[{"reject": null}]"#]));
    let c = find(&diagnose(&f), "br-netfilter").clone();
    assert_eq!(c.status, Status::Problem, "{c:?}");
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("rejected by ip filter chain FORWARD handle 2")),
        "{:?}",
        c.evidence
    );
}

#[test]
fn foreign_tables_are_those_of_other_firewalls() {
    let json = r#"{"nftables": [
      {"metainfo": {}},
      {"table": {"family": "inet", "name": "firewalld"}},
      {"chain": {"family": "inet", "table": "firewalld", "name": "filter_FORWARD", "hook": "forward"}},
      {"chain": {"family": "inet", "table": "filter", "name": "forward", "hook": "forward", "policy": "drop"}},
      {"chain": {"family": "inet", "table": "quiet", "name": "forward", "hook": "forward", "policy": "accept"}},
      {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward"}},
      {"chain": {"family": "ip", "table": "filter", "name": "LIBVIRT_FWI"}},
      {"rule": {"family": "ip", "table": "filter", "chain": "LIBVIRT_FWI", "expr": []}},
      {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "expr": [{"jump": {"target": "VIRTZONE_FWD"}}]}},
      {"chain": {"family": "ip", "table": "filter", "name": "VIRTZONE_FWD"}},
      {"rule": {"family": "ip", "table": "filter", "chain": "VIRTZONE_FWD", "expr": [{"accept": null}]}},
      {"chain": {"family": "inet", "table": "virtzone", "name": "localnet", "hook": "prerouting", "policy": "accept"}},
      {"rule": {"family": "inet", "table": "virtzone", "chain": "localnet", "expr": [{"drop": null}]}},
      {"chain": {"family": "ip", "table": "virtzone_nat", "name": "postrouting", "hook": "postrouting", "policy": "accept"}},
      {"rule": {"family": "ip", "table": "virtzone_nat", "chain": "postrouting", "expr": [{"masquerade": null}]}},
      {"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "hook": "prerouting"}},
      {"rule": {"family": "ip", "table": "nat", "chain": "PREROUTING", "expr": [{"dnat": {"addr": "192.0.2.10"}}]}}
    ]}"#;
    let (foreign, dnat) = facts::foreign_rules(json, Some(Backend::Nftables));
    assert_eq!(foreign.len(), 2, "{foreign:?}");
    assert!(foreign[0].contains("inet filter"), "{foreign:?}");
    assert!(
        foreign[1].contains("ip nat") && foreign[1].contains("PREROUTING"),
        "{foreign:?}"
    );
    assert_eq!(dnat.len(), 1, "{dnat:?}");
    // With firewalld's iptables backend its chains share the xtables tables: not judged.
    let (foreign, dnat) = facts::foreign_rules(json, Some(Backend::Iptables));
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    assert!(dnat.is_empty());
}

fn mac_facts(
    enforce: Option<&str>,
    boolean: Option<&str>,
    label: Option<&str>,
    apparmor: Option<&[&str]>,
    binary: &str,
) -> facts::MacFacts {
    facts::MacFacts {
        selinux_enforce: enforce.map(String::from),
        virt_hooks_unconfined: boolean.map(String::from),
        hook_labels: vec![(PathBuf::from(facts::HOOK_PATH), label.map(String::from))],
        apparmor_libvirtd: apparmor.map(|l| l.iter().map(|s| s.to_string()).collect()),
        hook_binary: Some(PathBuf::from(binary)),
    }
}

#[test]
fn mac_check_reads_selinux_and_apparmor() {
    const LABELLED: Option<&str> = Some("system_u:object_r:virt_hook_t:s0");
    const USR: &str = "/usr/bin/virtzone";
    let table: [(facts::MacFacts, Status, &str, &str); 10] = [
        // Neither SELinux nor AppArmor (this machine).
        (
            mac_facts(None, None, None, None, USR),
            Status::Ok,
            "neither",
            "",
        ),
        // Enforcing, boolean off: the hooks exit 126.
        (
            mac_facts(Some("1"), Some("0 0"), LABELLED, None, USR),
            Status::Problem,
            "virt_hooks_unconfined is off",
            "setsebool -P virt_hooks_unconfined on",
        ),
        // The policy has no such boolean: as good as off.
        (
            mac_facts(Some("1"), None, LABELLED, None, USR),
            Status::Problem,
            "virt_hooks_unconfined is off",
            "setsebool",
        ),
        // Switched on for the next boot only: the current value counts.
        (
            mac_facts(Some("1"), Some("0 1"), LABELLED, None, USR),
            Status::Problem,
            "virt_hooks_unconfined is off",
            "setsebool",
        ),
        (
            mac_facts(Some("1"), Some("1 1"), LABELLED, None, USR),
            Status::Ok,
            "lets libvirt run",
            "",
        ),
        // A hook copied by hand keeps the label of where it came from.
        (
            mac_facts(
                Some("1"),
                Some("1 1"),
                Some("unconfined_u:object_r:user_tmp_t:s0"),
                None,
                USR,
            ),
            Status::Problem,
            "not labelled virt_hook_t",
            "restorecon -v /etc/libvirt/hooks/network.d/50-virtzone",
        ),
        // Permissive: denials are only logged.
        (
            mac_facts(Some("0"), Some("0 0"), None, None, USR),
            Status::Ok,
            "lets libvirt run",
            "",
        ),
        // AppArmor enforcing libvirtd's profile, hook program where the profile allows it.
        (
            mac_facts(None, None, None, Some(&["libvirtd (enforce)"]), USR),
            Status::Ok,
            "lets libvirt run",
            "",
        ),
        (
            mac_facts(
                None,
                None,
                None,
                Some(&["/usr/sbin/libvirtd (enforce)"]),
                "/usr/local/bin/virtzone",
            ),
            Status::Warning,
            "likely denied",
            "/etc/apparmor.d/local/usr.sbin.libvirtd",
        ),
        // A profile in complain mode denies nothing.
        (
            mac_facts(
                None,
                None,
                None,
                Some(&["libvirtd (complain)"]),
                "/usr/local/bin/virtzone",
            ),
            Status::Ok,
            "lets libvirt run",
            "",
        ),
    ];
    for (mac, status, summary, fix) in table {
        let f = Facts {
            mac: mac.clone(),
            ..Facts::empty()
        };
        let c = find(&diagnose(&f), "mac").clone();
        assert_eq!(c.status, status, "{mac:?}: {}", c.summary);
        assert!(c.summary.contains(summary), "{mac:?}: {}", c.summary);
        let command = c.fix.as_ref().map_or("", |f| f.command.as_str());
        assert!(command.contains(fix), "{mac:?}: {command}");
        // Never applied by --fix: a policy change is the admin's decision.
        assert!(c.fix.as_ref().is_none_or(|f| !f.safe));
    }
    // The qemu hook under the modular daemons, with domain forwards declared.
    let mut f = Facts {
        mac: mac_facts(Some("1"), Some("1 1"), LABELLED, None, USR),
        domain_forwards: 1,
        ..Facts::empty()
    };
    f.mac.hook_labels.push((
        PathBuf::from(facts::QEMU_HOOK_PATH),
        LABELLED.map(String::from),
    ));
    let c = find(&diagnose(&f), "mac").clone();
    assert_eq!(c.status, Status::Warning, "{}", c.summary);
    assert!(c.summary.contains("virtqemud"), "{}", c.summary);
}

#[test]
fn mac_facts_are_read_from_sysfs_and_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    std::fs::create_dir_all(sys.join("fs/selinux/booleans")).unwrap();
    std::fs::create_dir_all(sys.join("kernel/security/apparmor")).unwrap();
    std::fs::write(sys.join("fs/selinux/enforce"), "1").unwrap();
    std::fs::write(sys.join("fs/selinux/booleans/virt_hooks_unconfined"), "0 0").unwrap();
    std::fs::write(
        sys.join("kernel/security/apparmor/profiles"),
        "/usr/sbin/libvirtd (enforce)\nlibvirtd//qemu_bridge_helper (enforce)\nlsb_release (enforce)\n",
    )
    .unwrap();
    let hook = dir.path().join("50-virtzone");
    std::fs::write(
        &hook,
        "#!/bin/sh\n[ -x /usr/bin/virtzone ] || exit 0\nexec /usr/bin/virtzone hook network \"$@\"\n",
    )
    .unwrap();
    let missing = dir.path().join("absent");
    let m = facts::mac_facts(&sys, &[&hook, &missing]);
    assert_eq!(m.selinux_enforce.as_deref(), Some("1"));
    assert_eq!(m.virt_hooks_unconfined.as_deref(), Some("0 0"));
    assert_eq!(
        m.apparmor_libvirtd,
        Some(vec!["/usr/sbin/libvirtd (enforce)".to_string()])
    );
    assert_eq!(m.hook_binary, Some(PathBuf::from("/usr/bin/virtzone")));
    // The missing hook is left out; this machine's files carry no SELinux label.
    assert_eq!(m.hook_labels.len(), 1);
    assert_eq!(m.hook_labels[0].0, hook);
    // Nothing there: no SELinux, no AppArmor.
    let m = facts::mac_facts(&dir.path().join("none"), &[&missing]);
    assert_eq!((m.selinux_enforce, m.apparmor_libvirtd), (None, None));
}

/// S6 of issue #24: other users of bridge filtering make the br-netfilter fix unsafe.
#[test]
fn br_netfilter_fix_is_not_safe_while_others_rely_on_bridge_filtering() {
    let base = |f: &mut Facts| {
        f.sysctl
            .insert("net/bridge/bridge-nf-call-iptables".into(), "1".into());
        f.bridge_ports
            .insert("br0".into(), vec!["eth1".into(), "vnet3".into()]);
    };
    let json = r#"{"nftables": [
      {"table": {"family": "ip", "name": "filter"}},
      {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "prio": 0, "type": "filter", "policy": "accept"}},
      {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 5, "expr": [{"xt": {"type": "match", "name": "physdev"}}, {"drop": null}]}}
    ]}"#;
    let saved = |line: &str| {
        let mut rs = crate::verify::Ruleset::from_json(json).unwrap();
        rs.attach_saved("ip", &format!("*filter\n{line}\nCOMMIT\n"));
        rs
    };
    for (ruleset, user) in [
        // libvirt's nwfilter (and anything else matching bridge ports).
        (
            saved("-A FORWARD -m physdev --physdev-in vnet0 -j DROP"),
            Some("physdev"),
        ),
        // Without iptables-save's line, nft's compat match names physdev all the same.
        (
            crate::verify::Ruleset::from_json(json).unwrap(),
            Some("physdev"),
        ),
        // Docker with icc=false.
        (
            saved("-A FORWARD -i docker0 -o docker0 -j DROP"),
            Some("icc=false"),
        ),
        // Traffic between two bridges is routed, not bridged: no user.
        (saved("-A FORWARD -i docker0 -o eth0 -j DROP"), None),
    ] {
        let mut f = Facts {
            evaluable: Ok(ruleset),
            ..Facts::empty()
        };
        base(&mut f);
        let c = find(&diagnose(&f), "br-netfilter").clone();
        assert_eq!(c.status, Status::Problem);
        let fix = c.fix.unwrap();
        match user {
            Some(user) => {
                assert!(!fix.safe, "{user}: {}", c.summary);
                assert!(c.summary.contains("not safe"), "{}", c.summary);
                assert!(
                    c.evidence.iter().any(|e| e.contains(user)),
                    "{:?}",
                    c.evidence
                );
            }
            None => assert!(fix.safe, "{:?}", c.evidence),
        }
    }
    // kube-proxy's chains.
    // (With a forward hook that drops the bridged traffic: a ruleset that accepts it makes
    // br_netfilter harmless, whoever else uses it.)
    let kube = r#"{"nftables": [
      {"table": {"family": "ip", "name": "filter"}},
      {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "prio": 0, "type": "filter", "policy": "drop"}},
      {"chain": {"family": "ip", "table": "filter", "name": "KUBE-FORWARD"}}
    ]}"#;
    let mut f = Facts {
        evaluable: Ok(crate::verify::Ruleset::from_json(kube).unwrap()),
        ..Facts::empty()
    };
    base(&mut f);
    let c = find(&diagnose(&f), "br-netfilter").clone();
    assert!(!c.fix.unwrap().safe);
    assert!(c.evidence.iter().any(|e| e.contains("kube-proxy")));
}

/// S6 of issue #24: the sysctl.d file is merged, never rewritten with only today's keys.
#[test]
fn the_sysctl_file_is_merged() {
    let first = merge_sysctl_conf(None, &["net.bridge.bridge-nf-call-iptables".into()]);
    assert!(first.starts_with("# Written by virtzone doctor --fix"));
    assert!(first.ends_with("net.bridge.bridge-nf-call-iptables = 0\n"));
    // A later fix for the other key keeps the first one, and an admin's own line.
    let edited = format!("{first}net.bridge.bridge-nf-call-arptables = 0\n");
    let second = merge_sysctl_conf(
        Some(&edited),
        &["net.bridge.bridge-nf-call-ip6tables".into()],
    );
    for line in [
        "net.bridge.bridge-nf-call-iptables = 0",
        "net.bridge.bridge-nf-call-arptables = 0",
        "net.bridge.bridge-nf-call-ip6tables = 0",
    ] {
        assert_eq!(second.lines().filter(|l| *l == line).count(), 1, "{second}");
    }
    // The same key again (in the other spelling, or set to 1 by hand) is replaced, not doubled.
    let again = merge_sysctl_conf(
        Some("net/bridge/bridge-nf-call-iptables=1\n# net.bridge.bridge-nf-call-iptables = 1\n"),
        &["net.bridge.bridge-nf-call-iptables".into()],
    );
    assert_eq!(
        again,
        "# net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-iptables = 0\n"
    );
}
