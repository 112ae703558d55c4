//! `virtzone status` and `virtzone check` against real firewalld releases on a private bus.

use crate::common;

use std::path::PathBuf;
use std::process::Output;

use common::{run_with_input, text, Backend, Lab, LabConfig, Release};
use serde_json::Value;

fn output(cmd: &mut std::process::Command) -> Output {
    cmd.output().expect("run virtzone")
}

fn status_json(lab: &Lab) -> Value {
    let out = output(lab.virtzone().args(["status", "--json"]));
    assert!(out.status.success(), "status failed: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// Runs `virtzone check` with `xml` on stdin.
fn check_xml(lab: &Lab, xml: &str, extra: &[&str]) -> Output {
    run_with_input(
        lab.virtzone()
            .args(["check", "--network-xml", "-"])
            .args(extra),
        xml,
    )
}

/// The shipped zone and policy files, as firewalld would load them from its config tree.
fn shipped_files(with_routed: bool) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for (name, xml) in virtzone::zone::shipped::SHIPPED_ZONES {
        if with_routed || *name == "libvirt" {
            files.push((PathBuf::from(format!("zones/{name}.xml")), xml.to_string()));
        }
    }
    if with_routed {
        for (name, xml) in virtzone::zone::shipped::SHIPPED_POLICIES {
            files.push((
                PathBuf::from(format!("policies/{name}.xml")),
                xml.to_string(),
            ));
        }
    }
    files
}

const NAT: &str =
    "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/></network>";
const ROUTED: &str = "<hookData><network><name>r1</name><forward mode='route'/><bridge name='virbr1'/></network></hookData>";

#[test]
fn no_zone_fails_on_nftables_and_warns_on_iptables() {
    for cfg in common::all_cells() {
        let (release, backend) = (cfg.release, cfg.backend);
        let lab = Lab::start(cfg);
        let status = status_json(&lab);
        assert_eq!(status["firewalld"]["running"], true);
        assert_eq!(status["firewalld"]["version"], release.version());
        assert_eq!(status["firewalld"]["state"], "RUNNING");
        assert_eq!(status["firewalld"]["backend"], backend.as_str());
        assert_eq!(status["zones"][0]["name"], "libvirt");
        assert_eq!(status["zones"][0]["runtime"], false);

        let out = check_xml(&lab, NAT, &[]);
        match backend {
            Backend::Nftables => {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{release:?}: {}",
                    text(&out.stderr)
                );
                let msg = text(&out.stderr);
                for part in [
                    "nftables backend",
                    "no libvirt zone",
                    "network default",
                    "virtzone install",
                    "FirewallBackend=iptables",
                ] {
                    assert!(
                        msg.contains(part),
                        "{release:?} {backend:?}: {msg:?} lacks {part:?}"
                    );
                }
                assert_eq!(msg.lines().count(), 1, "one sentence: {msg:?}");
            }
            Backend::Iptables => {
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{release:?}: {}",
                    text(&out.stderr)
                );
                assert!(
                    text(&out.stderr)
                        .contains("warning: bridge virbr0 stays in firewalld's default zone"),
                    "{}",
                    text(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn zones_present_pass_and_name_the_zone() {
    for mut cfg in common::all_cells() {
        cfg.files = shipped_files(true);
        let release = cfg.release;
        let lab = Lab::start(cfg);
        let status = status_json(&lab);
        for list in ["zones", "policies"] {
            for o in status[list].as_array().unwrap() {
                assert_eq!(o["runtime"], true, "{release:?} {o}");
                assert_eq!(o["permanent"], true, "{release:?} {o}");
            }
        }
        let out = check_xml(&lab, NAT, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim(),
            "bridge virbr0 of network default gets zone libvirt"
        );

        let out = check_xml(&lab, ROUTED, &["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["zone"], "libvirt-routed");
        assert_eq!(v["reason"], "default-zone");
        assert_eq!(v["forward"], "route");
        assert_eq!(v["network"], "r1");

        // An explicit zone wins; a missing one is named.
        let out = check_xml(&lab, NAT, &["--zone", "trusted"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("requested zone trusted"));
        let out = check_xml(&lab, NAT, &["--zone", "nosuchzone"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr)
                .contains("zone nosuchzone requested for network default does not exist"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn routed_falls_back_to_libvirt_without_policies() {
    let lab = Lab::start(LabConfig {
        files: shipped_files(false),
        ..LabConfig::default()
    });
    let out = check_xml(&lab, ROUTED, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("gets zone libvirt"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("falls back to zone libvirt"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_shows_bridges_and_their_zones() {
    let lab = Lab::start(LabConfig {
        files: shipped_files(false),
        ..LabConfig::default()
    });
    for br in ["virbr0", "virbr5"] {
        let out = lab
            .command("ip")
            .args(["link", "add", br, "type", "bridge"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = lab.firewall_cmd(&["--zone=libvirt", "--change-interface=virbr0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = status_json(&lab);
    let bridges = status["bridges"].as_array().unwrap();
    assert_eq!(bridges.len(), 2, "{status}");
    assert_eq!(
        (bridges[0]["name"].as_str(), bridges[0]["zone"].as_str()),
        (Some("virbr0"), Some("libvirt"))
    );
    assert_eq!(
        (bridges[1]["name"].as_str(), bridges[1]["zone"].as_str()),
        (Some("virbr5"), None)
    );
    let shown = common::text(&output(lab.virtzone().arg("status")).stdout);
    assert!(shown.contains("virbr0               libvirt"), "{shown}");
    assert!(
        shown.contains("firewalld: 1.3.3 (state RUNNING, backend nftables)"),
        "{shown}"
    );
}

#[test]
fn old_reported_versions() {
    for (version, rule_priorities, policies, part) in [
        ("0.6.4", false, false, "upgrade firewalld to 0.7.0 or later"),
        ("0.7.0", true, false, "run `virtzone install`"),
    ] {
        let lab = Lab::start(LabConfig {
            reported_version: Some(version.into()),
            ..LabConfig::default()
        });
        let status = status_json(&lab);
        assert_eq!(status["firewalld"]["version"], version);
        assert_eq!(
            status["firewalld"]["capabilities"]["rule_priorities"],
            rule_priorities
        );
        assert_eq!(status["firewalld"]["capabilities"]["policies"], policies);
        let out = check_xml(&lab, NAT, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{version}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(part),
            "{version}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn no_firewalld() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    let status = status_json(&lab);
    assert_eq!(status["firewalld"]["running"], false);
    assert_eq!(status["firewalld"]["system_bus"], true);
    let out = check_xml(&lab, NAT, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("firewalld is not running"));
    let out = check_xml(
        &lab,
        "<network><name>n1</name><bridge name='virbr0' zone='libvirt'/></network>",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "virtzone: zone libvirt requested for network n1 but firewalld is not running"
        ),
        "{}",
        text(&out.stderr)
    );

    // No system bus at all is the same fact, not a crash.
    let out = output(lab.virtzone().args(["status", "--json"]).env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}/nobus.sock", lab.dir().display()),
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["firewalld"]["running"].as_bool(),
            v["firewalld"]["system_bus"].as_bool()
        ),
        (Some(false), Some(false))
    );
    let out = output(lab.virtzone().args(["check", "--bridge", "virbr0"]).env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}/nobus.sock", lab.dir().display()),
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn failed_firewalld_is_reported() {
    let lab = Lab::start(LabConfig {
        files: vec![(
            PathBuf::from("zones/broken.xml"),
            "<zone><rule priority='x'></zone>".into(),
        )],
        expect_state: "FAILED",
        ..LabConfig::new(Release::Debian12, Backend::Nftables)
    });
    lab.allow_firewalld_errors(
        "the test breaks a zone file so that firewalld fails to load its config",
    );
    let status = status_json(&lab);
    assert_eq!(status["firewalld"]["state"], "FAILED");
    let out = check_xml(&lab, NAT, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("FAILED state"),
        "{}",
        text(&out.stderr)
    );
    // The broken file's lines are firewalld's; virtzone still asked only for what exists.
    let ours: Vec<String> = lab
        .firewalld_errors()
        .into_iter()
        .filter(|l| l.contains("INVALID_ZONE") || l.contains("INVALID_POLICY"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[test]
fn bad_input_exits_2() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    for (xml, extra, part) in [
        ("<network><name>x</name>", &[][..], "malformed"),
        ("<domain/>", &[], "root element is <domain>"),
        (
            "<network><name>x</name><forward mode='nat'/></network>",
            &[],
            "no <bridge name",
        ),
        (
            "<network><name>x</name><bridge name='a/b'/></network>",
            &[],
            "invalid bridge name",
        ),
        (NAT, &["--zone", "../etc"][..], "invalid zone name"),
        (NAT, &["--bridge", "virbr+"][..], "invalid bridge name"),
        (NAT, &["--bridge", "1234567890123456"][..], "16 bytes"),
    ] {
        let out = check_xml(&lab, xml, extra);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{xml} {extra:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(part),
            "{xml} {extra:?}: {}",
            text(&out.stderr)
        );
    }
    let out = output(lab.virtzone().arg("check"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("check needs --network-xml FILE or --bridge BRIDGE"));
    let out = output(
        lab.virtzone()
            .args(["check", "--network-xml", "/nonexistent.xml"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read the network XML from /nonexistent.xml"));
}

/// firewalld 2.0.0 and 2.0.1 lose routed networks' outbound policy: status and check say so (a
/// real 2.3.1 that reports 2.0.1); 2.0.2 gets no warning.
#[test]
fn firewalld_2_0_0_and_2_0_1_warn_for_routed_networks() {
    for (version, warns) in [("2.0.1", true), ("2.0.2", false)] {
        let lab = Lab::start(LabConfig {
            reported_version: Some(version.into()),
            files: shipped_files(true),
            ..LabConfig::new(Release::Debian13, Backend::Nftables)
        });
        let out = output(lab.virtzone().args(["status"]));
        assert!(out.status.success(), "{version}: {out:?}");
        let said = text(&out.stdout);
        let want = format!(
            "warning: firewalld {version} does not apply policies whose egress zone is ANY to \
             interfaces added at runtime (fixed in 2.0.2): routed networks lose their outbound \
             policy libvirt-routed-out"
        );
        assert_eq!(said.contains(&want), warns, "{version}:\n{said}");
        assert_eq!(
            status_json(&lab)["warnings"].as_array().unwrap().len(),
            usize::from(warns),
            "{version}"
        );
        let out = check_xml(&lab, ROUTED, &[]);
        assert!(out.status.success(), "{version}: {out:?}");
        assert_eq!(
            text(&out.stderr).contains("egress zone is ANY"),
            warns,
            "{version}: {}",
            text(&out.stderr)
        );
    }
}

/// libvirt's firewall backend, read from its running rules when network.conf does not say.
#[test]
fn status_reports_libvirts_firewall_backend_from_its_rules() {
    let lab = Lab::start(LabConfig::new(Release::Sid, Backend::Iptables));
    let run = |script: &str| {
        let out = output(lab.command("/bin/sh").args(["-c", script]));
        assert!(out.status.success(), "{script}: {out:?}");
    };
    let status = status_json(&lab);
    // This machine's /etc/libvirt/network.conf (if any) may set it; the lab cannot change /etc.
    let conf = std::fs::read_to_string(virtzone::libvirt::firewall::NETWORK_CONF)
        .ok()
        .and_then(|t| virtzone::libvirt::firewall::from_network_conf(&t));
    if conf.is_none() {
        assert_eq!(status["libvirt_firewall"], Value::Null, "{status}");
    }
    run("iptables -N LIBVIRT_FWO");
    let said = text(&output(lab.virtzone().args(["status"])).stdout);
    if conf.is_none() {
        assert!(
            said.contains("libvirt: firewall backend iptables (from running rules)"),
            "{said}"
        );
    }
    run("iptables -X LIBVIRT_FWO && nft add table ip libvirt_network");
    let status = status_json(&lab);
    if conf.is_none() {
        assert_eq!(
            status["libvirt_firewall"]["backend"], "nftables",
            "{status}"
        );
        assert_eq!(
            status["libvirt_firewall"]["source"], "running rules",
            "{status}"
        );
    }
}
