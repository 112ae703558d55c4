//! `virtzone install` / `uninstall` against real firewalld: every release of the lab (0.9.3, 1.3.3,
//! 2.3.1, 2.5.2) on both backends in the tests that loop over `all_cells`; the others name theirs.

use crate::common;

use std::path::{Path, PathBuf};

use common::{ok, text, Backend, Lab, LabConfig, Release};

fn permanent_zones(lab: &Lab) -> Vec<String> {
    lab.firewall_cmd_ok(&["--permanent", "--get-zones"])
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn both_backends() -> Vec<LabConfig> {
    [Backend::Nftables, Backend::Iptables]
        .into_iter()
        .map(|b| LabConfig::new(Release::Debian12, b))
        .collect()
}

#[test]
fn fresh_install_is_live_and_what_firewall_cmd_shows() {
    for cfg in common::all_cells() {
        let what = format!("{:?}/{:?}", cfg.release, cfg.backend);
        let lab = Lab::start(cfg);
        let out = ok(&lab.run_virtzone(&["install"]));
        assert_eq!(out.matches(": added").count(), 5, "{what}: {out}");
        assert!(out.contains("reloaded firewalld"), "{what}: {out}");

        let info = lab.firewall_cmd_ok(&["--info-zone=libvirt"]);
        assert!(info.contains("target: ACCEPT"), "{what}: {info}");
        assert!(
            info.contains("services: dhcp dhcpv6 dns ssh tftp"),
            "{what}: {info}"
        );
        assert!(info.contains("protocols: icmp ipv6-icmp"), "{what}: {info}");
        assert!(
            info.contains("rule priority=\"32767\" reject"),
            "{what}: {info}"
        );
        let policy = lab.firewall_cmd_ok(&["--info-policy=libvirt-to-host"]);
        assert!(policy.contains("target: REJECT"), "{what}: {policy}");
        assert!(
            policy.contains("ingress-zones: libvirt-routed")
                && policy.contains("egress-zones: HOST"),
            "{what}: {policy}"
        );
        assert!(
            policy.contains("services: dhcp dhcpv6 dns ssh tftp"),
            "{what}: {policy}"
        );
        for p in ["libvirt-routed-in", "libvirt-routed-out"] {
            assert!(
                lab.firewall_cmd_ok(&[&format!("--info-policy={p}")])
                    .contains("target: ACCEPT"),
                "{what}: {p}"
            );
        }
        // Live: a bridge can be bound to the new zones right away.
        lab.firewall_cmd_ok(&["--zone=libvirt-routed", "--change-interface=virbr9"]);

        let status: serde_json::Value =
            serde_json::from_slice(&lab.run_virtzone(&["status", "--json"]).stdout).unwrap();
        for list in ["zones", "policies"] {
            for o in status[list].as_array().unwrap() {
                assert_eq!(
                    (
                        o["runtime"].as_bool(),
                        o["origin"].as_str(),
                        o["matches_shipped"].as_bool()
                    ),
                    (Some(true), Some("virtzone"), Some(true)),
                    "{what}: {o}"
                );
            }
        }
    }
}

#[test]
fn reinstall_changes_nothing_and_keeps_admin_changes() {
    for cfg in common::all_cells() {
        let what = format!("{:?}/{:?}", cfg.release, cfg.backend);
        let lab = Lab::start(cfg);
        ok(&lab.run_virtzone(&["install"]));
        // The admin's customisations, permanent and made live.
        lab.firewall_cmd_ok(&["--permanent", "--zone=libvirt", "--add-service=http"]);
        lab.firewall_cmd_ok(&[
            "--permanent",
            "--policy=libvirt-to-host",
            "--add-port=8080/tcp",
        ]);
        lab.firewall_cmd_ok(&["--reload"]);
        // A runtime-only binding: any reload would drop it (FlushAllOnReload).
        lab.firewall_cmd_ok(&["--zone=trusted", "--change-interface=probe0"]);

        let out = ok(&lab.run_virtzone(&["install"]));
        assert!(!out.contains(": added"), "{what}: {out}");
        assert!(out.contains("zone libvirt: already present (installed by virtzone), kept as it is; it differs from virtzone's: extra service http"), "{what}: {out}");
        assert!(out.contains("extra port 8080/tcp"), "{what}: {out}");
        assert!(
            out.contains("nothing to add; firewalld was not reloaded"),
            "{what}: {out}"
        );
        assert_eq!(
            lab.firewall_cmd_ok(&["--get-zone-of-interface=probe0"])
                .trim(),
            "trusted",
            "{what}: a reload happened"
        );
        assert!(
            lab.firewall_cmd_ok(&["--permanent", "--zone=libvirt", "--list-services"])
                .contains("http"),
            "{what}"
        );
        assert!(
            lab.firewall_cmd_ok(&["--zone=libvirt", "--list-services"])
                .contains("http"),
            "{what}"
        );
        assert!(
            lab.firewall_cmd_ok(&["--permanent", "--policy=libvirt-to-host", "--list-ports"])
                .contains("8080/tcp"),
            "{what}"
        );
    }
}

#[test]
fn old_firewalld_is_refused_with_nothing_written() {
    for cfg in both_backends() {
        let lab = Lab::start(LabConfig {
            reported_version: Some("0.6.4".into()),
            ..cfg
        });
        let out = lab.run_virtzone(&["install"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains("firewalld 0.6.4 cannot load the libvirt zone")
                && err.contains("nothing was written"),
            "{err}"
        );
        assert!(!permanent_zones(&lab)
            .iter()
            .any(|z| z.starts_with("libvirt")));
        assert!(!lab.config_dir.join("zones/libvirt.xml").exists());
        assert!(!lab.dir().join("state/installed.json").exists());
    }
}

#[test]
fn firewalld_0_8_gets_the_zone_without_policies() {
    for cfg in both_backends() {
        let lab = Lab::start(LabConfig {
            reported_version: Some("0.8.0".into()),
            ..cfg
        });
        let out = ok(&lab.run_virtzone(&["install"]));
        assert!(out.contains("zone libvirt: added"), "{out}");
        assert!(out.contains("zone libvirt-routed: skipped, it needs firewalld 0.9.0 or later (policies); routed networks fall back to the libvirt zone"), "{out}");
        assert!(out.contains("policy libvirt-to-host: skipped"), "{out}");
        let zones = permanent_zones(&lab);
        assert!(
            zones.contains(&"libvirt".to_string())
                && !zones.contains(&"libvirt-routed".to_string()),
            "{zones:?}"
        );
        assert!(lab
            .firewall_cmd_ok(&["--get-policies"])
            .split_whitespace()
            .all(|p| !p.starts_with("libvirt")));
        // The pre-0.9.0 path (addZone's tuple) produced the same zone.
        let info = lab.firewall_cmd_ok(&["--info-zone=libvirt"]);
        assert!(
            info.contains("target: ACCEPT") && info.contains("rule priority=\"32767\" reject"),
            "{info}"
        );
        // And a routed network falls back to it.
        let out = lab
            .virtzone()
            .args(["check", "--network-xml", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"<network><name>r</name><forward mode='route'/><bridge name='virbr1'/></network>")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(ok(&out).contains("gets zone libvirt"));
    }
}

#[test]
fn failing_reload_is_rolled_back() {
    for cfg in both_backends() {
        let lab = Lab::start(cfg);
        // An unrelated broken file appears on disk after firewalld started: the next reload fails.
        std::fs::create_dir_all(lab.config_dir.join("zones")).unwrap();
        std::fs::write(
            lab.config_dir.join("zones/broken.xml"),
            "<zone><rule priority='x'></zone>",
        )
        .unwrap();
        let out = lab.run_virtzone(&["install"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains("firewalld failed to reload with the new zones")
                && err.contains("removed what this run had added"),
            "{err}"
        );
        std::fs::remove_file(lab.config_dir.join("zones/broken.xml")).unwrap();
        assert!(!permanent_zones(&lab)
            .iter()
            .any(|z| z.starts_with("libvirt")));
        for (dir, name) in [
            ("zones", "libvirt"),
            ("zones", "libvirt-routed"),
            ("policies", "libvirt-to-host"),
        ] {
            assert!(
                !lab.config_dir.join(format!("{dir}/{name}.xml")).exists(),
                "{name} left behind"
            );
        }
        assert!(!lab.dir().join("state/installed.json").exists());
        assert_eq!(lab.state(), "RUNNING");
        // firewalld still enforces its previous configuration, and takes the install once healthy.
        ok(&lab.run_virtzone(&["install"]));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn offline_install_into_a_root_is_valid_config() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    let root = lab.dir().join("root");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc/firewalld")).unwrap();
    copy_tree(&lab.default_config_dir, &root.join("usr/lib/firewalld"));
    let out = ok(&lab.run_virtzone(&["install", "--root", root.to_str().unwrap()]));
    assert_eq!(out.matches(": added").count(), 5, "{out}");
    for (dir, name) in [
        ("zones", "libvirt"),
        ("zones", "libvirt-routed"),
        ("policies", "libvirt-routed-in"),
        ("policies", "libvirt-routed-out"),
        ("policies", "libvirt-to-host"),
    ] {
        assert!(
            root.join(format!("usr/lib/firewalld/{dir}/{name}.xml"))
                .is_file(),
            "{name}"
        );
    }
    let check = |root: &Path| {
        lab.command("firewall-offline-cmd")
            .arg(format!(
                "--system-config={}",
                root.join("etc/firewalld").display()
            ))
            .arg(format!(
                "--default-config={}",
                root.join("usr/lib/firewalld").display()
            ))
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let checked = check(&root);
    assert!(
        checked.status.success(),
        "check-config: {} {}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    // The check has teeth: a damaged copy of the same tree fails it.
    let broken = lab.dir().join("broken");
    copy_tree(&root, &broken);
    // (Not a bad rich rule: firewalld before 2.3.0 only warns about those and drops the rule.)
    std::fs::write(
        broken.join("usr/lib/firewalld/zones/libvirt.xml"),
        "<zone><rule priority='x'></zone>",
    )
    .unwrap();
    assert!(!check(&broken).status.success());
    // A second offline install changes nothing; uninstall removes exactly what it wrote.
    let out = ok(&lab.run_virtzone(&["install", "--root", root.to_str().unwrap()]));
    assert!(!out.contains(": added"), "{out}");
    let out = ok(&lab.run_virtzone(&["uninstall", "--root", root.to_str().unwrap()]));
    assert_eq!(out.matches(": removed").count(), 5, "{out}");
    assert!(check(&root).status.success());
}

#[test]
fn packaged_files_load_into_firewalld() {
    // What `install --root` writes is what a distribution package ships: firewalld loads it as stock config.
    let mut default_files = Vec::new();
    for (name, xml) in virtzone::zone::SHIPPED_ZONES {
        default_files.push((PathBuf::from(format!("zones/{name}.xml")), xml.to_string()));
    }
    for (name, xml) in virtzone::zone::SHIPPED_POLICIES {
        default_files.push((
            PathBuf::from(format!("policies/{name}.xml")),
            xml.to_string(),
        ));
    }
    for cfg in common::all_cells() {
        let lab = Lab::start(LabConfig {
            default_files: default_files.clone(),
            ..cfg
        });
        let status: serde_json::Value =
            serde_json::from_slice(&lab.run_virtzone(&["status", "--json"]).stdout).unwrap();
        assert_eq!(status["zones"][0]["origin"], "package", "{status}");
        assert_eq!(status["zones"][0]["runtime"], true, "{status}");
        let out = ok(&lab.run_virtzone(&["install"]));
        assert!(
            out.contains("zone libvirt: already present (from a package), same as virtzone's"),
            "{out}"
        );
        assert!(out.contains("nothing to add"), "{out}");
    }
}

#[test]
fn uninstall_leaves_package_and_admin_objects_alone() {
    for cfg in both_backends() {
        // libvirt's package ships the libvirt zone (its own words); an admin wrote libvirt-to-host.
        let package_zone = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone target=\"ACCEPT\">\n  <short>libvirt</short>\n  <protocol value='icmp'/>\n  <protocol value='ipv6-icmp'/>\n  <service name='dhcp'/>\n  <service name='dhcpv6'/>\n  <service name='dns'/>\n  <service name='ssh'/>\n  <service name='tftp'/>\n  <rule priority='32767'>\n    <reject/>\n  </rule>\n</zone>\n";
        let admin_policy = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<policy target=\"REJECT\"><ingress-zone name=\"libvirt-routed\"/><egress-zone name=\"HOST\"/><service name=\"dns\"/></policy>\n";
        let lab = Lab::start(LabConfig {
            default_files: vec![(PathBuf::from("zones/libvirt.xml"), package_zone.into())],
            files: vec![
                (
                    PathBuf::from("zones/libvirt-routed.xml"),
                    "<?xml version=\"1.0\"?>\n<zone/>\n".into(),
                ),
                (
                    PathBuf::from("policies/libvirt-to-host.xml"),
                    admin_policy.into(),
                ),
            ],
            ..cfg
        });
        let out = ok(&lab.run_virtzone(&["install"]));
        assert!(
            out.contains("zone libvirt: already present (from a package), same as virtzone's"),
            "{out}"
        );
        assert!(out.contains("policy libvirt-to-host: already present (an admin's), kept as it is; it differs from virtzone's: missing service dhcp"), "{out}");
        assert_eq!(out.matches(": added").count(), 2, "{out}");
        // A bridge in a zone virtzone would remove blocks the uninstall, unless forced.
        lab.firewall_cmd_ok(&["--zone=libvirt", "--change-interface=virbr0"]);
        let out = ok(&lab.run_virtzone(&["uninstall"]));
        assert_eq!(out.matches(": removed").count(), 2, "{out}");
        assert!(
            out.contains("zone libvirt: skipped, it is from a package, not virtzone's"),
            "{out}"
        );
        assert!(
            out.contains("zone libvirt-routed: skipped, it is an admin's, not virtzone's"),
            "{out}"
        );
        assert!(lab.config_dir.join("policies/libvirt-to-host.xml").exists());
        assert_eq!(
            std::fs::read_to_string(lab.default_config_dir.join("zones/libvirt.xml")).unwrap(),
            package_zone
        );
        let zones = permanent_zones(&lab);
        assert!(
            zones.contains(&"libvirt".to_string()) && zones.contains(&"libvirt-routed".to_string())
        );
        let policies = lab.firewall_cmd_ok(&["--permanent", "--get-policies"]);
        assert!(
            policies.contains("libvirt-to-host") && !policies.contains("libvirt-routed-in"),
            "{policies}"
        );
    }
}

#[test]
fn uninstall_refuses_bound_zones_unless_forced() {
    let lab = Lab::start(LabConfig::default());
    ok(&lab.run_virtzone(&["install"]));
    lab.firewall_cmd_ok(&["--zone=libvirt", "--change-interface=virbr0"]);
    let out = lab.run_virtzone(&["uninstall"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("zone libvirt still holds virbr0") && err.contains("--force"),
        "{err}"
    );
    assert!(permanent_zones(&lab).contains(&"libvirt".to_string()));
    let out = ok(&lab.run_virtzone(&["uninstall", "--force"]));
    assert_eq!(out.matches(": removed").count(), 5, "{out}");
    assert!(!permanent_zones(&lab)
        .iter()
        .any(|z| z.starts_with("libvirt")));
}

/// Removing a zone that a remaining policy names leaves a configuration firewalld refuses at its next
/// start (it falls back to its stock configuration in state FAILED, dropping every /etc customisation).
/// `uninstall` refuses that, naming the policy and the fix; firewalld restarts RUNNING with the admin's
/// objects intact.
#[test]
fn uninstall_never_orphans_a_policy() {
    for cfg in [
        LabConfig::new(Release::Debian12, Backend::Nftables),
        LabConfig::new(Release::Debian13, Backend::Nftables),
    ] {
        let what = format!("{:?}", cfg.release);
        let mut lab = Lab::start(cfg);
        ok(&lab.run_virtzone(&["install"]));
        // The admin changes virtzone's libvirt-to-host (so uninstall keeps it) ...
        lab.firewall_cmd_ok(&[
            "--permanent",
            "--policy=libvirt-to-host",
            "--add-service=http",
        ]);
        let out = lab.run_virtzone(&["uninstall"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("policy libvirt-to-host names zone libvirt")
                && err.contains("--delete-policy")
                && err.contains("nothing was changed"),
            "{what}: {err}"
        );
        // ... and writes a policy of their own that names the zone.
        lab.firewall_cmd_ok(&[
            "--permanent",
            "--policy=libvirt-to-host",
            "--remove-service=http",
        ]);
        lab.firewall_cmd_ok(&["--permanent", "--new-policy=guests-out"]);
        lab.firewall_cmd_ok(&[
            "--permanent",
            "--policy=guests-out",
            "--add-ingress-zone=libvirt",
        ]);
        lab.firewall_cmd_ok(&[
            "--permanent",
            "--policy=guests-out",
            "--add-egress-zone=ANY",
        ]);
        lab.firewall_cmd_ok(&["--reload"]);
        let out = lab.run_virtzone(&["uninstall", "--force"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("policy guests-out names zone libvirt"),
            "{what}: {err}"
        );
        assert!(
            permanent_zones(&lab).contains(&"libvirt".to_string()),
            "{what}"
        );

        // A real restart: firewalld comes back RUNNING with the admin's policy and virtzone's zone.
        lab.stop_firewalld();
        lab.start_firewalld();
        assert_eq!(lab.state(), "RUNNING", "{what}");
        let policies = lab.firewall_cmd_ok(&["--get-policies"]);
        assert!(policies.contains("guests-out"), "{what}: {policies}");
        let ingress = lab.firewall_cmd_ok(&["--policy=guests-out", "--list-ingress-zones"]);
        assert_eq!(ingress.trim(), "libvirt", "{what}");

        // Once the admin's policy no longer names it, the zone goes, and firewalld still starts.
        lab.firewall_cmd_ok(&["--permanent", "--delete-policy=guests-out"]);
        let out = ok(&lab.run_virtzone(&["uninstall"]));
        assert_eq!(out.matches(": removed").count(), 5, "{what}: {out}");
        lab.stop_firewalld();
        lab.start_firewalld();
        assert_eq!(lab.state(), "RUNNING", "{what}");
    }
}
