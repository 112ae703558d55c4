//! Proves the integration-test lab (tests/common) works: real firewalld 0.9.3, 1.3.3, 2.3.1 and 2.5.2 on
//! both backends, isolated in their own namespace and bus. Needs root; the other releases must be
//! unpacked first (`scripts/fetch-firewalld.sh`). Run with `cargo nextest run -E "test(lab_smoke::)"`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{is_libvirt_zone_or_policy, Backend, Lab, LabConfig, Release, FIREWALLD_NAME};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    stdout(&out)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn host_has_firewalld_table() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", "firewalld"])
        .output()
        .unwrap()
        .status
        .success()
}

/// Everything a plain lab must show, for one release and backend.
fn lab_comes_up(release: Release, backend: Backend) {
    let lab = Lab::start(LabConfig::new(release, backend));
    let ctx = format!("{release:?}/{}", backend.as_str());

    assert_eq!(lab.version(), release.version(), "{ctx}");
    assert_eq!(lab.state(), "RUNNING", "{ctx}");
    assert_eq!(lab.firewall_backend(), backend.as_str(), "{ctx}");

    let out = lab.firewall_cmd(&["--get-zones"]);
    assert!(
        out.status.success(),
        "{ctx}: firewall-cmd --get-zones: {out:?}"
    );
    let zones: Vec<String> = stdout(&out).split_whitespace().map(String::from).collect();
    assert!(
        zones.iter().any(|z| z == "public"),
        "{ctx}: zones {zones:?}"
    );
    assert!(
        !zones.iter().any(|z| z.starts_with("libvirt")),
        "{ctx}: zones {zones:?}"
    );

    let out = lab.firewall_cmd(&["--version"]);
    assert_eq!(
        stdout(&out).trim(),
        release.version(),
        "{ctx}: firewall-cmd is the lab's release"
    );

    let table = lab
        .command("nft")
        .args(["list", "table", "inet", "firewalld"])
        .output()
        .unwrap();
    match backend {
        Backend::Nftables => assert!(table.status.success(), "{ctx}: {table:?}"),
        Backend::Iptables => {
            assert!(
                !table.status.success(),
                "{ctx}: iptables backend made an nft table"
            );
            let rules = lab.command("iptables").args(["-S"]).output().unwrap();
            assert!(
                stdout(&rules).contains("-N IN_public"),
                "{ctx}: {}",
                stdout(&rules)
            );
        }
    }
    assert!(
        !host_has_firewalld_table(),
        "{ctx}: the host namespace got firewalld's table"
    );
}

crate::lab_matrix! {
    lab_comes_up:
        _0_9_3_nftables, _0_9_3_iptables, _1_3_3_nftables, _1_3_3_iptables, _2_3_1_nftables,
        _2_3_1_iptables, _2_5_2_nftables, _2_5_2_iptables;
}

#[test]
fn all_cells_cover_every_release_and_backend() {
    let all: Vec<_> = common::all_cells()
        .into_iter()
        .map(|c| (c.release.version(), c.backend))
        .collect();
    assert_eq!(all.len(), 8);
    for v in ["0.9.3", "1.3.3", "2.3.1", "2.5.2"] {
        for b in [Backend::Nftables, Backend::Iptables] {
            assert!(all.contains(&(v, b)), "{v} {b:?} missing from {all:?}");
        }
    }
}

/// `lab_matrix!`'s cell names and arguments are the lab's cells: `_1_3_3_nftables` is firewalld
/// 1.3.3 with nftables, in the order of [`common::all_cells`].
#[test]
fn lab_matrix_cells_are_the_labs_cells() {
    let named: Vec<(String, Release, Backend)> = common::all_cells()
        .into_iter()
        .map(|c| {
            let name = format!(
                "_{}_{}",
                c.release.version().replace('.', "_"),
                c.backend.as_str()
            );
            (name, c.release, c.backend)
        })
        .collect();
    let cells = common::matrix::PAIR_CELLS.map(String::from);
    assert_eq!(
        named.iter().map(|n| &n.0).collect::<Vec<_>>(),
        cells.iter().collect::<Vec<_>>()
    );
    let args = [
        crate::lab_matrix!(@args _0_9_3_nftables),
        crate::lab_matrix!(@args _0_9_3_iptables),
        crate::lab_matrix!(@args _1_3_3_nftables),
        crate::lab_matrix!(@args _1_3_3_iptables),
        crate::lab_matrix!(@args _2_3_1_nftables),
        crate::lab_matrix!(@args _2_3_1_iptables),
        crate::lab_matrix!(@args _2_5_2_nftables),
        crate::lab_matrix!(@args _2_5_2_iptables),
    ];
    let pairs: Vec<_> = named.iter().map(|n| (n.1, n.2)).collect();
    assert_eq!(args.to_vec(), pairs);
    let releases = [
        crate::lab_matrix!(@args _0_9_3).0,
        crate::lab_matrix!(@args _1_3_3).0,
        crate::lab_matrix!(@args _2_3_1).0,
        crate::lab_matrix!(@args _2_5_2).0,
    ];
    assert_eq!(releases, Release::ALL);
    let names: Vec<String> = Release::ALL
        .iter()
        .map(|r| format!("_{}", r.version().replace('.', "_")))
        .collect();
    assert_eq!(names, common::matrix::RELEASE_CELLS.map(String::from));
}

#[test]
fn reported_version_debian12() {
    let lab = Lab::start(LabConfig {
        reported_version: Some("0.6.4".into()),
        ..LabConfig::default()
    });
    assert_eq!(lab.version(), "0.6.4");
    // Only the number changes: the 1.3.3 API (here the backend property) is all still there.
    assert_eq!(lab.firewall_backend(), "nftables");
    assert_eq!(stdout(&lab.firewall_cmd(&["--version"])).trim(), "0.6.4");
}

#[test]
fn reported_version_debian13() {
    let lab = Lab::start(LabConfig {
        release: Release::Debian13,
        backend: Backend::Iptables,
        reported_version: Some("2.4.0".into()),
        ..LabConfig::default()
    });
    assert_eq!(lab.version(), "2.4.0");
    assert_eq!(lab.firewall_backend(), "iptables");
}

#[test]
fn no_firewalld_then_firewalld_appears() {
    let mut lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    assert!(!lab.name_has_owner(FIREWALLD_NAME));
    assert!(
        lab.name_has_owner("org.freedesktop.DBus"),
        "the bus itself answers"
    );
    let out = lab.firewall_cmd(&["--state"]);
    assert!(
        !out.status.success(),
        "firewall-cmd --state without firewalld: {out:?}"
    );

    lab.start_firewalld();
    assert!(lab.name_has_owner(FIREWALLD_NAME));
    assert_eq!(lab.version(), "1.3.3");
}

#[test]
fn broken_zone_file_fails_debian12() {
    let lab = Lab::start(LabConfig {
        files: vec![("zones/broken.xml".into(), "garbage <<<".into())],
        expect_state: "FAILED",
        ..LabConfig::default()
    });
    lab.allow_firewalld_errors(
        "the test writes a broken zone file so that firewalld fails to load",
    );
    assert_eq!(lab.state(), "FAILED");
    assert!(
        lab.firewalld_log().contains("INVALID_ZONE"),
        "{}",
        lab.firewalld_log()
    );
}

#[test]
fn broken_zone_file_fails_debian13() {
    let lab = Lab::start(LabConfig {
        release: Release::Debian13,
        files: vec![("zones/broken.xml".into(), "garbage <<<".into())],
        expect_state: "FAILED",
        ..LabConfig::default()
    });
    lab.allow_firewalld_errors(
        "the test writes a broken zone file so that firewalld fails to load",
    );
    assert_eq!(lab.state(), "FAILED");
}

/// The lab fails a test whose firewalld logged an ERROR (here: asking for a zone that does not exist,
/// what virtzone must never do), and says which lines.
#[test]
fn an_error_in_firewalds_log_fails_the_test() {
    let failed = std::panic::catch_unwind(|| {
        let lab = Lab::start(LabConfig::default());
        let out = lab.firewall_cmd(&["--info-zone=nosuch"]);
        assert!(!out.status.success());
    });
    let message = failed.expect_err("the lab did not fail on firewalld's ERROR line");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("firewalld logged ERROR lines") && text.contains("INVALID_ZONE: nosuch"),
        "{text}"
    );
}

#[test]
fn stop_start_cycle() {
    let mut lab = Lab::start(LabConfig::default());
    let first = lab.firewalld_pid().unwrap();

    lab.stop_firewalld();
    assert!(!lab.name_has_owner(FIREWALLD_NAME));
    assert!(lab.firewalld_pid().is_none());
    // CleanupOnExit=yes: the rules go with the daemon.
    let table = lab
        .command("nft")
        .args(["list", "table", "inet", "firewalld"])
        .output()
        .unwrap();
    assert!(!table.status.success(), "rules left after stop: {table:?}");

    lab.start_firewalld();
    assert_ne!(lab.firewalld_pid().unwrap(), first);
    assert_eq!(lab.version(), "1.3.3");
    let table = lab
        .command("nft")
        .args(["list", "table", "inet", "firewalld"])
        .output()
        .unwrap();
    assert!(table.status.success(), "{table:?}");

    // A reload goes through INIT and back.
    let out = lab.firewall_cmd(&["--reload"]);
    assert!(out.status.success(), "{out:?}");
    lab.wait_for_state("RUNNING", Duration::from_secs(30));
}

#[test]
fn drop_removes_netns_and_dir() {
    let lab = Lab::start(LabConfig::default());
    let (netns, dir) = (lab.netns.clone(), lab.dir().to_path_buf());
    assert!(netns_exists(&netns));
    drop(lab);
    assert!(!netns_exists(&netns), "{netns} still listed");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn drop_cleans_up_after_a_panicking_test() {
    let mut names: Option<(String, PathBuf)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::start(LabConfig::default());
        names = Some((lab.netns.clone(), lab.dir().to_path_buf()));
        panic!("test failure with a live lab");
    }));
    assert!(result.is_err());
    let (netns, dir) = names.unwrap();
    assert!(!netns_exists(&netns), "{netns} still listed");
    assert!(!dir.exists());
}

#[test]
fn stale_labs_of_dead_processes_are_removed() {
    // A pid that is certainly dead: a child we started and reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("vzlab-{dead}-0");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());
    let stale_dir = std::env::temp_dir().join(format!("{stale}-leftover"));
    std::fs::create_dir_all(&stale_dir).unwrap();

    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    assert!(!netns_exists(&stale), "stale {stale} survived");
    assert!(!stale_dir.exists(), "stale dir survived");
    assert!(netns_exists(&lab.netns), "own lab removed");
}

#[test]
fn parallel_labs_are_isolated() {
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = [Backend::Nftables, Backend::Iptables]
            .into_iter()
            .map(|backend| s.spawn(move || Lab::start(LabConfig::new(Release::Debian12, backend))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(labs[0].netns, labs[1].netns);
    assert_ne!(labs[0].bus_address, labs[1].bus_address);
    assert_eq!(labs[0].firewall_backend(), "nftables");
    assert_eq!(labs[1].firewall_backend(), "iptables");
    // Runtime changes in one lab do not show in the other.
    let out = labs[0].firewall_cmd(&["--zone=public", "--add-service=http"]);
    assert!(out.status.success(), "{out:?}");
    let other = stdout(&labs[1].firewall_cmd(&["--zone=public", "--list-services"]));
    assert!(!other.contains("http"), "{other}");
}

#[test]
fn commands_run_in_the_lab() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    let out = lab
        .command("ip")
        .args(["netns", "identify"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), lab.netns);
    let out = lab
        .command("sh")
        .args(["-c", "echo \"$DBUS_SYSTEM_BUS_ADDRESS\""])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), lab.bus_address);
    let out = lab.virtzone().arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn default_config_is_stock_without_libvirt() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    assert!(lab.default_config_dir.join("zones/public.xml").is_file());
    assert!(
        lab.default_config_dir
            .join("services/libvirt.xml")
            .is_file(),
        "firewalld's own"
    );
    for tier in ["zones", "policies"] {
        for entry in std::fs::read_dir(lab.default_config_dir.join(tier)).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with("libvirt"),
                "{tier}/{name:?}"
            );
        }
    }
    assert!(is_libvirt_zone_or_policy(Path::new("zones/libvirt.xml")));
    assert!(is_libvirt_zone_or_policy(Path::new(
        "zones/libvirt-routed.xml"
    )));
    assert!(is_libvirt_zone_or_policy(Path::new(
        "policies/libvirt-to-host.xml"
    )));
    assert!(!is_libvirt_zone_or_policy(Path::new(
        "services/libvirt.xml"
    )));
    assert!(!is_libvirt_zone_or_policy(Path::new("zones/public.xml")));
}

#[test]
fn offline_check_config_uses_the_lab_dirs() {
    for release in [Release::Debian12, Release::Debian13] {
        let lab = Lab::start(LabConfig {
            release,
            firewalld: false,
            ..LabConfig::default()
        });
        let out = lab.firewall_offline_cmd(&["--check-config"]);
        assert!(out.status.success(), "{release:?}: {out:?}");
        let zones = lab.config_dir.join("zones");
        std::fs::create_dir_all(&zones).unwrap();
        std::fs::write(zones.join("broken.xml"), "garbage <<<").unwrap();
        let out = lab.firewall_offline_cmd(&["--check-config"]);
        assert!(!out.status.success(), "{release:?}: {out:?}");
    }
}

#[test]
#[should_panic(expected = "INVALID_ZONE")]
fn unexpected_state_panics_with_the_log() {
    // Expecting RUNNING from a broken config fails at once, and the message carries the log.
    Lab::start(LabConfig {
        files: vec![("zones/broken.xml".into(), "garbage <<<".into())],
        ..LabConfig::default()
    });
}
