//! `virtzone serve` against real firewalld on a private bus carrying the project's own bus policy.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::thread;
use std::time::Duration;

use common::daemon::{policy, wait_until, Daemon, NAME, PATH};
use common::{ok, text, Backend, Lab, LabConfig, Release};
use serde_json::Value;

fn lab(cfg: LabConfig) -> Lab {
    let mut files = Vec::new();
    for (name, xml) in virtzone::zone::SHIPPED_ZONES {
        files.push((format!("zones/{name}.xml").into(), xml.to_string()));
    }
    for (name, xml) in virtzone::zone::SHIPPED_POLICIES {
        files.push((format!("policies/{name}.xml").into(), xml.to_string()));
    }
    Lab::start(LabConfig {
        bus_policies: vec![policy()],
        files,
        ..cfg
    })
}

/// A property of the daemon, as JSON (`null` when it cannot be read).
fn property(lab: &Lab, name: &str) -> Value {
    let out = lab
        .busctl()
        .args(["--json=short", "get-property", NAME, PATH, NAME, name])
        .output()
        .unwrap();
    if !out.status.success() {
        return Value::Null;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .map(|v| v["data"].clone())
        .unwrap_or(Value::Null)
}

fn reconcile_count(lab: &Lab) -> u64 {
    property(lab, "ReconcileCount").as_u64().unwrap_or(0)
}

fn busctl_call(lab: &Lab, args: &[&str]) -> Output {
    lab.busctl()
        .args(["call", NAME, PATH, NAME])
        .args(args)
        .output()
        .unwrap()
}

fn bridges(n: usize, zone: &str) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("vzbr{i}"), zone.to_string()))
        .collect()
}

/// Attaches through the daemon with N concurrent D-Bus calls.
fn attach_all(lab: &Lab, want: &BTreeMap<String, String>) {
    let children: Vec<Child> = want
        .iter()
        .map(|(b, z)| {
            // busctl's own 25 s default is about the machine, not the daemon: fifty attaches in
            // four labs at once queue behind one state lock each, and a loaded CI machine takes
            // longer than that. Waiting longer asserts the same thing: every call succeeds.
            lab.busctl()
                .args([
                    "--timeout=120",
                    "call",
                    NAME,
                    PATH,
                    NAME,
                    "Attach",
                    "ss",
                    b,
                    z,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(&c.wait_with_output().unwrap());
    }
}

fn wait_for_bindings(lab: &Lab, want: &BTreeMap<String, String>, what: &str) {
    wait_until(lab, what, || lab.interface_zones() == *want);
}

#[test]
fn bindings_come_back_after_reloads_and_restarts() {
    // Every cell of the lab matrix (each release × backend), four labs at a time: they share
    // nothing, and most of the time goes to waiting for firewalld.
    let cells = common::all_cells();
    for wave in cells.chunks(4) {
        thread::scope(|s| {
            let handles: Vec<_> = wave
                .iter()
                .cloned()
                .map(|cfg| s.spawn(move || survive_reloads_and_restarts(cfg)))
                .collect();
            for h in handles {
                h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            }
        });
    }
}

fn survive_reloads_and_restarts(cfg: LabConfig) {
    let (release, backend) = (cfg.release, cfg.backend);
    let mut lab = lab(cfg);
    let _daemon = Daemon::start(&lab);
    wait_until(&lab, "the first reconcile", || reconcile_count(&lab) >= 1);
    assert_eq!(property(&lab, "FirewalldVersion"), release.version());
    assert_eq!(property(&lab, "FirewalldBackend"), backend.as_str());
    let want = bridges(50, "libvirt");
    attach_all(&lab, &want);
    assert_eq!(lab.interface_zones(), want);

    for how in ["--reload", "--complete-reload"] {
        let before = reconcile_count(&lab);
        let out = lab.firewall_cmd(&[how]);
        assert!(
            out.status.success(),
            "{release:?}/{backend:?}: {}",
            text(&out.stderr)
        );
        wait_for_bindings(&lab, &want, &format!("bindings are back after {how}"));
        assert!(
            reconcile_count(&lab) > before,
            "{how}: no reconcile counted"
        );
    }
    let restarts = if release == Release::Debian12 && backend == Backend::Nftables {
        10
    } else {
        2
    };
    for i in 0..restarts {
        lab.stop_firewalld();
        assert!(lab.interface_zones().is_empty());
        lab.start_firewalld();
        wait_for_bindings(&lab, &want, &format!("bindings are back after restart {i}"));
    }
}

#[test]
fn drift_is_left_alone() {
    let lab = lab(LabConfig::default());
    let _daemon = Daemon::start(&lab);
    attach_all(&lab, &bridges(2, "libvirt"));
    assert!(lab
        .firewall_cmd(&["--zone=public", "--change-interface=vzbr1"])
        .status
        .success());
    // A reload would drop the admin's move too, so let a restarted daemon's start-up reconcile see it.
    drop(_daemon);
    let _daemon = Daemon::start(&lab);
    wait_until(&lab, "the start-up reconcile", || {
        reconcile_count(&lab) >= 1
    });
    assert_eq!(
        lab.interface_zones().get("vzbr1").map(String::as_str),
        Some("public")
    );
    let log = std::fs::read_to_string(lab.dir().join("daemon.log")).unwrap();
    assert!(
        log.contains(
            "bridge vzbr1 is in zone public, not libvirt: someone moved it; leaving it there"
        ),
        "{log}"
    );
    let rows = ok(&busctl_call(&lab, &["List"]));
    assert!(
        rows.contains("\"vzbr1\" \"libvirt\" \"public\" \"moved\""),
        "{rows}"
    );
}

#[test]
fn daemon_started_before_firewalld_applies_when_it_appears() {
    let mut lab = lab(LabConfig::default());
    {
        let _daemon = Daemon::start(&lab);
        attach_all(&lab, &bridges(20, "libvirt-routed"));
    }
    lab.stop_firewalld();
    let _daemon = Daemon::start(&lab);
    // No firewalld: nothing to reconcile, and the daemon just waits.
    assert_eq!(reconcile_count(&lab), 0);
    assert_eq!(property(&lab, "FirewalldVersion"), "");
    lab.start_firewalld();
    wait_for_bindings(
        &lab,
        &bridges(20, "libvirt-routed"),
        "bindings applied once firewalld appeared",
    );
    wait_until(&lab, "the reconcile is counted", || {
        reconcile_count(&lab) >= 1
    });
}

#[test]
fn sigkill_loses_nothing() {
    let lab = lab(LabConfig::default());
    let mut daemon = Daemon::start(&lab);
    let want = bridges(30, "libvirt");
    // Kill the daemon in the middle of a burst of 30 concurrent attaches.
    let children: Vec<Child> = want
        .keys()
        .map(|b| {
            lab.virtzone()
                .args(["attach", b])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    daemon.kill9();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let state = std::fs::read(lab.dir().join("state/bindings.json"))
        .unwrap_or_else(|_| b"{\"bindings\":{}}".to_vec());
    let recorded: Value =
        serde_json::from_slice(&state).expect("the state file is intact after kill -9");
    let recorded: BTreeMap<String, String> = recorded["bindings"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(b, x)| (b.clone(), x["zone"].as_str().unwrap().into()))
        .collect();
    // Every attach that said it succeeded is recorded (the rest fell back to direct or failed loudly).
    for (bridge, out) in want.keys().zip(&outs) {
        if out.status.success() {
            assert!(
                recorded.contains_key(bridge),
                "{bridge} reported success but is not recorded"
            );
        } else {
            assert!(!text(&out.stderr).is_empty());
        }
    }
    // A reload with no daemon drops everything; a new daemon brings back all that was recorded.
    assert!(lab.firewall_cmd(&["--reload"]).status.success());
    let _daemon = Daemon::start(&lab);
    wait_for_bindings(&lab, &recorded, "the restarted daemon converged");
    // And the rest can be attached now: nothing was lost or left half-done.
    attach_all(&lab, &want);
    assert_eq!(lab.interface_zones(), want);
}

#[test]
fn concurrent_clients_get_their_last_requests() {
    let lab = lab(LabConfig::default());
    let _daemon = Daemon::start(&lab);
    let address = lab.bus_address.clone();
    // 32 clients at once, each: attach to libvirt, then detach (odd) or move to trusted (even).
    let children: Vec<Child> = (0..32)
        .map(|i| {
            let last = if i % 2 == 1 { format!("Detach s vzbr{i}") } else { format!("Attach ss vzbr{i} trusted") };
            let script = format!(
                "busctl --address={address} call {NAME} {PATH} {NAME} Attach ss vzbr{i} libvirt && busctl --address={address} call {NAME} {PATH} {NAME} {last}"
            );
            lab.command("sh").args(["-c", &script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for c in children {
        ok(&c.wait_with_output().unwrap());
    }
    let want: BTreeMap<String, String> = (0..32)
        .step_by(2)
        .map(|i| (format!("vzbr{i}"), "trusted".to_string()))
        .collect();
    assert_eq!(lab.interface_zones(), want);
    let rows = ok(&busctl_call(&lab, &["List"]));
    assert!(rows.starts_with("a(ssss) 16 "), "{rows}");
    // And they survive a reload.
    assert!(lab.firewall_cmd(&["--reload"]).status.success());
    wait_for_bindings(&lab, &want, "bindings back after the reload");
}

#[test]
fn unprivileged_callers_may_read_but_not_change() {
    let lab = lab(LabConfig::default());
    let _daemon = Daemon::start(&lab);
    let as_nobody = |args: &[&str]| {
        lab.command("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "busctl",
                &format!("--address={}", lab.bus_address),
                "call",
                NAME,
                PATH,
                NAME,
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["Attach", "ss", "virbr0", "libvirt"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Access denied") || text(&out.stderr).contains("AccessDenied"),
        "{}",
        text(&out.stderr)
    );
    let out = as_nobody(&["Detach", "s", "virbr0"]);
    assert!(!out.status.success());
    assert!(lab.interface_zones().is_empty());
    assert!(!lab.dir().join("state/bindings.json").exists());
    // Reads are open.
    ok(&as_nobody(&["List"]));
    let out = as_nobody(&[
        "Check",
        "s",
        "<network><name>default</name><bridge name='virbr0'/></network>",
    ]);
    assert!(
        ok(&out).contains("\"default-zone\" \"libvirt\""),
        "{}",
        text(&out.stdout)
    );
    // The CLI as an unprivileged user says so, with exit 1.
    let out = lab
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::virtzone_binary())
        .args(["attach", "virbr0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        "virtzone: permission denied: only root may change bindings through virtzone's daemon"
    );
}

#[test]
fn bad_arguments_are_named_errors() {
    let lab = lab(LabConfig::default());
    let _daemon = Daemon::start(&lab);
    for (args, error) in [
        (
            vec!["Attach", "ss", "a/b", "libvirt"],
            "org.virtzone.VirtZone1.Error.InvalidArgument",
        ),
        (
            vec!["Attach", "ss", "virbr0", "../x"],
            "org.virtzone.VirtZone1.Error.InvalidArgument",
        ),
        (
            vec!["Attach", "ss", "virbr0", "nosuch"],
            "org.virtzone.VirtZone1.Error.Refused",
        ),
        (
            vec!["Check", "s", "<network>"],
            "org.virtzone.VirtZone1.Error.InvalidArgument",
        ),
    ] {
        let out = lab
            .busctl()
            .args(["--json=short", "call", NAME, PATH, NAME])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let _ = error;
    }
    // Through the CLI, an invalid name is exit 2 before anything is sent; a refusal is exit 1.
    let out = lab
        .virtzone()
        .args(["attach", "virbr0", "--zone", "nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("zone nosuch does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(lab.interface_zones().is_empty());
}

#[test]
fn introspection_matches_the_shipped_xml() {
    let lab = lab(LabConfig::default());
    let _daemon = Daemon::start(&lab);
    let out = ok(&lab
        .busctl()
        .args(["introspect", "--xml-interface", NAME, PATH])
        .output()
        .unwrap());
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.xml"),
    )
    .unwrap();
    // Our interface, without comments and indentation.
    let iface = |xml: &str| -> String {
        let start = xml
            .find("<interface name=\"org.virtzone.VirtZone1\"")
            .expect("our interface");
        let end = xml[start..].find("</interface>").expect("end") + start;
        let mut body = &xml[start..end];
        let mut out = String::new();
        while let Some(open) = body.find("<!--") {
            out.push_str(&body[..open]);
            body = body[open..]
                .find("-->")
                .map_or("", |close| &body[open + close + 3..]);
        }
        out.push_str(body);
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        iface(&out),
        iface(&shipped),
        "dbus/org.virtzone.VirtZone1.xml is out of date"
    );
}

#[test]
fn more_bindings_than_the_bus_allows_pending_replies() {
    // dbus-daemon refuses more than 128 pending replies per connection: a reconcile of 200 bindings must
    // pace its calls, or some would fail with LimitsExceeded and stay unbound.
    let lab = lab(LabConfig::default());
    let _daemon = Daemon::start(&lab);
    let want = bridges(200, "libvirt");
    for chunk in want.keys().collect::<Vec<_>>().chunks(50) {
        let chunk: BTreeMap<String, String> = chunk
            .iter()
            .map(|b| ((*b).clone(), "libvirt".to_string()))
            .collect();
        attach_all(&lab, &chunk);
    }
    assert_eq!(lab.interface_zones(), want);
    let before = reconcile_count(&lab);
    assert!(lab.firewall_cmd(&["--reload"]).status.success());
    wait_until(&lab, "the reconcile after the reload", || {
        reconcile_count(&lab) > before
    });
    assert_eq!(
        lab.interface_zones(),
        want,
        "every binding is back once the reconcile completed"
    );
    let log = std::fs::read_to_string(lab.dir().join("daemon.log")).unwrap();
    assert!(!log.contains("cannot bind"), "{log}");
}
