//! `virtzone forward add --domain` with a real qemu domain (TCG, no disk, no OS) under the lab's real
//! libvirtd, whose qemu hook is the shipped `libvirt/hooks/qemu.d/50-virtzone`. The domain has no
//! OS, so the packets go to a guest namespace plugged into the same bridge carrying the domain's
//! MAC: it takes its address from libvirt's dnsmasq by DHCP (the lease path) or, in the static
//! case, is configured with the network's `<host>` address and never asks (the static path).
//!
//! Needs root, what tests/forwards.rs needs, and `qemu-system-x86` (scripts/test.sh installs it).

use crate::common;
use crate::common::forward::{
    connect, errors_since, log_len, proven, serve, wait, Daemon, HEAL, UP_HOST,
};
use crate::common::vz::{vz, vz_ok};

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::libvirt::{LibvirtConfig, LibvirtLab};
use common::{text, Backend, LabConfig, Release};
use serde_json::Value;

const BRIDGE: &str = "virbr41";
const NET: &str = "dfw1";
/// The domain whose guest gets a lease.
const MAC_LEASE: &str = "52:54:00:00:41:01";
/// The domain with a static `<host>` entry.
const MAC_STATIC: &str = "52:54:00:00:41:02";
const STATIC_IP: &str = "192.0.2.60";
/// The domain first started after its forward was added.
const MAC_LATE: &str = "52:54:00:00:41:03";

/// A NAT network with DHCP and one static host; `no-ping` so leases come at once.
fn network() -> String {
    format!(
        "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\n\
         <name>{NET}</name><forward mode='nat'/><bridge name='{BRIDGE}' stp='off'/>\n\
         <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' \
         end='192.0.2.199'/><host mac='{MAC_STATIC}' name='st' ip='{STATIC_IP}'/></dhcp></ip>\n\
         <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>\n"
    )
}

/// A TCG domain with one interface on `NET` and no OS; its NIC's option ROM is off, so iPXE never
/// asks for a lease with the guest namespace's MAC.
fn domain(name: &str, mac: &str) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>48</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <interface type='network'><mac address='{mac}'/><source network='{NET}'/>\
         <model type='virtio'/><rom enabled='no'/></interface>\
         <memballoon model='none'/></devices></domain>"
    )
}

fn virsh_ok(vlab: &LibvirtLab, args: &[&str]) -> String {
    let out = vlab.virsh_qemu(args);
    assert!(
        out.status.success(),
        "virsh {args:?}: {}{}",
        text(&out.stderr),
        vlab.diagnostics()
    );
    text(&out.stdout)
}

fn define(vlab: &LibvirtLab, name: &str, mac: &str) {
    let path = vlab.dir().join(format!("{name}.domain.xml"));
    std::fs::write(&path, domain(name, mac)).unwrap();
    virsh_ok(vlab, &["define", &path.to_string_lossy()]);
}

/// `virsh start`, returning how long it took (qemu under TCG).
fn start(vlab: &LibvirtLab, name: &str) -> Duration {
    let t = Instant::now();
    virsh_ok(vlab, &["start", name]);
    t.elapsed()
}

/// The lab with the qemu driver and its hook, virtzone installed, and `LeaseDirectory=` pointing at
/// the lab's private `/var/lib/libvirt/dnsmasq` for the CLI and the daemon, which run outside
/// libvirtd's mount namespace (the hook, inside it, uses the default path).
fn qemu_lab(release: Release, backend: Backend) -> LibvirtLab {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf");
    let cfg = LibvirtConfig {
        qemu: true,
        ..LibvirtConfig::new(LabConfig {
            bus_policies: vec![policy],
            ..LabConfig::new(release, backend)
        })
    };
    let vlab = LibvirtLab::start(cfg);
    std::fs::write(
        vlab.dir().join("virtzone.conf"),
        format!(
            "LeaseDirectory={}\n",
            vlab.lib_dir().join("dnsmasq").display()
        ),
    )
    .unwrap();
    vz_ok(&vlab, &["install"]);
    vlab
}

/// `forward list --json`'s row for forward `id`.
fn row(vlab: &LibvirtLab, id: u64) -> Value {
    let rows: Value = serde_json::from_str(&vz_ok(vlab, &["forward", "list", "--json"])).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no forward {id} in {rows}"))
}

fn forwards_file(vlab: &LibvirtLab) -> Option<String> {
    std::fs::read_to_string(vlab.state_dir().join("forwards/forwards.json")).ok()
}

/// The whole life of domain forwards on one firewalld release and backend.
fn domain_forward_follows_the_domain(release: Release, backend: Backend) {
    let vlab = qemu_lab(release, backend);
    let net = vlab.define(&network());
    vlab.expect_ok(&vlab.net_start(&net), "net-start");
    let up = vlab.plug_upstream("vzup41", "198.51.100.1/24", "198.51.100.2/24");
    let _daemon = Daemon::start(&vlab);
    let errors_from = log_len(&vlab);

    // 1. A running domain whose guest has a lease.
    define(&vlab, "web", MAC_LEASE);
    let took = start(&vlab, "web");
    eprintln!("measured: virsh start (TCG, 48 MiB, no disk) took {took:?}");
    let web = vlab.plug_guest_with_mac(BRIDGE, Some(MAC_LEASE));
    let lease = web
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _web_server = serve(&web, "0.0.0.0", 80, "web");
    assert!(!connect(&up, UP_HOST, 8080).starts_with("ok"));
    let out = vz_ok(&vlab, &["forward", "add", "--domain", "web", "tcp/8080:80"]);
    assert!(
        out.starts_with("forward 1:") && out.contains(&lease.ip),
        "{out}"
    );
    let web_works = || {
        proven(&vlab, BRIDGE, || {
            connect(&up, UP_HOST, 8080) == "ok web 198.51.100.2"
        })
    };
    wait("the domain forward working", HEAL, web_works);
    assert!(!connect(&up, UP_HOST, 8081).starts_with("ok"));
    let r = row(&vlab, 1);
    assert_eq!(
        (
            r["state"].as_str(),
            r["domain"].as_str(),
            r["guest"].as_str()
        ),
        (Some("active"), Some("web"), Some(lease.ip.as_str())),
        "{r}"
    );

    // 2. The domain stops: the port closes, the forward stays declared as inactive.
    virsh_ok(&vlab, &["destroy", "web"]);
    wait("the port closed after virsh destroy", HEAL, || {
        !connect(&up, UP_HOST, 8080).starts_with("ok")
    });
    assert_eq!(row(&vlab, 1)["state"], "inactive");
    // And it starts again: the qemu hook brings the forward back with the guest's lease.
    start(&vlab, "web");
    wait("the domain forward after virsh start", HEAL, web_works);
    let hooks: Vec<String> = vlab
        .hook_runs()
        .iter()
        .filter(|r| {
            r.hook == "qemu.d/50-virtzone" && r.args.first().map(String::as_str) == Some("web")
        })
        .map(|r| format!("{} -> {}", r.call(), r.status))
        .collect();
    eprintln!("measured: qemu hook order for web: {hooks:?}");
    assert!(hooks.iter().all(|h| h.ends_with("-> 0")), "{hooks:?}");
    assert!(
        hooks.iter().any(|h| h == "web started begin -> 0"),
        "{hooks:?}"
    );
    assert!(
        hooks.iter().any(|h| h == "web stopped end -> 0"),
        "{hooks:?}"
    );

    // 3. Added while stopped, first start before the guest has any lease: the forward waits, and
    // the daemon applies it once dnsmasq hands out the lease.
    define(&vlab, "late", MAC_LATE);
    let out = vz_ok(
        &vlab,
        &["forward", "add", "--domain", "late", "tcp/9090:90"],
    );
    assert!(out.contains("inactive"), "{out}");
    assert_eq!(row(&vlab, 2)["state"], "inactive");
    start(&vlab, "late");
    wait("the late forward waiting for its address", HEAL, || {
        row(&vlab, 2)["state"] == "waiting-for-address"
    });
    let late = vlab.plug_guest_with_mac(BRIDGE, Some(MAC_LATE));
    let _late_server = serve(&late, "0.0.0.0", 90, "late");
    assert!(!connect(&up, UP_HOST, 9090).starts_with("ok"));
    let t = Instant::now();
    late.dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let took = wait("the late forward after the guest's lease", HEAL, || {
        connect(&up, UP_HOST, 9090) == "ok late 198.51.100.2"
    });
    eprintln!(
        "measured: lease → forward working {took:?} (DHCP itself {:?})",
        t.elapsed() - took
    );
    assert_eq!(row(&vlab, 2)["state"], "active");

    // 4. A static <host>: resolved without any lease (the guest is configured by hand).
    let st = vlab.plug_guest_with_mac(BRIDGE, Some(MAC_STATIC));
    for args in [
        vec!["addr", "add", "192.0.2.60/24", "dev", "eth0"],
        vec!["route", "add", "default", "via", "192.0.2.1"],
    ] {
        let ok = st.command("ip").args(&args).status().unwrap().success();
        assert!(ok, "ip {args:?} in the static guest");
    }
    let _st_server = serve(&st, "0.0.0.0", 70, "static");
    define(&vlab, "st", MAC_STATIC);
    start(&vlab, "st");
    let out = vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--domain",
            "st",
            "--network",
            NET,
            "tcp/7070:70",
        ],
    );
    assert!(out.contains(STATIC_IP), "{out}");
    wait("the static-host forward", HEAL, || {
        connect(&up, UP_HOST, 7070) == "ok static 198.51.100.2"
    });

    // A libvirtd restart: libvirt runs the qemu hook's `reconnect begin` for each running domain
    // and rebuilds its rules; every domain forward keeps (or gets back to) working.
    vlab.restart_libvirtd();
    // libvirtd reconnects to its domains in threads of their own, after it answers.
    wait("the qemu hook's reconnect for every domain", HEAL, || {
        let runs = vlab.hook_runs();
        ["web", "late", "st"].iter().all(|d| {
            runs.iter().any(|r| {
                r.hook == "qemu.d/50-virtzone"
                    && r.call() == format!("{d} reconnect begin")
                    && r.status == 0
            })
        })
    });
    wait("the forwards after a libvirtd restart", HEAL, || {
        web_works()
            && connect(&up, UP_HOST, 9090) == "ok late 198.51.100.2"
            && connect(&up, UP_HOST, 7070) == "ok static 198.51.100.2"
    });

    // 5. Bad input: exit 2, one sentence, nothing changed.
    let before = forwards_file(&vlab);
    let fw_before = vlab.firewall_cmd_ok(&["--list-all-policies"]);
    for args in [
        &["forward", "add", "--domain", "bad name", "tcp/1000"][..],
        &["forward", "add", "--domain", "web", "tcp/0"],
        &["forward", "add", "--domain", "web", "icmp/1000"],
        &[
            "forward",
            "add",
            "--domain",
            "web",
            "--guest",
            "192.0.2.5",
            "tcp/1000",
        ],
        &[
            "forward",
            "add",
            "--domain",
            "web",
            "--network",
            "nosuch",
            "tcp/1000",
        ],
        &[
            "forward",
            "add",
            "--domain",
            "web",
            "--host-address",
            "203.0.113.77",
            "tcp/1000",
        ],
        &[
            "forward",
            "add",
            "--domain",
            "web",
            "--from-host",
            "tcp/1000",
        ],
        &["forward", "remove", "--domain", "web", "tcp/1000"],
    ] {
        let out = vz(&vlab, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!(forwards_file(&vlab), before);
    assert_eq!(vlab.firewall_cmd_ok(&["--list-all-policies"]), fw_before);

    // 6. Removal by the same arguments closes the port; by ID as well.
    vz_ok(
        &vlab,
        &["forward", "remove", "--domain", "web", "tcp/8080:80"],
    );
    wait("the port closed after forward remove", HEAL, || {
        !connect(&up, UP_HOST, 8080).starts_with("ok")
    });
    vz_ok(&vlab, &["forward", "remove", "2"]);
    wait("the late port closed after forward remove", HEAL, || {
        !connect(&up, UP_HOST, 9090).starts_with("ok")
    });
    assert!(connect(&up, UP_HOST, 7070).starts_with("ok"));

    let errors = errors_since(&vlab, errors_from);
    assert!(errors.is_empty(), "firewalld errors: {errors:?}");
    for name in ["web", "late", "st"] {
        let _ = vlab.virsh_qemu(&["destroy", name]);
    }
}

crate::lab_matrix! {
    domain_forward_follows_the_domain:
        _1_3_3_nftables, _1_3_3_iptables, _2_3_1_nftables, _2_5_2_nftables;
    skip _0_9_3_nftables, _0_9_3_iptables, _2_3_1_iptables, _2_5_2_iptables: "not run, for time";
}

/// The shipped qemu hook: comments, a guard that exits 0 without virtzone, one exec of `virtzone hook
/// qemu`; nothing in it (or in what it runs) reaches libvirt.
#[test]
fn shipped_qemu_hook_exits_0_without_virtzone_and_never_calls_libvirt() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(common::libvirt::SHIPPED_QEMU_HOOK);
    let hook = std::fs::read_to_string(&path).unwrap();
    let code: Vec<&str> = hook
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        code,
        [
            "[ -x /usr/bin/virtzone ] || exit 0",
            r#"exec /usr/bin/virtzone hook qemu "$@""#
        ]
    );
    for word in ["virsh", "virt-", "libvirt-sock", "qemu:///"] {
        assert!(!code.join("\n").contains(word), "{word}");
    }
    // With the binary absent it exits 0 whatever libvirt passes (run with the path rewritten to
    // one that does not exist, since this machine may have a /usr/bin/virtzone).
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no/virtzone");
    let script = hook.replace("/usr/bin/virtzone", &absent.to_string_lossy());
    let out: Output = Command::new("sh")
        .args(["-c", &script, "50-virtzone", "web", "started", "begin", "-"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

/// `virtzone hook qemu` itself: always exit 0 and nothing on stdout (libvirt kills a domain whose
/// `started` hook fails and reads stdout as XML for `migrate`), even on XML that is not a domain;
/// and it records the domain without any libvirt connection (no libvirt runs here at all).
#[test]
fn qemu_hook_records_domains_and_never_fails() {
    // No bus at all: firewalld cannot be asked, the record is still written.
    let vz = common::offline::Offline::new("");
    let run = |args: &[&str], stdin: &str| vz.hook_qemu(args, stdin);
    let xml = domain("web", MAC_LEASE);
    for (args, input) in [
        (&["web", "prepare", "begin", "-"][..], xml.as_str()),
        (&["web", "started", "begin", "-"], xml.as_str()),
        (&["web", "migrate", "begin", "-"], xml.as_str()),
        (&["other", "started", "begin", "-"], xml.as_str()),
        (
            &["web", "started", "begin", "-"],
            "<network><name>web</name></network>",
        ),
        (
            &["web", "started", "begin", "-"],
            "<!DOCTYPE domain><domain/>",
        ),
    ] {
        let out = run(args, input);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
    let domains: Value = serde_json::from_str(&vz.read_store("domains.json").unwrap()).unwrap();
    assert_eq!(domains["domains"]["web"]["running"], true, "{domains}");
    assert_eq!(
        domains["domains"]["web"]["interfaces"][0]["mac"], MAC_LEASE,
        "{domains}"
    );
    assert!(domains["domains"].get("other").is_none(), "{domains}");
    let out = run(&["web", "stopped", "end", "-"], &xml);
    assert_eq!(out.status.code(), Some(0));
    // No forward names it: a stopped domain is forgotten (issue #24, S4).
    let domains: Value = serde_json::from_str(&vz.read_store("domains.json").unwrap()).unwrap();
    assert!(domains["domains"].get("web").is_none(), "{domains}");
}
