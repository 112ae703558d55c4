//! The third security review's findings about guests, hooks and state (issue #24: S1, S3, S4, S8,
//! S9, S10, S12), each shown by a test that failed before the fix. The hook and the resolution of
//! domain forwards involve no daemon: these tests run the real `virtzone` binary as libvirt runs
//! its hooks (cleared environment, no bus), against a private state and lease directory
//! ([`common::offline`]); the neighbour-table check runs in a network namespace of its own, and
//! `virsh net-update` runs against the lab's real libvirtd.
//!
//! Needs root (the namespace, the lab) and util-linux's `flock` and `unshare`.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::offline::Offline;
use common::{text, Process};
use serde_json::Value;

const NET: &str = "dfw3";
const BRIDGE: &str = "virbr43";
const MAC: &str = "52:54:00:00:43:01";
const UUID_A: &str = "6d3e4a10-0000-4000-8000-000000004301";
const UUID_B: &str = "6d3e4a10-0000-4000-8000-000000004302";
/// What `forward list` may take; it answers in milliseconds.
const ANSWER: Duration = Duration::from_secs(10);

/// A running domain's XML as libvirt passes it to the qemu hook.
fn domain(name: &str, uuid: &str, mac: &str) -> String {
    format!(
        "<domain type='qemu' id='1'><name>{name}</name><uuid>{uuid}</uuid><devices>\
         <interface type='network'><mac address='{mac}'/><source network='{NET}' \
         bridge='{BRIDGE}'/></interface></devices></domain>"
    )
}

/// The network's hookData, with `hosts` as static DHCP hosts (`mac`, `ip`).
fn network(hosts: &[(&str, &str)]) -> String {
    let hosts: String = hosts
        .iter()
        .map(|(m, i)| format!("<host mac='{m}' ip='{i}'/>"))
        .collect();
    format!(
        "<hookData><network><name>{NET}</name><forward mode='nat'/>\
         <bridge name='{BRIDGE}' stp='off'/><ip address='192.0.2.1' netmask='255.255.255.0'>\
         <dhcp><range start='192.0.2.100' end='192.0.2.199'/>{hosts}</dhcp></ip></network></hookData>"
    )
}

/// The state of a host where network `NET` runs and forward 1 goes to domain `web`.
fn world(config: &str) -> Offline {
    let vz = Offline::new(config);
    vz.write_store(
        "networks.json",
        &format!(
            r#"{{"version":1,"networks":{{"{NET}":{{"bridge":"{BRIDGE}","forward":"nat",
            "subnets":["192.0.2.0/24"],"host":["192.0.2.1"],"active":true}}}}}}"#
        ),
    );
    vz.write_store(
        "forwards.json",
        r#"{"version":2,"next_id":2,"forwards":[],"domain_forwards":[{"id":1,"domain":"web",
        "proto":"tcp","host_port":"8080","guest_port":"80"}],"allows":[]}"#,
    );
    vz
}

/// Runs the qemu hook, which must exit 0 and print nothing on stdout, returning its stderr.
fn hook(vz: &Offline, args: &[&str], xml: &str) -> String {
    let out = vz.hook_qemu(args, xml);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    text(&out.stderr)
}

/// Forward 1's row of `forward list --json`.
fn row(vz: &Offline) -> Value {
    let rows = vz
        .forward_list(ANSWER)
        .unwrap_or_else(|| panic!("forward list did not answer within {ANSWER:?}"));
    rows.as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == 1))
        .cloned()
        .unwrap_or_else(|| panic!("no forward 1 in {rows}"))
}

/// dnsmasq's status file for `BRIDGE` with these leases (`ip`, `mac`, `client-id`, expiry).
fn leases(vz: &Offline, entries: &[(&str, &str, &str, u64)]) {
    let items: Vec<Value> = entries
        .iter()
        .map(|(ip, mac, id, expiry)| {
            serde_json::json!({"ip-address": ip, "mac-address": mac, "client-id": id,
                               "expiry-time": expiry, "hostname": "g"})
        })
        .collect();
    std::fs::write(
        vz.leases().join(format!("{BRIDGE}.status")),
        serde_json::to_string_pretty(&items).unwrap(),
    )
    .unwrap();
}

/// An expiry an hour from now.
fn later(extra: u64) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
        + extra
}

/// S1: a guest that asks dnsmasq for a lease with the victim's MAC (and its own client-id) gets a
/// second lease for that MAC, with a later expiry. The forward must not follow it: while the MAC
/// holds two unexpired leases the forward is `ambiguous-address`, with a reason.
#[test]
fn s1_a_second_lease_for_the_domains_mac_takes_no_forward() {
    let vz = world("");
    hook(
        &vz,
        &["web", "started", "begin", "-"],
        &domain("web", UUID_A, MAC),
    );
    leases(
        &vz,
        &[("192.0.2.100", MAC, "01:52:54:00:00:43:01", later(0))],
    );
    let r = row(&vz);
    assert_eq!(
        (r["state"].as_str(), r["guest"].as_str()),
        (Some("active"), Some("192.0.2.100")),
        "{r}"
    );
    leases(
        &vz,
        &[
            ("192.0.2.100", MAC, "01:52:54:00:00:43:01", later(0)),
            ("192.0.2.150", MAC, "ff:00:00:00:99", later(600)),
        ],
    );
    let r = row(&vz);
    assert_eq!(r["state"], "ambiguous-address", "{r}");
    assert_eq!(r["guest"], Value::Null, "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("2 unexpired leases") && reason.contains("static DHCP host"),
        "{r}"
    );
    // An expired second lease is no doubt.
    leases(
        &vz,
        &[
            ("192.0.2.100", MAC, "01:52:54:00:00:43:01", later(0)),
            ("192.0.2.150", MAC, "ff:00:00:00:99", 1000),
        ],
    );
    assert_eq!(row(&vz)["state"], "active");
    // The safe choice: a static DHCP host decides, whatever leases say.
    leases(
        &vz,
        &[
            ("192.0.2.100", MAC, "01:52:54:00:00:43:01", later(0)),
            ("192.0.2.150", MAC, "ff:00:00:00:99", later(600)),
        ],
    );
    let out = vz.hook_network(
        &[NET, "updated", "begin", "-"],
        &network(&[(MAC, "192.0.2.60")]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = row(&vz);
    assert_eq!(
        (r["state"].as_str(), r["guest"].as_str()),
        (Some("active"), Some("192.0.2.60")),
        "{r}"
    );
}

/// S1: where the kernel's neighbour table sees the leased address at another MAC (a guest that
/// took the address by hand), the forward does not go there. Runs `forward list` in a network
/// namespace of its own with the bridge and a permanent neighbour entry.
#[test]
fn s1_the_neighbour_table_overrules_a_lease() {
    let vz = world("");
    hook(
        &vz,
        &["web", "started", "begin", "-"],
        &domain("web", UUID_A, MAC),
    );
    leases(
        &vz,
        &[("192.0.2.100", MAC, "01:52:54:00:00:43:01", later(0))],
    );
    let list = |neigh_mac: &str| -> Value {
        let script = format!(
            "ip link add {BRIDGE} type bridge && ip link set {BRIDGE} up && \
             ip addr add 192.0.2.1/24 dev {BRIDGE} && \
             ip neigh replace 192.0.2.100 lladdr {neigh_mac} dev {BRIDGE} nud permanent && \
             exec \"$0\" forward list --json"
        );
        let cmd = vz.command(&[]);
        let program = cmd.get_program().to_owned();
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
            .collect();
        let mut un = Command::new("unshare");
        un.args(["--net", "sh", "-c", &script])
            .arg(program)
            .env_clear();
        for (k, v) in envs {
            if let Some(v) = v {
                un.env(k, v);
            }
        }
        let out = common::offline::output_within(un, ANSWER).expect("forward list in a netns");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
        rows[0].clone()
    };
    let r = list(MAC);
    assert_eq!(r["state"], "active", "{r}");
    let r = list("52:54:00:00:66:66");
    assert_eq!(r["state"], "ambiguous-address", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("52:54:00:00:66:66"),
        "{r}"
    );
}

/// Holds `path`'s flock in another process (util-linux `flock`) until dropped; returns once held.
fn hold_lock(path: &std::path::Path) -> Process {
    let child = Command::new("flock")
        .args(["-x"])
        .arg(path)
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flock");
    let holder = Process(child);
    crate::common::forward::wait("the lock held by another process", ANSWER, || {
        !Command::new("flock")
            .args(["-n", "-x"])
            .arg(path)
            .arg("true")
            .status()
            .unwrap()
            .success()
    });
    holder
}

/// S3: with `HookTimeout=2` and the state lock held by another process (the daemon's check
/// waiting for a slow firewalld), the qemu hook answers within its budget — exit 0, saying it
/// skipped — instead of when the holder lets go.
#[test]
fn s3_the_hook_keeps_its_budget_while_the_lock_is_held() {
    let vz = world("HookTimeout=2\n");
    // The lock files exist once virtzone took them.
    hook(
        &vz,
        &["d1", "started", "begin", "-"],
        &domain("d1", UUID_A, MAC),
    );
    let _main = hold_lock(&vz.state().join("lock"));
    let _store = hold_lock(&vz.store().join("lock"));
    let t = Instant::now();
    let mut cmd = vz.command(&["hook", "qemu", "d1", "started", "begin", "-"]);
    let out = common::run_with_input(&mut cmd, &domain("d1", UUID_A, MAC));
    let took = t.elapsed();
    eprintln!("measured: hook with the lock held, HookTimeout=2: {took:?}");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("skipped"),
        "{}",
        text(&out.stderr)
    );
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}

/// S3: a FIFO in place of the lease status file hangs nothing: it is refused as not a regular
/// file (the forward waits), and `forward list` answers. The hook and the daemon read leases
/// through the same function (`observe`); before, its plain open blocked until a writer came.
#[test]
fn s3_a_fifo_as_lease_file_hangs_nothing() {
    let vz = world("HookTimeout=2\n");
    hook(
        &vz,
        &["web", "started", "begin", "-"],
        &domain("web", UUID_A, MAC),
    );
    let fifo = vz.leases().join(format!("{BRIDGE}.status"));
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let t = Instant::now();
    let r = row(&vz);
    eprintln!(
        "measured: forward list with a FIFO as lease file: {:?}",
        t.elapsed()
    );
    assert_eq!(r["state"], "waiting-for-address", "{r}");
}

/// S4: 300 domains started and stopped through the hook, none with forwards, leave `domains.json`
/// small (it held every domain that ever ran, 69 bytes each, until reads failed at the 4 MiB cap);
/// a domain a forward names is kept while stopped; a name no forward could have is not recorded.
#[test]
fn s4_domains_json_holds_only_what_forwards_need() {
    let vz = world("");
    let mut largest = 0;
    for i in 0..300 {
        let name = format!("guest-{i:03}");
        let mac = format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256);
        let xml = domain(&name, UUID_B, &mac);
        hook(&vz, &[&name, "started", "begin", "-"], &xml);
        largest = largest.max(vz.read_store("domains.json").map_or(0, |s| s.len()));
        hook(&vz, &[&name, "stopped", "end", "-"], &xml);
    }
    let after = vz.read_store("domains.json").unwrap_or_default();
    eprintln!(
        "measured: domains.json after 300 domains started and stopped: {} bytes (largest {largest})",
        after.len()
    );
    assert!(after.len() < 200, "{after}");
    assert!(largest < 1000, "{largest}");
    // Named by forward 1: kept, as stopped.
    let web = domain("web", UUID_A, MAC);
    hook(&vz, &["web", "started", "begin", "-"], &web);
    hook(&vz, &["web", "stopped", "end", "-"], &web);
    let d: Value = serde_json::from_str(&vz.read_store("domains.json").unwrap()).unwrap();
    assert_eq!(d["domains"]["web"]["running"], false, "{d}");
    assert_eq!(d["domains"].as_object().map(|o| o.len()), Some(1), "{d}");
    // A name longer than libvirt users write (and than any forward may name): not recorded.
    let long = "x".repeat(300);
    hook(
        &vz,
        &[&long, "started", "begin", "-"],
        &domain(&long, UUID_B, MAC),
    );
    assert!(!vz.read_store("domains.json").unwrap().contains(&long));
}

/// S8: `virsh net-update` runs the network hook's `updated begin` with the new definition: a
/// static host added later resolves the domain's forward; one outside the network's subnets is not
/// used, and `forward list` says so.
#[test]
fn s8_static_hosts_follow_net_update_and_are_checked() {
    let vz = world("");
    hook(
        &vz,
        &["web", "started", "begin", "-"],
        &domain("web", UUID_A, MAC),
    );
    assert_eq!(row(&vz)["state"], "waiting-for-address");
    let update = |hosts: &[(&str, &str)]| {
        let out = vz.hook_network(&[NET, "updated", "begin", "-"], &network(hosts));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    update(&[(MAC, "192.0.2.61")]);
    let r = row(&vz);
    assert_eq!(
        (r["state"].as_str(), r["guest"].as_str()),
        (Some("active"), Some("192.0.2.61")),
        "{r}"
    );
    update(&[(MAC, "198.51.100.61")]);
    let r = row(&vz);
    assert_eq!(r["state"], "inactive", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("198.51.100.61"),
        "{r}"
    );
    update(&[]);
    assert_eq!(row(&vz)["state"], "waiting-for-address");
}

/// S9: a record of an earlier boot (the host crashed, no `stopped` ran) is of a stopped domain;
/// and a later domain of the same name (another UUID) does not get a forward first resolved for
/// another domain.
#[test]
fn s9_records_of_another_boot_or_domain_do_not_resolve() {
    let vz = world("");
    leases(
        &vz,
        &[("192.0.2.100", MAC, "01:52:54:00:00:43:01", later(0))],
    );
    let crashed = format!(
        r#"{{"version":1,"domains":{{"web":{{"running":true,"uuid":"{UUID_A}",
        "boot":"00000000-0000-4000-8000-000000000000",
        "interfaces":[{{"network":"{NET}","mac":"{MAC}"}}]}}}},"applied":{{}}}}"#
    );
    vz.write_store("domains.json", &crashed);
    let r = row(&vz);
    assert_eq!(r["state"], "inactive", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not running"),
        "{r}"
    );
    // Started in this boot: active, and the UUID is recorded.
    hook(
        &vz,
        &["web", "started", "begin", "-"],
        &domain("web", UUID_A, MAC),
    );
    assert_eq!(row(&vz)["state"], "active");
    let d: Value = serde_json::from_str(&vz.read_store("domains.json").unwrap()).unwrap();
    assert_eq!(d["domains"]["web"]["uuid"], UUID_A, "{d}");
    // The forward was resolved for UUID_A (as the daemon records it once applied); another
    // domain named web does not get it.
    let mut d = d;
    d["uuids"] = serde_json::json!({"1": UUID_A});
    vz.write_store("domains.json", &d.to_string());
    hook(
        &vz,
        &["web", "started", "begin", "-"],
        &domain("web", UUID_B, MAC),
    );
    let r = row(&vz);
    assert_eq!(r["state"], "inactive", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or_default().contains(UUID_B),
        "{r}"
    );
}

/// The lab (firewalld 1.3.3 nftables, libvirt 9.0, the daemon's bus policy) running network
/// `NET` with the shipped network hook, virtzone installed, and domain `web` started as the qemu
/// hook records it (no qemu needed for the network's part) with forward 1 to it. Leases are read
/// from libvirt's own status files with `real_leases`, else from `<lab>/leases`.
fn network_lab(real_leases: bool) -> common::libvirt::LibvirtLab {
    use common::libvirt::{LibvirtConfig, LibvirtLab};
    use common::{Backend, LabConfig, Release};
    let policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf");
    let vlab = LibvirtLab::start(LibvirtConfig::new(LabConfig {
        bus_policies: vec![policy],
        ..LabConfig::new(Release::Debian12, Backend::Nftables)
    }));
    let leases = if real_leases {
        vlab.lib_dir().join("dnsmasq")
    } else {
        vlab.dir().join("leases")
    };
    std::fs::create_dir_all(&leases).unwrap();
    std::fs::write(
        vlab.dir().join("virtzone.conf"),
        format!("LeaseDirectory={}\n", leases.display()),
    )
    .unwrap();
    crate::common::vz::vz_ok(&vlab, &["install"]);
    let xml = network(&[]);
    let xml = xml
        .trim_start_matches("<hookData>")
        .trim_end_matches("</hookData>");
    let net = vlab.define(xml);
    vlab.expect_ok(&vlab.net_start(&net), "net-start");
    let out = common::run_with_input(
        vlab.virtzone()
            .args(["hook", "qemu", "web", "started", "begin", "-"]),
        &domain("web", UUID_A, MAC),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    crate::common::vz::vz_ok(&vlab, &["forward", "add", "--domain", "web", "tcp/8080:80"]);
    vlab
}

/// S8 against the lab's real libvirtd: `virsh net-update … ip-dhcp-host --live` runs the network
/// hook's `updated begin` with the new definition, and a running domain's forward follows the
/// static host at once (before, the hook ignored `updated`: the forward kept waiting until the
/// network's next start). No firewalld ERROR.
#[test]
fn s8_virsh_net_update_reaches_the_record() {
    let vlab = network_lab(false);
    let errors_from = crate::common::forward::log_len(&vlab);
    let state = || -> Value {
        let rows: Value = serde_json::from_str(&crate::common::vz::vz_ok(
            &vlab,
            &["forward", "list", "--json"],
        ))
        .unwrap();
        rows[0].clone()
    };
    assert_eq!(state()["state"], "waiting-for-address");
    let update = |how: &str| {
        let out = vlab.run_virsh(&[
            "net-update",
            NET,
            how,
            "ip-dhcp-host",
            &format!("<host mac='{MAC}' ip='192.0.2.61'/>"),
            "--live",
            "--config",
        ]);
        vlab.expect_ok(&out, "virsh net-update");
    };
    update("add");
    crate::common::forward::wait("the static host through updated", ANSWER, || {
        let r = state();
        r["state"] == "active" && r["guest"] == "192.0.2.61"
    });
    let runs = vlab.runs_of("50-virtzone", &format!("{NET} updated begin"));
    assert!(
        !runs.is_empty() && runs.iter().all(|r| r.status == 0),
        "{runs:?}{}",
        vlab.diagnostics()
    );
    update("delete");
    crate::common::forward::wait("the static host's removal through updated", ANSWER, || {
        state()["state"] == "waiting-for-address"
    });
    let errors = crate::common::forward::errors_since(&vlab, errors_from);
    assert!(errors.is_empty(), "firewalld errors: {errors:?}");
}

/// S10: while a domain forward waits for its lease, the daemon checks (and reads the lease file)
/// after 1.5 s, 3 s, 6 s, … instead of every 1.5 s forever; a lease file renamed into place (as
/// libvirt's helper writes it) wakes it at once. Counts the daemon's opens of the status file with
/// inotify over a fixed window. Then S9 with the daemon: it keeps the UUID of the domain the forward
/// was resolved for, and another domain of the same name does not get the forward.
#[test]
fn s10_s9_the_daemon_backs_off_wakes_on_a_lease_and_keeps_the_domains_uuid() {
    use rustix::fs::inotify;
    let vlab = network_lab(false);
    let status = vlab.dir().join("leases").join(format!("{BRIDGE}.status"));
    std::fs::write(&status, "[]").unwrap();
    let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&fd, &status, inotify::WatchFlags::OPEN).unwrap();
    let _daemon = crate::common::forward::Daemon::start(&vlab);
    // The window: long enough for eleven polls at the old fixed 1.5 s.
    let window = Duration::from_secs(17);
    let start = Instant::now();
    let mut opens = 0;
    let mut buf = vec![0u8; 4096];
    while start.elapsed() < window {
        match rustix::io::read(&fd, &mut buf[..]) {
            // Events on a file's own watch carry no name: 16 bytes each.
            Ok(n) => opens += n / 16,
            Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("inotify: {e}"),
        }
    }
    eprintln!("measured: lease-file reads by the daemon in {window:?} of waiting: {opens}");
    assert!(opens <= 7, "{opens} reads in {window:?}");
    // The lease arrives: renamed into place, it wakes the daemon now, not after the pause.
    let tmp = status.with_extension("new");
    std::fs::write(
        &tmp,
        format!(
            r#"[{{"ip-address":"192.0.2.100","mac-address":"{MAC}","expiry-time":{}}}]"#,
            later(0)
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &status).unwrap();
    let t = Instant::now();
    // `applied` is the daemon's record of what it brought firewalld to (`forward list` resolves
    // on its own, so it would not show the daemon's work).
    crate::common::forward::wait(
        "the daemon applying the forward after the lease",
        ANSWER,
        || {
            let d = std::fs::read_to_string(vlab.state_dir().join("forwards/domains.json"))
                .unwrap_or_default();
            serde_json::from_str::<Value>(&d)
                .is_ok_and(|d| d["applied"]["1"]["guest"] == "192.0.2.100")
        },
    );
    eprintln!(
        "measured: lease renamed into place → forward active {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // S9: the daemon recorded the domain's UUID with the forward; another domain named web (a
    // later `virsh define` of the name) starting does not get it, and what was applied goes.
    let domains = || -> Value {
        let d = std::fs::read_to_string(vlab.state_dir().join("forwards/domains.json")).unwrap();
        serde_json::from_str(&d).unwrap()
    };
    assert_eq!(domains()["uuids"]["1"], UUID_A, "{}", domains());
    let out = common::run_with_input(
        vlab.virtzone()
            .args(["hook", "qemu", "web", "started", "begin", "-"]),
        &domain("web", UUID_B, MAC),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    crate::common::forward::wait("the forward taken out for another domain", ANSWER, || {
        domains()["applied"].get("1").is_none()
    });
    let rows: Value = serde_json::from_str(&crate::common::vz::vz_ok(
        &vlab,
        &["forward", "list", "--json"],
    ))
    .unwrap();
    assert_eq!(rows[0]["state"], "inactive", "{rows}");
    assert!(
        rows[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(UUID_B),
        "{rows}"
    );
}

/// S1 with real DHCP from the lab's libvirt dnsmasq: the domain's guest has its lease and the
/// forward goes there; a second guest asking with the same MAC (`chaddr`) and a client-id of its
/// own gets a second lease for that MAC, which made the forward follow it (the newest lease won).
/// Now the forward is `ambiguous-address` and goes nowhere.
#[test]
fn s1_a_guest_asking_with_the_domains_mac_takes_no_forward() {
    let vlab = network_lab(true);
    let errors_from = crate::common::forward::log_len(&vlab);
    let first = || -> Value {
        let rows: Value = serde_json::from_str(&crate::common::vz::vz_ok(
            &vlab,
            &["forward", "list", "--json"],
        ))
        .unwrap();
        rows[0].clone()
    };
    let victim = vlab.plug_guest_with_mac(BRIDGE, Some(MAC));
    let lease = victim
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    crate::common::forward::wait("the forward to the victim's lease", ANSWER, || {
        first()["guest"] == lease.ip.as_str()
    });
    let thief = vlab.plug_guest_with_mac(BRIDGE, Some(MAC));
    let stolen = thief
        .dhcp_with(5, &["-C", "-x", "0x3d:ff00000099"])
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    assert_ne!(stolen.ip, lease.ip, "dnsmasq gave the same lease");
    eprintln!(
        "measured: victim {} and thief {} hold leases for {MAC}",
        lease.ip, stolen.ip
    );
    crate::common::forward::wait("the forward refusing both leases", ANSWER, || {
        first()["state"] == "ambiguous-address"
    });
    let r = first();
    assert_eq!(r["guest"], Value::Null, "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(stolen.ip.as_str()),
        "{r}"
    );
    let errors = crate::common::forward::errors_since(&vlab, errors_from);
    assert!(errors.is_empty(), "firewalld errors: {errors:?}");
}

/// The network hook whose budget runs out while another process holds virtzone's state lock says
/// so: it said "firewalld did not answer" although, as here, no firewalld was even asked.
#[test]
fn the_network_hook_names_the_held_lock_when_its_budget_runs_out() {
    let vz = world("HookTimeout=2\n");
    let data = format!(
        "<hookData><network><name>{NET}</name><forward mode='nat'/><bridge name='{BRIDGE}'/>\
         <ip address='192.0.2.1' netmask='255.255.255.0'/></network></hookData>"
    );
    // The lock files exist once virtzone took them.
    let out = vz.hook_network(&[NET, "started", "begin", "-"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _main = hold_lock(&vz.state().join("lock"));
    let _store = hold_lock(&vz.store().join("lock"));
    let t = Instant::now();
    let out = vz.hook_network(&[NET, "started", "begin", "-"], &data);
    let took = t.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another process held virtzone's lock") && err.contains("budget of 2 s"),
        "{err}"
    );
    assert!(!err.contains("firewalld did not answer"), "{err}");
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}
