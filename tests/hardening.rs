//! The security review's findings (issue 15), each reproduced against the real daemon, a real firewalld
//! and a private bus: unprivileged floods, planted state, a vanishing bus, a hung firewalld.
//!
//! A hung or slow firewalld is the lab's real firewalld stopped with SIGSTOP: it keeps its bus name and
//! its queued calls, and answers them all once continued.

use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{policy, wait_until, Daemon, NAME, PATH};
use common::{ok, run_with_input, text, Lab, LabConfig};

fn lab() -> Lab {
    let lab = Lab::start(LabConfig {
        bus_policies: vec![policy()],
        ..LabConfig::default()
    });
    ok(&lab.run_virtzone(&["install"]));
    lab
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Continues a stopped firewalld on drop, so a failing test does not leave it stopped for the lab's
/// own teardown.
struct Stopped(u32);

impl Stopped {
    fn firewalld(lab: &Lab) -> Stopped {
        let pid = lab.firewalld_pid().expect("firewalld runs");
        signal(pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

fn busctl_as_nobody(lab: &Lab, args: &[&str]) -> Command {
    let mut cmd = lab.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "busctl",
        &format!("--address={}", lab.bus_address),
        "--timeout=60",
        "call",
        NAME,
        PATH,
        NAME,
    ])
    .args(args)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_read_flood_from_nobody_cannot_starve_attach_or_reconcile() {
    let lab = lab();
    let daemon = Daemon::start(&lab);
    ok(&lab
        .busctl()
        .args(["call", NAME, PATH, NAME, "Attach", "ss", "vzbr0", "libvirt"])
        .output()
        .unwrap());
    let fds_before = open_fds(daemon.pid());

    // firewalld hangs; nobody floods every read method; root attaches meanwhile.
    let stopped = Stopped::firewalld(&lab);
    let xml = "<network><name>n</name><bridge name='virbr9'/></network>";
    let mut flood: Vec<Child> = Vec::new();
    for i in 0..300 {
        let args: &[&str] = match i % 3 {
            0 => &["Status"],
            1 => &["List"],
            _ => &["Check", "s", xml],
        };
        flood.push(busctl_as_nobody(&lab, args).spawn().unwrap());
    }
    let attach = lab
        .busctl()
        .args([
            "--timeout=120",
            "call",
            NAME,
            PATH,
            NAME,
            "Attach",
            "ss",
            "vzbr1",
            "libvirt",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let outputs: Vec<Output> = flood
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let busy = outputs
        .iter()
        .filter(|o| text(&o.stderr).contains("read calls are already being served"))
        .count();
    let timed_out = outputs
        .iter()
        .filter(|o| text(&o.stderr).contains("did not answer within"))
        .count();
    assert!(
        busy >= 290 && busy + timed_out == 300,
        "{busy} refused as busy, {timed_out} timed out; one of the others: {:?}",
        outputs
            .iter()
            .find(|o| {
                let e = text(&o.stderr);
                !e.contains("already being served") && !e.contains("did not answer")
            })
            .map(|o| text(&o.stderr))
    );
    // No connection per call: the daemon holds as many descriptors as before the flood.
    let fds = open_fds(daemon.pid());
    assert!(
        fds <= fds_before + 2,
        "{fds_before} descriptors before, {fds} after"
    );
    // And root can still connect to the bus.
    ok(&lab.busctl().arg("list").output().unwrap());

    // firewalld answers again: root's attach, queued all along, succeeds.
    drop(stopped);
    let out = attach.wait_with_output().unwrap();
    assert!(out.status.success(), "Attach failed: {}", text(&out.stderr));
    let want = |lab: &Lab| {
        let z = lab.interface_zones();
        z.get("vzbr0").map(String::as_str) == Some("libvirt")
            && z.get("vzbr1").map(String::as_str) == Some("libvirt")
    };
    assert!(want(&lab), "{:?}", lab.interface_zones());

    // A reload during another flood: the reconcile still puts both bindings back.
    let flood: Vec<Child> = (0..200)
        .map(|_| {
            busctl_as_nobody(&lab, &["Check", "s", xml])
                .spawn()
                .unwrap()
        })
        .collect();
    lab.firewall_cmd_ok(&["--reload"]);
    wait_until(&lab, "both bindings are back after the reload", || {
        want(&lab)
    });
    for c in flood {
        let out = c.wait_with_output().unwrap();
        let e = text(&out.stderr);
        assert!(
            out.status.success() || e.contains("already being served"),
            "an unexpected read failure: {e}"
        );
    }
}

#[test]
fn the_daemon_exits_with_an_error_when_the_bus_goes_away() {
    let mut lab = lab();
    let mut daemon = Daemon::start(&lab);
    wait_until(&lab, "the first reconcile is done", || {
        fs::read_to_string(lab.dir().join("daemon.log")).is_ok_and(|l| l.contains("reconcile 1"))
    });
    lab.kill_bus();
    let code = daemon.wait_exit(Duration::from_secs(30));
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit status {code:?}: a clean exit would keep systemd from restarting it"
    );
    let log = fs::read_to_string(lab.dir().join("daemon.log")).unwrap();
    assert!(
        !log.contains("firewalld reloaded"),
        "a lost bus is not a reload:\n{log}"
    );
    assert!(log.contains("connection"), "{log}");
}

#[test]
fn nobody_can_take_over_the_name() {
    let lab = lab();
    let mut daemon = Daemon::start(&lab);
    let owner = || {
        let out = lab
            .busctl()
            .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus", "GetNameOwner", "s", NAME])
            .output()
            .unwrap();
        ok(&out)
    };
    let before = owner();
    // A second root process asks for the name with REPLACE_EXISTING (flag 2) | DO_NOT_QUEUE (4).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(async {
        let conn = zbus::connection::Builder::address(lab.bus_address.as_str())
            .build()
            .await
            .unwrap();
        let reply = conn
            .request_name_with_flags(
                NAME,
                zbus::fdo::RequestNameFlags::REPLACE_EXISTING
                    | zbus::fdo::RequestNameFlags::DO_NOT_QUEUE,
            )
            .await;
        format!("{reply:?}")
    });
    assert!(
        reply.contains("NameTaken") || reply.contains("Exists"),
        "{reply}"
    );
    assert_eq!(owner(), before);
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
}

#[test]
fn sigterm_stops_the_daemon_in_the_middle_of_a_reconcile() {
    let lab = lab();
    ok(&lab.run_virtzone(&["attach", "vzbr0"]));
    let stopped = Stopped::firewalld(&lab);
    // The first reconcile now waits for firewalld's answers.
    let mut daemon = Daemon::start(&lab);
    signal(daemon.pid(), "TERM");
    let code = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "a requested stop is a clean exit");
    drop(stopped);
}

#[test]
fn a_reconcile_waits_for_a_detach_holding_the_state_lock() {
    let lab = lab();
    ok(&lab.run_virtzone(&["attach", "vzbr0"]));
    let _daemon = Daemon::start(&lab);
    let count = || {
        let out = lab
            .busctl()
            .args([
                "--json=short",
                "get-property",
                NAME,
                PATH,
                NAME,
                "ReconcileCount",
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["data"].as_u64())
            .unwrap_or(0)
    };
    wait_until(&lab, "the first reconcile is done", || count() >= 1);
    let before = count();
    // This test plays a detach: it holds the lock while firewalld loses the binding (a reload) and
    // the record forgets it.
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(lab.state_dir().join("lock"))
        .unwrap();
    lock.lock().unwrap();
    lab.firewall_cmd_ok(&["--reload"]);
    wait_until(&lab, "the daemon saw the reload", || {
        fs::read_to_string(lab.dir().join("daemon.log"))
            .is_ok_and(|l| l.contains("firewalld reloaded"))
    });
    fs::write(
        lab.state_dir().join("bindings.json"),
        "{\"bindings\": {}}\n",
    )
    .unwrap();
    lock.unlock().unwrap();
    wait_until(&lab, "the reconcile after the reload is done", || {
        count() > before
    });
    assert_eq!(
        lab.interface_zones().get("vzbr0"),
        None,
        "a reconcile re-bound a bridge that was being detached"
    );
}

/// A directory another user controls, with the symlinks the review planted.
fn hostile_state_dir(base: &Path) -> (PathBuf, PathBuf) {
    let victim = base.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let dir = base.join("theirs");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("lock")).unwrap();
    for pid in 1..64 {
        let _ = std::os::unix::fs::symlink(&victim, dir.join(format!(".bindings.json.{pid}.tmp")));
    }
    fs::write(
        dir.join("bindings.json"),
        "{\"bindings\": {\"eth0\": {\"zone\": \"trusted\"}}}\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    (dir, victim)
}

#[test]
fn a_state_directory_others_control_is_refused_with_nothing_changed() {
    let lab = lab();
    let (theirs, victim) = hostile_state_dir(lab.dir());
    let open = lab.dir().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    for dir in [&theirs, &open] {
        let d = dir.to_str().unwrap();
        for args in [
            vec!["attach", "vzbr0", "--state-dir", d],
            vec!["detach", "vzbr0", "--state-dir", d],
            vec!["list", "--state-dir", d],
            vec!["serve", "--state-dir", d],
        ] {
            let out = lab.run_virtzone(&args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            let err = text(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("refusing state directory"), "{err}");
        }
        // The environment variable is held to the same rule.
        let out = lab
            .virtzone()
            .env("VIRTZONE_STATE_DIR", dir)
            .args(["attach", "vzbr0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        lab.interface_zones().is_empty(),
        "{:?}",
        lab.interface_zones()
    );
    assert_eq!(fs::metadata(&theirs).unwrap().uid(), 65534);
}

/// What virtzone can judge alone is judged before firewalld is asked: the planted state directory is
/// refused (exit 2) the same way while firewalld hangs and while it is gone.
#[test]
fn a_bad_state_directory_is_refused_before_firewalld_is_asked() {
    let mut lab = lab();
    let (theirs, _) = hostile_state_dir(lab.dir());
    let d = theirs.to_str().unwrap();
    let refused = |lab: &Lab, when: &str| {
        for args in [
            ["attach", "vzbr0", "--state-dir", d],
            ["detach", "vzbr0", "--state-dir", d],
        ] {
            let start = Instant::now();
            let out = lab.run_virtzone(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{when}: {args:?}: {err}");
            assert!(err.contains("refusing state directory"), "{when}: {err}");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{when}: {args:?}"
            );
        }
    };
    {
        let _stopped = Stopped::firewalld(&lab);
        refused(&lab, "firewalld hangs");
    }
    lab.stop_firewalld();
    refused(&lab, "firewalld is gone");
}

#[test]
fn state_is_private_whoever_creates_it() {
    let lab = lab();
    let state = lab.dir().join("fresh/state");
    // The CLI under a permissive umask.
    let out = lab
        .command("sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(common::virtzone_binary())
        .args(["attach", "vzbr0", "--state-dir", state.to_str().unwrap()])
        .env("VIRTZONE_CONFIG", lab.dir().join("none.conf"))
        .output()
        .unwrap();
    ok(&out);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("bindings.json")), 0o600);
    assert_eq!(mode(&state.join("lock")), 0o600);
    let names: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

const NAT: &str = "<hookData><network><name>default</name><forward mode='nat'/><bridge name='virbr0'/></network></hookData>";

fn hook(lab: &Lab, env: &[(&str, &Path)], op: &str, subop: &str, data: &str) -> (Output, Duration) {
    let mut cmd = lab.virtzone();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["hook", "network", "default", op, subop, "-"]);
    let start = Instant::now();
    let out = run_with_input(&mut cmd, data);
    (out, start.elapsed())
}

#[test]
fn the_hook_gives_up_within_its_budget_when_firewalld_hangs() {
    let lab = lab();
    let config = lab.dir().join("hook.conf");
    fs::write(&config, "HookTimeout=2\n").unwrap();
    let _stopped = Stopped::firewalld(&lab);
    for (op, subop) in [("start", "begin"), ("started", "begin")] {
        let (out, took) = hook(&lab, &[("VIRTZONE_CONFIG", &config)], op, subop, NAT);
        assert_eq!(out.status.code(), Some(1), "{op}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr).trim(),
            "virtzone: firewalld did not answer within 2 s, so virtzone cannot prepare network default's bridge; \
             check that firewalld runs (systemctl status firewalld) and try again"
        );
        assert!(took < Duration::from_secs(10), "{op} took {took:?}");
    }
}

#[test]
fn the_hook_stands_aside_for_what_is_not_about_guest_networking() {
    let lab = lab();
    // A later libvirt's forward mode, and a zone name firewalld accepts but virtzone does not.
    for (data, warning) in [
        (
            "<hookData><network><name>default</name><forward mode='warp'/><bridge name='virbr0'/></network></hookData>",
            "forward mode \"warp\"",
        ),
        (
            "<hookData><network><name>default</name><bridge name='virbr0' zone='zoné'/></network></hookData>",
            "zone",
        ),
    ] {
        for (op, subop) in [("start", "begin"), ("started", "begin"), ("stopped", "end")] {
            let (out, _) = hook(&lab, &[], op, subop, data);
            assert_eq!(out.status.code(), Some(0), "{op} {data}: {}", text(&out.stderr));
            let err = text(&out.stderr);
            assert!(
                err.contains("warning") && err.contains(warning) && err.contains("leaving network \"default\" to libvirt"),
                "{err}"
            );
        }
    }
    // A corrupt state file: the network still gets its zone, the problem is said.
    fs::create_dir_all(lab.state_dir()).unwrap();
    fs::write(lab.state_dir().join("bindings.json"), "{corrupt").unwrap();
    let (out, _) = hook(&lab, &[], "started", "begin", NAT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is corrupt"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        lab.interface_zones().get("virbr0").map(String::as_str),
        Some("libvirt")
    );
    let (out, _) = hook(&lab, &[], "stopped", "end", NAT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn one_state_directory_setting_for_hook_cli_and_daemon() {
    let lab = lab();
    let state = lab.dir().join("configured");
    let config = lab.dir().join("virtzone.conf");
    fs::write(
        &config,
        format!("# virtzone\nStateDirectory={}\n", state.display()),
    )
    .unwrap();
    // libvirt clears the hook's environment: only the configuration file can tell it.
    let mut cmd = lab.command(common::virtzone_binary());
    cmd.env("VIRTZONE_CONFIG", &config)
        .args(["hook", "network", "default", "started", "begin", "-"]);
    ok(&run_with_input(&mut cmd, NAT));
    assert!(state.join("bindings.json").exists());
    let list = lab
        .command(common::virtzone_binary())
        .env("VIRTZONE_CONFIG", &config)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(ok(&list).contains("virbr0"), "{}", text(&list.stdout));
    // The daemon, started without --state-dir or VIRTZONE_STATE_DIR, serves the same record.
    let log = fs::File::create(lab.dir().join("daemon.log")).unwrap();
    let mut daemon = Daemon {
        child: lab
            .command(common::virtzone_binary())
            .env("VIRTZONE_CONFIG", &config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    };
    wait_until(&lab, "the daemon owns its name", || {
        lab.name_has_owner(NAME)
    });
    let out = lab
        .busctl()
        .args(["call", NAME, PATH, NAME, "List"])
        .output()
        .unwrap();
    assert!(
        ok(&out).contains("\"virbr0\" \"libvirt\""),
        "{}",
        text(&out.stdout)
    );
    signal(daemon.pid(), "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    // A broken configuration is bad input, said in one sentence.
    fs::write(&config, "StateDir=/x\n").unwrap();
    let out = lab
        .command(common::virtzone_binary())
        .env("VIRTZONE_CONFIG", &config)
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown setting \"StateDir\""),
        "{}",
        text(&out.stderr)
    );
}

/// `install` without a running firewalld writes into /etc/firewalld: here a tmpfs over it in a private
/// mount namespace, so the host's is never touched.
fn offline_install(lab: &Lab, fake_tool: Option<&str>) -> (Output, Vec<String>) {
    let bin = lab.dir().join("fakebin");
    fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("firewall-offline-cmd");
    let _ = fs::remove_file(&tool);
    if let Some(body) = fake_tool {
        fs::write(&tool, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = format!(
        "mount -t tmpfs tmpfs /etc/firewalld && PATH={bin} {vz} install; rc=$?; \
         find /etc/firewalld -type f | sort; exit $rc",
        bin = bin.display(),
        vz = common::virtzone_binary().display()
    );
    let out = lab
        .command("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &script,
        ])
        .env("VIRTZONE_STATE_DIR", lab.state_dir())
        .env("VIRTZONE_CONFIG", lab.dir().join("none.conf"))
        .output()
        .unwrap();
    let files = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("/etc/firewalld/"))
        .map(String::from)
        .collect();
    (out, files)
}

#[test]
fn offline_install_never_skips_its_version_check_silently() {
    let lab = Lab::start(LabConfig {
        firewalld: false,
        ..LabConfig::default()
    });
    // A firewall-offline-cmd that cannot say its version: refused, nothing written.
    let (out, files) = offline_install(&lab, Some("echo 'Traceback'; exit 1"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing was written"),
        "{}",
        text(&out.stderr)
    );
    assert!(files.is_empty(), "{files:?}");
    // One too old for the zones: refused as before.
    let (out, files) = offline_install(&lab, Some("echo 0.6.4"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(files.is_empty(), "{files:?}");
    // None at all (firewalld not installed): written, and the skipped check is said.
    let (out, files) = offline_install(&lab, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the version check is skipped"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        files.iter().any(|f| f.ends_with("zones/libvirt.xml")),
        "{files:?}"
    );
}

/// A firewalld that keeps its bus name but answers nothing (stopped with SIGSTOP) is said to be
/// exactly that within the command budget (`CommandTimeout=`), not "refused the change", and the
/// forward is neither recorded nor, once firewalld answers again, present in firewalld.
#[test]
fn forward_add_says_firewalld_did_not_answer_and_changes_nothing() {
    let lab = lab();
    let data = "<hookData><network><name>hung</name><forward mode='nat'/><bridge name='virbr77'/>\
                <ip address='192.0.2.1' netmask='255.255.255.0'/></network></hookData>";
    let mut cmd = lab.virtzone();
    cmd.args(["hook", "network", "hung", "started", "begin", "-"]);
    ok(&run_with_input(&mut cmd, data));
    let config = lab.dir().join("command.conf");
    fs::write(&config, "CommandTimeout=3\n").unwrap();
    let forwards = lab.state_dir().join("forwards/forwards.json");
    let declared = fs::read(&forwards).ok();
    let zones_before = lab.firewall_cmd_ok(&["--list-all-zones"]);

    let stopped = Stopped::firewalld(&lab);
    let start = Instant::now();
    let out = lab
        .virtzone()
        .env("VIRTZONE_CONFIG", &config)
        .args([
            "forward",
            "add",
            "--network",
            "hung",
            "--guest",
            "192.0.2.10",
        ])
        .arg("tcp/8080:80")
        .output()
        .unwrap();
    let took = start.elapsed();
    drop(stopped);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("virtzone: cannot read firewalld's state: firewalld did not answer")
            && err.contains("within 3 s"),
        "{err}"
    );
    assert!(!err.contains("refused"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // firewalld, continued, answers the queued reads; nothing was asked of it beyond them.
    assert_eq!(fs::read(&forwards).ok(), declared);
    assert_eq!(lab.firewall_cmd_ok(&["--list-all-zones"]), zones_before);
    let policies = lab.firewall_cmd(&["--list-all-policies"]);
    assert!(
        !text(&policies.stdout).contains("8080"),
        "{}",
        text(&policies.stdout)
    );
    assert!(!ok(&lab.run_virtzone(&["forward", "list"])).contains("8080"));
}
