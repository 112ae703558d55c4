//! `virtzone doctor` on real setups, one fault each: real firewalld, real bridges and, where the check is
//! about libvirt, real libvirtd with a guest that asks for DHCP.
//!
//! doctor reads the host's fixed paths (/etc/firewalld, /run/libvirt, /etc/libvirt, /etc/sysctl.d, …).
//! Each run here happens in a private mount namespace inside the lab's network namespace, with an
//! overlay over /etc whose upper layer is in the lab dir (so `--fix` writes land there, never in the
//! host's /etc), the lab's firewalld config dirs bound over firewalld's, and a tmpfs /run (with the
//! libvirt lab's /run/libvirt when there is one).

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::libvirt::{LibvirtConfig, LibvirtLab};
use common::{ok, run_with_input, text, Backend, Lab, LabConfig, Release};
use serde_json::Value;

/// Where doctor's private /etc layer lives for this lab (kept across runs, like a real /etc).
fn etc_layer(lab: &Lab) -> PathBuf {
    lab.dir().join("doctor-etc")
}

/// Runs `virtzone doctor ARGS` as described above; `setup` is sh run inside the namespace first.
fn doctor_in(lab: &Lab, libvirt: Option<&Path>, setup: &str, args: &[&str], input: &str) -> Output {
    let mut script = common::host_view_script(lab, libvirt, &etc_layer(lab));
    script.push_str(setup);
    script.push_str("\nexec \"$@\"\n");
    let mut cmd = lab.command("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(common::virtzone_binary())
    .arg("doctor")
    .args(args)
    .env("VIRTZONE_STATE_DIR", lab.state_dir())
    .env("VIRTZONE_CONFIG", lab.dir().join("virtzone.conf"));
    run_with_input(&mut cmd, input)
}

/// The hook as a package installs it, in doctor's /etc (for labs without libvirt).
const WITH_HOOK: &str = "mkdir -p /etc/libvirt/hooks/network.d\n\
     printf '#!/bin/sh\\nexit 0\\n' > /etc/libvirt/hooks/network.d/50-virtzone\n\
     chmod 0755 /etc/libvirt/hooks/network.d/50-virtzone\n";

fn doctor_json(lab: &Lab, libvirt: Option<&Path>, setup: &str) -> (i32, Value) {
    let out = doctor_in(lab, libvirt, setup, &["--json"], "");
    let code = out.status.code().unwrap_or(-1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): status {code}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (code, v)
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {v:#}"))
}

/// The ids with status problem or warning.
fn findings(v: &Value) -> Vec<(String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "problem" || c["status"] == "warning")
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn evidence(c: &Value) -> String {
    c["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_healthy_host_has_no_problem_and_no_warning_on_every_release() {
    for (release, backend) in [
        (Release::Debian11, Backend::Nftables),
        (Release::Debian11, Backend::Iptables),
        (Release::Debian12, Backend::Nftables),
        (Release::Debian12, Backend::Iptables),
        (Release::Debian13, Backend::Nftables),
        (Release::Debian13, Backend::Iptables),
        (Release::Sid, Backend::Nftables),
        (Release::Sid, Backend::Iptables),
    ] {
        let lab = Lab::start_installed(LabConfig::new(release, backend));
        let (code, v) = doctor_json(&lab, None, WITH_HOOK);
        assert_eq!(
            findings(&v),
            Vec::<(String, String)>::new(),
            "{release:?}/{backend:?}: {v:#}"
        );
        assert_eq!(code, 0, "{release:?}/{backend:?}");
        assert_eq!(
            (v["problems"].as_u64(), v["warnings"].as_u64()),
            (Some(0), Some(0))
        );
    }
}

#[test]
fn missing_zones_are_found_and_installed_by_fix() {
    let lab = Lab::start(LabConfig::default());
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!(code, 1);
    assert_eq!(
        findings(&v),
        [("libvirt-zones".to_string(), "problem".to_string())],
        "{v:#}"
    );
    let c = check(&v, "libvirt-zones");
    assert!(evidence(c).contains("not loaded: libvirt"), "{c:#}");
    assert_eq!(c["fix"]["command"], "virtzone install");
    assert_eq!(c["fix"]["safe"], true);
    // Without --fix nothing changed.
    assert!(!lab.firewall_cmd_ok(&["--get-zones"]).contains("libvirt"));
    let out = doctor_in(&lab, None, WITH_HOOK, &["--fix", "--yes"], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let shown = text(&out.stdout);
    assert!(
        shown.contains("fix libvirt-zones: virtzone install"),
        "{shown}"
    );
    assert!(shown.contains("after the fixes:"), "{shown}");
    assert!(lab.firewall_cmd_ok(&["--get-zones"]).contains("libvirt"));
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!((code, findings(&v)), (0, vec![]), "{v:#}");
}

#[test]
fn fix_asks_first_and_a_no_changes_nothing() {
    let lab = Lab::start(LabConfig::default());
    let out = doctor_in(&lab, None, WITH_HOOK, &["--fix"], "n\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("apply it? [y/N]"),
        "{}",
        text(&out.stdout)
    );
    assert!(!lab.firewall_cmd_ok(&["--get-zones"]).contains("libvirt"));
    let out = doctor_in(&lab, None, WITH_HOOK, &["--fix"], "y\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(lab.firewall_cmd_ok(&["--get-zones"]).contains("libvirt"));
}

/// A libvirt NAT network with a guest, on the lab's real libvirtd.
const NAT: &str = "<network><name>dnat</name><forward mode='nat'/><bridge name='vzdr0' stp='off'/>\
    <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' end='192.0.2.199'/></dhcp></ip></network>";

fn libvirt_lab() -> LibvirtLab {
    let vlab = LibvirtLab::start(LibvirtConfig::new(LabConfig::default()));
    ok(&vlab.run_virtzone(&["install"]));
    vlab.expect_ok(&vlab.net_create(NAT), "net-create");
    vlab
}

#[test]
fn a_bridge_that_lost_its_zone_is_rebound_and_the_guest_gets_dhcp_again() {
    let vlab = libvirt_lab();
    let root = vlab.dir().join("libvirt");
    let (code, v) = doctor_json(&vlab, Some(&root), "");
    assert_eq!((code, findings(&v)), (0, vec![]), "{v:#}");
    // firewalld loses the binding (what a reload does to runtime bindings when nobody re-applies).
    vlab.firewall_cmd_ok(&["--zone=libvirt", "--remove-interface=vzdr0"]);
    let guest = vlab.plug_guest("vzdr0");
    assert!(
        guest.dhcp(2).is_err(),
        "DHCP must fail while the bridge is in no zone"
    );
    let (code, v) = doctor_json(&vlab, Some(&root), "");
    assert_eq!(code, 1);
    assert_eq!(
        findings(&v),
        [("bridge-zones".to_string(), "problem".to_string())],
        "{v:#}"
    );
    let c = check(&v, "bridge-zones");
    assert!(
        evidence(c).contains(
            "network dnat: bridge vzdr0 is in no zone (the default zone applies), expected libvirt"
        ),
        "{c:#}"
    );
    assert_eq!(c["fix"]["command"], "virtzone attach vzdr0 --zone libvirt");
    let out = doctor_in(&vlab, Some(&root), "", &["--fix", "--yes", "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let after: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after["fixes"][0]["applied"], true, "{after:#}");
    assert_eq!(after["problems"], 0);
    assert_eq!(vlab.zone_of_interface("vzdr0").as_deref(), Some("libvirt"));
    guest
        .dhcp(5)
        .expect("the guest gets a lease once the bridge is in its zone again");
}

#[test]
fn forwarding_turned_off_is_a_problem_with_its_source() {
    let vlab = libvirt_lab();
    let root = vlab.dir().join("libvirt");
    ok(&vlab
        .command("sysctl")
        .args(["-w", "net.ipv4.ip_forward=0"])
        .output()
        .unwrap());
    let setup = "mkdir -p /etc/sysctl.d\necho 'net.ipv4.ip_forward = 0' > /etc/sysctl.d/99-hardening.conf\n";
    let (code, v) = doctor_json(&vlab, Some(&root), setup);
    assert_eq!(code, 1);
    assert_eq!(
        findings(&v),
        [("ip-forward".to_string(), "problem".to_string())],
        "{v:#}"
    );
    let ev = evidence(check(&v, "ip-forward"));
    assert!(ev.contains("net.ipv4.ip_forward = 0"), "{ev}");
    assert!(
        ev.contains("/etc/sysctl.d/99-hardening.conf: net.ipv4.ip_forward = 0"),
        "{ev}"
    );
    assert!(check(&v, "ip-forward")["fix"]["safe"] == false);
}

#[test]
fn a_network_manager_profile_zoning_a_libvirt_bridge_is_named() {
    let vlab = libvirt_lab();
    let root = vlab.dir().join("libvirt");
    let setup = "mkdir -p /etc/NetworkManager/system-connections\n\
                 printf '[connection]\\nid=br\\ninterface-name=vzdr0\\nzone=trusted\\n' > /etc/NetworkManager/system-connections/br.nmconnection\n";
    let (code, v) = doctor_json(&vlab, Some(&root), setup);
    assert_eq!(code, 1);
    assert_eq!(
        findings(&v),
        [("nm-zone-override".to_string(), "problem".to_string())],
        "{v:#}"
    );
    assert!(evidence(check(&v, "nm-zone-override")).contains("interface-name=vzdr0 zone=trusted"));
}

#[test]
fn warnings_name_their_evidence() {
    let lab = Lab::start_installed(LabConfig {
        // An /etc copy of the libvirt zone that shadows a different packaged one.
        default_files: vec![(
            "zones/libvirt.xml".into(),
            virtzone::zone::SHIPPED_ZONES[0].1.to_string(),
        )],
        ..LabConfig::default()
    });
    let mut admin = virtzone::zone::SHIPPED_ZONES[0].1.replace(
        "<service name=\"ssh\"/>",
        "<service name=\"ssh\"/><service name=\"nfs\"/>",
    );
    if !admin.contains("nfs") {
        admin = admin.replace("</zone>", "<service name=\"nfs\"/></zone>");
    }
    fs::write(lab.config_dir.join("zones/libvirt.xml"), admin).unwrap();
    lab.firewall_cmd_ok(&["--reload"]);
    // A foreign nftables table hooking forward, and a runtime binding with no daemon to keep it.
    ok(&lab
        .command("nft")
        .args(["add table inet filter; add chain inet filter forward { type filter hook forward priority 0; policy accept; }; \
                add rule inet filter forward iifname \"eth9\" counter drop"])
        .output()
        .unwrap());
    ok(&lab.run_virtzone(&["attach", "vzbr9"]));
    let (code, v) = doctor_json(&lab, None, "");
    assert_eq!(code, 0, "warnings alone exit 0: {v:#}");
    let mut got = findings(&v);
    got.sort();
    assert_eq!(
        got,
        [
            ("daemon".to_string(), "warning".to_string()),
            ("foreign-firewall".to_string(), "warning".to_string()),
            ("hook".to_string(), "warning".to_string()),
            ("stale-zone-copy".to_string(), "warning".to_string()),
        ],
        "{v:#}"
    );
    assert!(
        evidence(check(&v, "stale-zone-copy")).contains("nfs"),
        "{v:#}"
    );
    assert!(
        evidence(check(&v, "foreign-firewall")).contains("inet filter"),
        "{v:#}"
    );
    assert!(
        evidence(check(&v, "hook")).contains("does not exist"),
        "{v:#}"
    );
    assert_eq!(v["warnings"], 4);
}

#[test]
fn bridged_guests_behind_br_netfilter_are_found_and_fixed() {
    let lab = Lab::start_installed(LabConfig::default());
    // A host bridge carrying a guest directly (libvirt names guest taps vnetN).
    for args in [
        "link add vzhb0 type bridge",
        "link set vzhb0 up",
        "link add vnet7 type veth peer name vnet7p",
        "link set vnet7 master vzhb0 up",
    ] {
        ok(&lab.command("ip").args(args.split(' ')).output().unwrap());
    }
    ok(&lab
        .command("sysctl")
        .args(["-w", "net.bridge.bridge-nf-call-iptables=1"])
        .output()
        .unwrap());
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!(code, 1);
    assert_eq!(
        findings(&v),
        [("br-netfilter".to_string(), "problem".to_string())],
        "{v:#}"
    );
    let ev = evidence(check(&v, "br-netfilter"));
    assert!(
        ev.contains("net.bridge.bridge-nf-call-iptables = 1") && ev.contains("bridge vzhb0"),
        "{ev}"
    );
    let out = doctor_in(&lab, None, WITH_HOOK, &["--fix", "--yes"], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let value = ok(&lab
        .command("sysctl")
        .args(["-n", "net.bridge.bridge-nf-call-iptables"])
        .output()
        .unwrap());
    assert_eq!(value.trim(), "0");
    let kept =
        fs::read_to_string(etc_layer(&lab).join("upper/sysctl.d/90-virtzone-bridge.conf")).unwrap();
    assert!(
        kept.contains("net.bridge.bridge-nf-call-iptables = 0"),
        "{kept}"
    );
    assert_eq!(
        fs::metadata(etc_layer(&lab).join("upper/sysctl.d/90-virtzone-bridge.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
}

#[test]
fn bad_input_and_a_hung_firewalld() {
    let lab = Lab::start_installed(LabConfig::default());
    for (args, want) in [
        (vec!["--network", "../x"], "invalid network name \"../x\""),
        (
            vec!["--network", "nosuchnet"],
            "no running libvirt network is named \"nosuchnet\"",
        ),
        (vec!["--yes"], "--fix"),
    ] {
        let out = doctor_in(&lab, None, "", &args, "");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // firewalld owns its name but never answers: doctor says so within its budget.
    let pid = lab.firewalld_pid().unwrap();
    ok(&std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .output()
        .unwrap());
    let start = std::time::Instant::now();
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    let took = start.elapsed();
    ok(&std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .output()
        .unwrap());
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(check(&v, "firewalld")["status"], "problem");
    assert_eq!(
        check(&v, "firewalld")["summary"],
        "firewalld did not answer within 10 s"
    );
    assert_eq!(check(&v, "libvirt-zones")["status"], "skipped");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // An unprivileged user: firewalld refuses, which is skipped, not a problem.
    let out = lab
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::virtzone_binary())
        .args(["doctor", "--json"])
        .env("VIRTZONE_CONFIG", lab.dir().join("none.conf"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&v, "firewalld")["status"], "skipped", "{v:#}");
    assert!(check(&v, "firewalld")["summary"]
        .as_str()
        .unwrap()
        .contains("run doctor as root"));
}

#[test]
fn strict_forward_ports_warns_about_forwards_made_outside_firewalld() {
    let lab = Lab::start_installed(LabConfig {
        files: vec![(
            "firewalld.conf".into(),
            "DefaultZone=public\nFirewallBackend=nftables\nStrictForwardPorts=yes\n".into(),
        )],
        ..LabConfig::new(Release::Debian13, Backend::Nftables)
    });
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!((code, findings(&v)), (0, vec![]), "{v:#}");
    assert_eq!(check(&v, "strict-forward-ports")["status"], "ok");
    // A hook-script style forward in a table of its own.
    ok(&lab
        .command("nft")
        .args(["add table ip hookfwd; add chain ip hookfwd pre { type nat hook prerouting priority -100; }; \
                add rule ip hookfwd pre tcp dport 8080 dnat to 192.0.2.10:80"])
        .output()
        .unwrap());
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!(code, 0, "{v:#}");
    let c = check(&v, "strict-forward-ports");
    assert_eq!(c["status"], "warning", "{v:#}");
    assert!(evidence(c).contains("hookfwd"), "{c:#}");
}

#[test]
fn a_hook_installed_after_libvirtd_started_is_not_run_yet() {
    let vlab = libvirt_lab();
    let root = vlab.dir().join("libvirt");
    let hook = root.join("etc/hooks/network.d/50-virtzone");
    // As if the package had installed the hook a minute after libvirtd started.
    ok(&std::process::Command::new("touch")
        .args(["-d", "+60 seconds"])
        .arg(&hook)
        .output()
        .unwrap());
    let (code, v) = doctor_json(&vlab, Some(&root), "");
    assert_eq!(code, 0);
    assert_eq!(
        findings(&v),
        [("hook".to_string(), "warning".to_string())],
        "{v:#}"
    );
    assert!(evidence(check(&v, "hook")).contains("after libvirtd started"));
}

/// A guest's HTTP request to the upstream server (2 s at most; Debian 12's busybox wget crashes).
fn reaches_upstream(guest: &common::libvirt::Guest<'_>) -> bool {
    reaches_http(guest, "198.51.100.2")
}

/// A guest's HTTP request to a server on `addr`, port 8000 (2 s at most).
fn reaches_http(guest: &common::libvirt::Guest<'_>, addr: &str) -> bool {
    guest
        .command("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request; urllib.request.urlopen('http://{addr}:8000/', timeout=2)"
            ),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the lab host itself (not a guest) gets an answer from an HTTP server on `addr`:8000.
fn host_reaches_http(vlab: &LibvirtLab, addr: &str) -> bool {
    vlab.command("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request; urllib.request.urlopen('http://{addr}:8000/', timeout=2)"
            ),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn docker_s_forward_drop_is_found_by_evaluation_and_fixed_in_docker_user() {
    let vlab = LibvirtLab::start(LibvirtConfig::new(LabConfig::default()));
    ok(&vlab.run_virtzone(&["install"]));
    // An open network (libvirt adds no rules of its own): firewalld's zone is all that filters it.
    vlab.expect_ok(
        &vlab.net_create(
            "<network><name>dopen</name><forward mode='open'/><bridge name='vzop0' zone='libvirt' stp='off'/>\
             <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' end='192.0.2.199'/></dhcp></ip></network>",
        ),
        "net-create",
    );
    let root = vlab.dir().join("libvirt");
    // An upstream host with a web server, and the lab's default route through it (doctor follows
    // guest traffic to the default route's interface).
    let up = vlab.plug_upstream("vzup9", "198.51.100.1/24", "198.51.100.2/24");
    ok(&vlab
        .command("ip")
        .args(["route", "add", "default", "via", "198.51.100.2"])
        .output()
        .unwrap());
    let _server = common::Process(
        up.command("python3")
            .args(["-m", "http.server", "8000", "--bind", "198.51.100.2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    ok(&vlab
        .command("sysctl")
        .args(["-w", "net.ipv4.ip_forward=1"])
        .output()
        .unwrap());
    let guest = vlab.plug_guest("vzop0");
    guest.dhcp(5).expect("lease");
    common::libvirt::wait_for(
        "the guest reaching upstream",
        Duration::from_secs(20),
        || reaches_upstream(&guest).then_some(()),
    );
    // Docker arrives: the real dockerd (Debian 12's docker.io) in the lab's namespace makes its
    // chains and docker0. It sets FORWARD's policy to DROP only when it turns forwarding on itself,
    // as at boot when it starts before libvirt's networks: so forwarding is off when it starts.
    ok(&vlab
        .command("sysctl")
        .args(["-w", "net.ipv4.ip_forward=0"])
        .output()
        .unwrap());
    let _dockerd = common::docker::Dockerd::start(&vlab.netns, &vlab.dir().join("docker"));
    assert_eq!(
        ok(&vlab
            .command("sysctl")
            .args(["-n", "net.ipv4.ip_forward"])
            .output()
            .unwrap())
        .trim(),
        "1",
        "dockerd turns forwarding on"
    );
    assert!(
        ok(&vlab
            .command("iptables")
            .args(["-S", "FORWARD"])
            .output()
            .unwrap())
        .contains("-P FORWARD DROP"),
        "dockerd sets FORWARD's policy to DROP"
    );
    // A container on docker0 with an unpublished service (Docker's rules keep it from everything
    // but its own published ports). No image is needed: a namespace plugged in as dockerd's own
    // endpoints are.
    let container = format!("{}-c1", vlab.netns);
    let _cleanup = NetnsGuard(vec![container.clone()]);
    for step in [
        "netns add C",
        "-n LAB link add vethc1 type veth peer name eth0 netns C",
        "-n LAB link set vethc1 master docker0 up",
        "-n C addr add 172.17.0.2/16 dev eth0",
        "-n C link set eth0 up",
        "-n C route add default via 172.17.0.1",
    ] {
        let step = step
            .replace("LAB", &vlab.netns)
            .replace(" C", &format!(" {container}"));
        let out = std::process::Command::new("ip")
            .args(step.split(' '))
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {step}: {}", text(&out.stderr));
    }
    let _unpublished = common::Process(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &container,
                "python3",
                "-m",
                "http.server",
                "8000",
            ])
            .args(["--bind", "172.17.0.2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The service answers (the host reaches it directly over docker0): what keeps it from the
    // guest below is Docker's rules alone.
    common::libvirt::wait_for(
        "the container's service answering the host",
        Duration::from_secs(20),
        || host_reaches_http(&vlab, "172.17.0.2").then_some(()),
    );
    assert!(
        !reaches_upstream(&guest),
        "Docker's policy must block the guest"
    );
    assert!(!reaches_http(&guest, "172.17.0.2"));
    let (code, v) = doctor_json(&vlab, Some(&root), "");
    assert_eq!(code, 1, "{:#}", check(&v, "forward-drop"));
    // Docker's tables are also another firewall on the same hooks: a warning beside the problem.
    assert_eq!(
        findings(&v),
        [
            ("forward-drop".to_string(), "problem".to_string()),
            ("foreign-firewall".to_string(), "warning".to_string())
        ],
        "{v:#}"
    );
    let c = check(&v, "forward-drop");
    let ev = evidence(c);
    assert!(
        ev.contains("dropped by the policy drop of ip filter chain FORWARD"),
        "{ev}"
    );
    assert!(ev.contains("ip filter chain FORWARD (hook forward"), "{ev}");
    assert_eq!(c["fix"]["safe"], true);
    // Exactly the path the check proved dropped (issue #24, S5): the bridge to the uplink, and
    // replies back; not the bridge's traffic as a whole.
    assert_eq!(
        c["fix"]["command"].as_str().unwrap(),
        "iptables -I DOCKER-USER -i vzop0 -o vzup9 -j ACCEPT; iptables -I DOCKER-USER -i vzup9 -o \
         vzop0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let out = doctor_in(&vlab, Some(&root), "", &["--fix", "--yes", "--json"], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let fixed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let done = fixed["fixes"][0]["done"].as_str().unwrap_or_default();
    assert!(
        done.contains("new connections from vzop0 to vzup9 and their replies"),
        "{fixed:#}"
    );
    assert!(
        reaches_upstream(&guest),
        "the guest reaches upstream after the fix"
    );
    // Docker's containers stay closed to guests.
    assert!(
        !reaches_http(&guest, "172.17.0.2"),
        "the fix opened Docker's container to the guest:\n{}",
        ok(&vlab.command("iptables").args(["-S"]).output().unwrap())
    );
    // A second --fix adds nothing twice.
    let before = ok(&vlab
        .command("iptables")
        .args(["-S", "DOCKER-USER"])
        .output()
        .unwrap());
    let _ = doctor_in(&vlab, Some(&root), "", &["--fix", "--yes"], "");
    assert_eq!(
        ok(&vlab
            .command("iptables")
            .args(["-S", "DOCKER-USER"])
            .output()
            .unwrap()),
        before
    );
}

#[test]
fn a_failed_firewalld_is_the_problem_named() {
    let lab = Lab::start(LabConfig {
        files: vec![(
            "zones/broken.xml".into(),
            "<zone><rule priority='x'></zone>".into(),
        )],
        expect_state: "FAILED",
        ..LabConfig::default()
    });
    lab.allow_firewalld_errors("a broken zone file in /etc sends firewalld into FAILED on purpose");
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!(code, 1, "{v:#}");
    let c = check(&v, "firewalld");
    assert_eq!(c["status"], "problem", "{c:#}");
    assert!(
        c["summary"].as_str().unwrap().contains("state FAILED"),
        "{c:#}"
    );
    assert!(evidence(c).contains("state FAILED"), "{c:#}");
}

#[test]
fn bridged_guests_cross_firewalld_until_br_netfilter_is_off() {
    let lab = Lab::start_installed(LabConfig::default());
    // A host bridge with two guests plugged in directly (taps named as libvirt names them), in one
    // subnet: their traffic is bridged, not routed.
    let guests = [format!("{}-b1", lab.netns), format!("{}-b2", lab.netns)];
    let _cleanup = NetnsGuard(guests.to_vec());
    let mut steps = vec![
        "-n LAB link add vzhb0 type bridge".to_string(),
        "-n LAB link set vzhb0 up".into(),
    ];
    for (i, g) in guests.iter().enumerate() {
        steps.extend([
            format!("netns add {g}"),
            format!("-n LAB link add vnet{i} type veth peer name eth0 netns {g}"),
            format!("-n LAB link set vnet{i} master vzhb0 up"),
            format!("-n {g} addr add 203.0.113.{}/24 dev eth0", 10 + i),
            format!("-n {g} link set eth0 up"),
        ]);
    }
    for step in steps {
        let step = step.replace("LAB", &lab.netns);
        let out = std::process::Command::new("ip")
            .args(step.split(' '))
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {step}: {}", text(&out.stderr));
    }
    ok(&lab
        .command("sysctl")
        .args(["-w", "net.bridge.bridge-nf-call-iptables=1"])
        .output()
        .unwrap());
    let pings = || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &guests[0],
                "ping",
                "-c1",
                "-W1",
                "203.0.113.11",
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    let blocked_before = !pings();
    // Issue #24, S6: libvirt's nwfilter relies on bridge filtering too (its physdev rules, as it
    // writes them for a guest's vnet port): then turning br_netfilter off is not safe.
    let nwfilter: [&[&str]; 4] = [
        &["-N", "FO-vnet0"],
        &["-A", "FO-vnet0", "-j", "RETURN"],
        &["-N", "libvirt-out"],
        &[
            "-A",
            "libvirt-out",
            "-m",
            "physdev",
            "--physdev-is-bridged",
            "--physdev-out",
            "vnet0",
            "-g",
            "FO-vnet0",
        ],
    ];
    for args in nwfilter {
        ok(&lab.command("iptables").args(args).output().unwrap());
    }
    ok(&lab
        .command("iptables")
        .args(["-I", "FORWARD", "-j", "libvirt-out"])
        .output()
        .unwrap());
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!(code, 1, "{v:#}");
    let c = check(&v, "br-netfilter");
    assert_eq!(
        (&c["status"], &c["fix"]["safe"]),
        (&"problem".into(), &false.into()),
        "{c:#}"
    );
    assert!(evidence(c).contains("--physdev-out vnet0"), "{c:#}");
    let out = doctor_in(&lab, None, WITH_HOOK, &["--fix", "--yes"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(
        ok(&lab
            .command("sysctl")
            .args(["-n", "net.bridge.bridge-nf-call-iptables"])
            .output()
            .unwrap())
        .trim(),
        "1",
        "doctor --fix turned bridge filtering off under nwfilter's rules"
    );
    for args in [
        &["-D", "FORWARD", "-j", "libvirt-out"][..],
        &["-F", "libvirt-out"],
        &["-X", "libvirt-out"],
        &["-F", "FO-vnet0"],
        &["-X", "FO-vnet0"],
    ] {
        ok(&lab.command("iptables").args(args).output().unwrap());
    }
    // An earlier fix's file, with an admin's line: merged, not rewritten.
    let conf = etc_layer(&lab).join("upper/sysctl.d/90-virtzone-bridge.conf");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fs::write(
        &conf,
        "net.bridge.bridge-nf-call-ip6tables = 0\nnet.bridge.bridge-nf-call-arptables = 0\n",
    )
    .unwrap();
    let (code, v) = doctor_json(&lab, None, WITH_HOOK);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        findings(&v),
        [("br-netfilter".to_string(), "problem".to_string())],
        "{v:#}"
    );
    let out = doctor_in(&lab, None, WITH_HOOK, &["--fix", "--yes"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let mut lines: Vec<String> = fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "net.bridge.bridge-nf-call-arptables = 0",
            "net.bridge.bridge-nf-call-ip6tables = 0",
            "net.bridge.bridge-nf-call-iptables = 0"
        ]
    );
    common::libvirt::wait_for(
        "the guests reaching each other",
        Duration::from_secs(10),
        || pings().then_some(()),
    );
    assert!(
        blocked_before,
        "with br_netfilter on, firewalld's forward rules must have dropped the bridged ping"
    );
}

/// Deletes network namespaces on drop.
struct NetnsGuard(Vec<String>);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}
