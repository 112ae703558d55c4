//! `virtzone attach` / `detach` / `list` / `hook` against real firewalld.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Child, Output, Stdio};

use common::{ok, run_with_input, text, Lab, LabConfig};
use serde_json::Value;

/// The state file's bridge → zone map (it must parse: "an intact state file").
fn recorded(lab: &Lab) -> BTreeMap<String, String> {
    let path = lab.dir().join("state/bindings.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_slice(&bytes).expect("bindings.json is valid JSON");
    v["bindings"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(b, x)| (b.clone(), x["zone"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn attach_detach_and_the_admins_choice() {
    for cfg in common::all_cells() {
        let what = format!("{:?}/{:?}", cfg.release, cfg.backend);
        let lab = Lab::start_installed(cfg);
        assert_eq!(
            ok(&lab.run_virtzone(&["attach", "virbr0"])).trim(),
            "bound bridge virbr0 to zone libvirt",
            "{what}"
        );
        assert_eq!(
            ok(&lab.run_virtzone(&["attach", "virbr0"])).trim(),
            "bridge virbr0 is already in zone libvirt"
        );
        // A bridge the admin put elsewhere stays there.
        lab.firewall_cmd_ok(&["--zone=public", "--change-interface=virbr7"]);
        let out = lab.run_virtzone(&["attach", "virbr7"]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert_eq!(text(&out.stderr).trim(), "virtzone: bridge virbr7 is in zone public, which virtzone did not set, so the admin's choice stands; pass --force to move it to zone libvirt");
        assert_eq!(
            lab.interface_zones().get("virbr7").map(String::as_str),
            Some("public"),
            "{what}"
        );
        let out = lab.run_virtzone(&["detach", "virbr7"]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert_eq!(
            lab.interface_zones().get("virbr7").map(String::as_str),
            Some("public")
        );
        assert_eq!(
            ok(&lab.run_virtzone(&["attach", "virbr7", "--force"])).trim(),
            "moved bridge virbr7 from zone public to zone libvirt"
        );
        // A zone virtzone set may be changed by virtzone.
        assert_eq!(
            ok(&lab.run_virtzone(&["attach", "virbr7", "--zone", "trusted"])).trim(),
            "moved bridge virbr7 from zone libvirt to zone trusted"
        );
        // A missing zone is named, with the way out.
        let out = lab.run_virtzone(&["attach", "virbr9", "--zone", "nosuch"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("zone nosuch does not exist in firewalld"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            recorded(&lab),
            BTreeMap::from([
                ("virbr0".into(), "libvirt".into()),
                ("virbr7".into(), "trusted".into())
            ]),
            "{what}"
        );

        // list shows drift: a reload drops runtime bindings, firewall-cmd moves one.
        lab.firewall_cmd_ok(&["--reload"]);
        lab.firewall_cmd_ok(&["--zone=public", "--change-interface=virbr7"]);
        let rows: Value =
            serde_json::from_slice(&lab.run_virtzone(&["list", "--json"]).stdout).unwrap();
        assert_eq!(
            (rows[0]["bridge"].as_str(), rows[0]["state"].as_str()),
            (Some("virbr0"), Some("missing")),
            "{rows}"
        );
        assert_eq!(
            (rows[1]["state"].as_str(), rows[1]["actual"].as_str()),
            (Some("moved"), Some("public")),
            "{rows}"
        );
        let listed = ok(&lab.run_virtzone(&["list"]));
        assert!(
            listed.contains("MISSING") && listed.contains("MOVED: firewalld has it in zone public"),
            "{listed}"
        );

        // detach: one moved away by someone else is left there; an unbound one is a clear no-op.
        let out = ok(&lab.run_virtzone(&["detach", "virbr7"]));
        assert!(
            out.contains("was moved to zone public by someone else; left it there"),
            "{out}"
        );
        assert_eq!(
            lab.interface_zones().get("virbr7").map(String::as_str),
            Some("public")
        );
        let out = ok(&lab.run_virtzone(&["detach", "virbr0"]));
        assert!(out.contains("not bound to any zone now; forgot"), "{out}");
        assert_eq!(
            ok(&lab.run_virtzone(&["detach", "virbr0"])).trim(),
            "bridge virbr0 is not bound to any zone; nothing to do"
        );
        assert!(recorded(&lab).is_empty());
    }
}

#[test]
fn permanent_bindings_survive_reloads() {
    let lab = Lab::start_installed(LabConfig::default());
    ok(&lab.run_virtzone(&["attach", "virbr0", "--permanent"]));
    assert_eq!(
        lab.firewall_cmd_ok(&["--permanent", "--get-zone-of-interface=virbr0"])
            .trim(),
        "libvirt"
    );
    lab.firewall_cmd_ok(&["--reload"]);
    assert_eq!(
        lab.interface_zones().get("virbr0").map(String::as_str),
        Some("libvirt")
    );
    // A permanent binding the admin made elsewhere is respected too.
    lab.firewall_cmd_ok(&["--permanent", "--zone=public", "--add-interface=virbr8"]);
    let out = lab.run_virtzone(&["attach", "virbr8", "--permanent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bound to zone public in the permanent configuration"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        lab.firewall_cmd_ok(&["--permanent", "--get-zone-of-interface=virbr8"])
            .trim(),
        "public"
    );
    let out = ok(&lab.run_virtzone(&["detach", "virbr0"]));
    assert!(
        out.contains("stays bound in the permanent configuration"),
        "{out}"
    );
    ok(&lab.run_virtzone(&["attach", "virbr0", "--permanent"]));
    let out = ok(&lab.run_virtzone(&["detach", "virbr0", "--permanent"]));
    assert!(
        out.contains("removed it from zone libvirt in the permanent configuration"),
        "{out}"
    );
    let out = lab.firewall_cmd(&["--permanent", "--get-zone-of-interface=virbr0"]);
    assert!(
        format!("{}{}", text(&out.stdout), text(&out.stderr)).contains("no zone"),
        "{out:?}"
    );
}

#[test]
fn hostile_names_exit_2_and_change_nothing() {
    let lab = Lab::start_installed(LabConfig::default());
    let before = lab.interface_zones();
    let bridges = [
        "a/b",
        "../x",
        "",
        "1234567890123456",
        "v\u{e9}rbr0",
        "vir br0",
        "virbr0\n",
        "virbr+",
        "-virbr0",
        ".",
        "..",
        "br\u{0}x",
        "br:0",
        "br*",
        "\u{202e}br0",
        "br\t0",
    ];
    for bridge in bridges {
        // `--` so that names starting with '-' reach the name check rather than the option parser.
        for args in [
            vec!["attach", "--", bridge],
            vec!["detach", "--", bridge],
            vec!["attach", "--permanent", "--force", "--", bridge],
        ] {
            let out = match lab.virtzone().args(&args).output() {
                Ok(out) => out,
                // A NUL byte cannot even be passed as an argument: nothing reached virtzone.
                Err(_) if bridge.contains('\0') => continue,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains("invalid bridge name"),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
    }
    let zones = [
        "",
        "a23456789012345678",
        "zone/x",
        "-zone",
        "z\u{f6}ne",
        "zone ",
        "zone\n",
        "../libvirt",
        "*",
        "lib virt",
        "libvirt+",
    ];
    for zone in zones {
        let out = lab.run_virtzone(&["attach", "virbr0", &format!("--zone={zone}")]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{zone:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("invalid zone name"),
            "{zone:?}: {}",
            text(&out.stderr)
        );
    }
    // Also without `--`: the option parser refuses with exit 2 as well.
    assert_eq!(
        lab.run_virtzone(&["attach", "-virbr0"]).status.code(),
        Some(2)
    );
    assert_eq!(lab.interface_zones(), before);
    assert!(!lab.dir().join("state/bindings.json").exists());
    assert!(bridges.len() + zones.len() >= 15);
}

/// Waits for every child and returns their outputs.
fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn concurrent_invocations_stay_consistent() {
    let lab = Lab::start_installed(LabConfig::default());
    let spawn = |args: Vec<String>| {
        lab.virtzone()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // 16 at once, each a different bridge.
    let outs = wait_all(
        (0..16)
            .map(|i| spawn(vec!["attach".into(), format!("vzbr{i}")]))
            .collect(),
    );
    for out in &outs {
        ok(out);
    }
    let want: BTreeMap<String, String> = (0..16)
        .map(|i| (format!("vzbr{i}"), "libvirt".to_string()))
        .collect();
    assert_eq!(recorded(&lab), want);
    assert_eq!(lab.interface_zones(), want);
    // 16 at once again: detach the even ones, move the odd ones to trusted.
    let outs = wait_all(
        (0..16)
            .map(|i| {
                let bridge = format!("vzbr{i}");
                if i % 2 == 0 {
                    spawn(vec!["detach".into(), bridge])
                } else {
                    spawn(vec![
                        "attach".into(),
                        bridge,
                        "--zone".into(),
                        "trusted".into(),
                    ])
                }
            })
            .collect(),
    );
    for out in &outs {
        ok(out);
    }
    let want: BTreeMap<String, String> = (1..16)
        .step_by(2)
        .map(|i| (format!("vzbr{i}"), "trusted".to_string()))
        .collect();
    assert_eq!(recorded(&lab), want);
    assert_eq!(lab.interface_zones(), want);
    // 16 at once on one bridge, alternating zones: whoever wins, record and firewalld agree.
    let outs = wait_all(
        (0..16)
            .map(|i| {
                spawn(vec![
                    "attach".into(),
                    "vzbr1".into(),
                    "--zone".into(),
                    if i % 2 == 0 { "libvirt" } else { "trusted" }.into(),
                ])
            })
            .collect(),
    );
    for out in &outs {
        ok(out);
    }
    assert_eq!(recorded(&lab), lab.interface_zones());
}

fn hook(lab: &Lab, name: &str, op: &str, subop: &str, data: &str) -> Output {
    run_with_input(
        lab.virtzone()
            .args(["hook", "network", name, op, subop, "-"]),
        data,
    )
}

const NAT: &str = "<hookData><network><name>default</name><forward mode='nat'/><bridge name='virbr0'/></network></hookData>";
const ROUTED: &str = "<hookData><network><name>r1</name><forward mode='route'/><bridge name='virbr1'/></network></hookData>";

const BRIDGED: &str = "<hookData><network><name>lan</name><forward mode='bridge'/><bridge name='vzhb0'/></network></hookData>";

/// Issue #20: a network of forward mode bridge puts its guests on a host bridge libvirt does not own.
/// The hook records the network but changes no host bridge's zone: the admin's binding stands (also
/// when the network stops), and the log says so; macvtap is named as crossing no bridge.
#[test]
fn the_hook_leaves_a_host_bridge_of_a_bridged_network_alone() {
    let lab = Lab::start_installed(LabConfig::default());
    for args in ["link add vzhb0 type bridge", "link add vzhb1 type bridge"] {
        ok(&lab.command("ip").args(args.split(' ')).output().unwrap());
    }
    ok(&lab.run_virtzone(&["attach", "vzhb0", "--zone", "internal"]));
    let start = ok(&hook(&lab, "lan", "start", "begin", BRIDGED));
    assert!(start.contains("host bridge vzhb0"), "{start}");
    let started = ok(&hook(&lab, "lan", "started", "begin", BRIDGED));
    assert!(
        started.contains(
            "network lan: guests on host bridge vzhb0, in zone internal; virtzone does not change \
             the zone of a host bridge: vzhb0 is bound by its admin through virtzone to zone \
             internal, which stands"
        ),
        "{started}"
    );
    let networks = std::fs::read_to_string(lab.dir().join("state/forwards/networks.json"))
        .expect("the hook records the network");
    let networks: Value = serde_json::from_str(&networks).unwrap();
    assert_eq!(
        networks["networks"]["lan"]["bridge"], "vzhb0",
        "{networks:#}"
    );
    let stopped = ok(&hook(&lab, "lan", "stopped", "end", BRIDGED));
    assert!(
        stopped.contains("host bridge vzhb0 keeps its zone"),
        "{stopped}"
    );
    assert_eq!(
        lab.interface_zones(),
        BTreeMap::from([("vzhb0".into(), "internal".into())])
    );
    assert_eq!(
        recorded(&lab),
        BTreeMap::from([("vzhb0".into(), "internal".into())])
    );
    // A host bridge nobody bound stays in no zone, and the log says how to bind it.
    let other = BRIDGED.replace("vzhb0", "vzhb1").replace(">lan<", ">lan1<");
    let started = ok(&hook(&lab, "lan1", "started", "begin", &other));
    assert!(
        started.contains("in no zone (firewalld's default zone applies)")
            && started
                .contains("not bound by virtzone (virtzone attach vzhb1 --zone ZONE binds it)"),
        "{started}"
    );
    assert!(!lab.interface_zones().contains_key("vzhb1"));
    let tap = "<hookData><network><name>tap</name><forward mode='bridge'><interface dev='eth0'/></forward></network></hookData>";
    let started = ok(&hook(&lab, "tap", "started", "begin", tap));
    assert!(
        started.contains("guests attach by macvtap to eth0; their traffic never crosses the host's bridge netfilter path"),
        "{started}"
    );
}

#[test]
fn hook_operations() {
    let lab = Lab::start(LabConfig::default());
    // Without the zone on nftables, the start is refused with the pre-check's sentence.
    let out = hook(&lab, "default", "start", "begin", NAT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("uses the nftables backend and has no libvirt zone"),
        "{}",
        text(&out.stderr)
    );
    ok(&lab.run_virtzone(&["install"]));
    ok(&hook(&lab, "default", "start", "begin", NAT));
    assert_eq!(
        ok(&hook(&lab, "default", "started", "begin", NAT)).trim(),
        "bound bridge virbr0 to zone libvirt"
    );
    assert_eq!(
        ok(&hook(&lab, "r1", "started", "begin", ROUTED)).trim(),
        "bound bridge virbr1 to zone libvirt-routed"
    );
    assert_eq!(
        lab.interface_zones(),
        BTreeMap::from([
            ("virbr0".into(), "libvirt".into()),
            ("virbr1".into(), "libvirt-routed".into())
        ])
    );
    let rows: Value =
        serde_json::from_slice(&lab.run_virtzone(&["list", "--json"]).stdout).unwrap();
    assert_eq!(rows[0]["network"], "default");
    for (op, subop) in [
        ("port-created", "begin"),
        ("port-deleted", "begin"),
        ("updated", "begin"),
        ("reconnect", "begin"),
        ("started", "end"),
    ] {
        ok(&hook(&lab, "default", op, subop, NAT));
    }
    ok(&hook(&lab, "default", "stopped", "end", NAT));
    assert_eq!(
        lab.interface_zones(),
        BTreeMap::from([("virbr1".into(), "libvirt-routed".into())])
    );
    assert_eq!(recorded(&lab).len(), 1);
    // Bad shapes: exit 2, nothing changed.
    for (name, op, subop, data, part) in [
        ("default", "started", "begin", "<hookData>", "malformed"),
        ("default", "started", "begin", "", "no XML element"),
        (
            "other",
            "started",
            "begin",
            NAT,
            "describes network \"default\", but the hook was called for network \"other\"",
        ),
        (
            "default",
            "start",
            "middle",
            NAT,
            "is not a libvirt network hook operation",
        ),
        (
            "default",
            "Start!",
            "begin",
            NAT,
            "is not a libvirt network hook operation",
        ),
        (
            "default",
            "",
            "begin",
            NAT,
            "is not a libvirt network hook operation",
        ),
        (
            "default",
            "started",
            "begin",
            "<hookData><network><name>default</name><bridge name='../x'/></network></hookData>",
            "invalid bridge name",
        ),
    ] {
        let out = hook(&lab, name, op, subop, data);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{op} {subop} {data}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(part), "{}", text(&out.stderr));
    }
    // A hook virtzone does not have: bad input.
    let out = lab
        .virtzone()
        .args(["hook", "lxc", "vm1", "start", "begin", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The qemu hook never fails a domain's start, whatever it is given, and binds nothing.
    let out = lab
        .virtzone()
        .args(["hook", "qemu", "vm1", "start", "begin", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        lab.interface_zones(),
        BTreeMap::from([("virbr1".into(), "libvirt-routed".into())])
    );
}

/// The reconcile the daemon can run (snapshot → plan → executor) against a real firewalld: a lost
/// binding is applied, one in place is left alone, a bridge someone moved stays where it is.
#[test]
fn reconcile_reapplies_lost_bindings_and_leaves_drift() {
    use virtzone::bind::{reconcile, Binding, Bindings};
    use virtzone::names::{BridgeName, ZoneName};

    let lab = Lab::start(LabConfig::default());
    ok(&lab.run_virtzone(&["install"]));
    let mut desired = Bindings::default();
    for bridge in ["vzbr0", "vzbr1", "vzbr2"] {
        desired.bindings.insert(
            BridgeName::new(bridge).unwrap(),
            Binding {
                zone: ZoneName::libvirt(),
                permanent: false,
                network: None,
                networkmanager: None,
                source: None,
            },
        );
    }
    lab.firewall_cmd_ok(&["--zone=libvirt", "--change-interface=vzbr0"]);
    lab.firewall_cmd_ok(&["--zone=public", "--change-interface=vzbr2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = rt.block_on(async {
        let conn = zbus::connection::Builder::address(lab.bus_address.as_str())
            .build()
            .await
            .unwrap();
        let fw = virtzone::firewalld::Firewalld::from_connection(conn);
        reconcile(&fw, &desired, 4).await.unwrap()
    });
    assert_eq!(done.plan.in_place, 1);
    assert_eq!(done.plan.drift.len(), 1);
    assert_eq!(done.results.len(), 1);
    assert!(
        done.results.iter().all(|(_, r)| r.is_ok()),
        "{:?}",
        done.results
    );
    let zones = lab.interface_zones();
    assert_eq!(zones.get("vzbr1").map(String::as_str), Some("libvirt"));
    assert_eq!(zones.get("vzbr2").map(String::as_str), Some("public"));
}
