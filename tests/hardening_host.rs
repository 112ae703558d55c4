//! Issue #24's host-protection findings, against the real daemons: the localnet guard that must
//! outlive a wipe of the ruleset whatever firewalld does (S2), its drop of spoofed loopback
//! sources (S11), and `forward purge`, which the package's removal runs (S7). The Docker (S5) and
//! br_netfilter (S6) fixes are tested with doctor's other labs in tests/doctor.rs.
//!
//! Needs root and what tests/forwards.rs needs (real libvirtd 9.0, a guest namespace with a DHCP
//! lease, `virtzone serve`).

use crate::common;
use crate::common::forward::{
    connect, connect_from_host, errors_since, lab, log_len, nat_network, python, route_localnet,
    route_loopback_to_host, serve, serve_loopback_only, set_route_localnet, wait, Daemon, HEAL,
};
use crate::common::vz::{vz, vz_ok};

use std::process::Stdio;
use std::time::Duration;

use common::libvirt::{Guest, LibvirtLab};
use common::{text, Backend, Process, Release};

/// How soon after a wipe the daemon must have put the guard back ("within a few seconds"; the
/// margin is for a loaded 2-core machine).
const GUARD_BACK: Duration = Duration::from_secs(5);

/// A UDP listener printing, per datagram, the sender's address (flushed at once).
const UDP_LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, a = s.recvfrom(200)
    print(a[0], data.decode(errors='replace'), flush=True)
"#;

/// Sends one UDP datagram with a forged IPv4 source (a raw socket with the header included, as a
/// hostile guest can): `SRC DST PORT PAYLOAD`.
const SPOOF: &str = r#"
import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
udp = struct.pack('!HHHH', 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
"#;

/// The host's side of the probe: a UDP listener on the bridge's address, on TFTP's port (the
/// libvirt zone opens it to guests, and nothing else listens there), its output in a file.
struct Listener {
    _process: Process,
    out: std::path::PathBuf,
}

const PROBE_PORT: u16 = 69;

impl Listener {
    fn start(vlab: &LibvirtLab, addr: &str) -> Listener {
        let out = vlab.dir().join("udp-listener.out");
        let file = std::fs::File::create(&out).unwrap();
        let process = Process(
            vlab.command(python())
                .args(["-c", UDP_LISTENER, addr, &PROBE_PORT.to_string()])
                .stdout(file)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        Listener {
            _process: process,
            out,
        }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

/// Sends `payload` from `guest` to `dst` with the source `src` (forged when not the guest's own).
fn send_from(guest: &Guest<'_>, src: &str, dst: &str, payload: &str) {
    let ok = guest
        .command(python())
        .args(["-c", SPOOF, src, dst, &PROBE_PORT.to_string(), payload])
        .status()
        .unwrap();
    assert!(ok.success(), "spoofed send from {src}");
}

/// Whether a datagram `payload` from `src` reaches the listener: a control datagram from the
/// guest's real address, sent right after it, must arrive (so a miss is a drop, not a delay).
fn reaches(guest: &Guest<'_>, l: &Listener, real: &str, src: &str, dst: &str, n: u32) -> bool {
    let payload = format!("probe-{n}");
    let control = format!("control-{n}");
    send_from(guest, src, dst, &payload);
    send_from(guest, real, dst, &control);
    wait("the control datagram", HEAL, || {
        l.received().contains(&format!("{real} {control}"))
    });
    l.received().contains(&format!("{src} {payload}"))
}

/// `nft list table inet virtzone` in the lab, empty when it does not exist.
fn guard(vlab: &LibvirtLab) -> String {
    let out = vlab
        .command("nft")
        .args(["list", "table", "inet", "virtzone"])
        .output()
        .unwrap();
    text(&out.stdout)
}

pub(crate) fn guard_whole(vlab: &LibvirtLab) -> bool {
    let g = guard(vlab);
    g.contains("iifname != \"lo\" ip daddr 127.0.0.0/8 counter packets")
        && g.contains("iifname != \"lo\" ip saddr 127.0.0.0/8 counter packets")
}

/// S2 + S11: with a loopback forward and the daemon running, `nft flush ruleset` while firewalld
/// is stopped takes the guard away; the daemon puts it back on its own within seconds, so guests
/// still cannot reach the host's loopback-only service, and spoofed loopback sources are dropped.
fn guard_outlives_a_wipe_with_firewalld_stopped(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let net = vlab.define(&nat_network("lg1", "virbr84", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start lg1");
    let guest = vlab.plug_guest("virbr84");
    let lease = guest
        .dhcp(5)
        .unwrap_or_else(|e| panic!("DHCP failed: {e}{}", vlab.diagnostics()));
    let _server = serve(&guest, "0.0.0.0", 80, "guest-one");
    let _loopback_only = serve_loopback_only(&vlab);
    let listener = Listener::start(&vlab, "192.0.2.1");
    route_loopback_to_host(&guest, "192.0.2.1");

    // The risk S11 is about, shown with the setting made by hand and no guard: a datagram with a
    // forged loopback source is delivered to the host's service.
    set_route_localnet(&vlab, "virbr84", "1");
    assert!(
        reaches(&guest, &listener, &lease.ip, "127.0.0.2", "192.0.2.1", 1),
        "without the guard, a forged 127.0.0.2 source should arrive: {}",
        listener.received()
    );
    set_route_localnet(&vlab, "virbr84", "0");

    let _daemon = Daemon::start(&vlab);
    let errors_from = log_len(&vlab);
    vz_ok(
        &vlab,
        &[
            "forward",
            "add",
            "--network",
            "lg1",
            "--guest",
            &lease.ip,
            "--host-address",
            "127.0.0.1",
            "--from-host",
            "--route-localnet",
            "tcp/8080:80",
        ],
    );
    assert_eq!(route_localnet(&vlab, "virbr84"), "1");
    assert!(guard_whole(&vlab), "{}", guard(&vlab));

    // Debian's nftables.service: firewalld stops, then the whole ruleset is flushed.
    vlab.stop_firewalld();
    let wiped = vlab
        .command("nft")
        .args(["flush", "ruleset"])
        .status()
        .unwrap();
    assert!(wiped.success());
    let took = wait("the guard back after the wipe", GUARD_BACK, || {
        guard_whole(&vlab)
    });
    eprintln!("guard back {took:?} after nft flush ruleset (firewalld stopped)");
    // Put back, not given up: the setting stays on for the forward.
    assert_eq!(route_localnet(&vlab, "virbr84"), "1");
    // No firewall at all now but the guard: the guest still cannot reach the loopback service…
    assert!(
        !connect(&guest, "127.0.0.1", 53).starts_with("ok"),
        "a guest reached the host's loopback-only service after the wipe"
    );
    // …nor deliver forged loopback sources (the kernel's own martian check does not apply with
    // route_localnet on), while its real address gets through.
    for (n, src) in [(2, "127.0.0.1"), (3, "127.0.0.2")] {
        assert!(
            !reaches(&guest, &listener, &lease.ip, src, "192.0.2.1", n),
            "a forged {src} source arrived: {}\n{}",
            listener.received(),
            guard(&vlab)
        );
    }
    // firewalld comes back; the forward's own check then finds the guard in place.
    vlab.start_firewalld();
    wait(
        "the loopback forward after firewalld's return",
        HEAL,
        || connect_from_host(&vlab, "127.0.0.1", 8080) == "ok guest-one 192.0.2.1",
    );
    assert!(guard_whole(&vlab), "{}", guard(&vlab));
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    guard_outlives_a_wipe_with_firewalld_stopped:
        _1_3_3_nftables, _2_5_2_iptables;
    skip _0_9_3_nftables, _0_9_3_iptables, _1_3_3_iptables, _2_3_1_nftables, _2_3_1_iptables,
         _2_5_2_nftables: "not run, for time";
}

/// S7: the package's removal runs `virtzone forward purge`, which leaves nothing of virtzone's in
/// firewalld — forwards (zone entries before 2.2, policy entries after), from-host DNATs, allows and
/// virtzone's own policies, in both layers — nor in iptables. With firewalld stopped it changes
/// nothing and names what remains.
fn purge_leaves_nothing_of_virtzones_behind(release: Release, backend: Backend) {
    let vlab = lab(release, backend);
    let net = vlab.define(&nat_network("pg1", "virbr85", "192.0.2"));
    vlab.expect_ok(&vlab.net_start(&net), "net-start pg1");
    let errors_from = log_len(&vlab);
    for args in [
        &[
            "forward",
            "add",
            "--network",
            "pg1",
            "--guest",
            "192.0.2.50",
            "tcp/8080:80",
        ][..],
        &[
            "forward",
            "add",
            "--network",
            "pg1",
            "--guest",
            "192.0.2.50",
            "--host-address",
            "192.0.2.1",
            "--from-host",
            "tcp/8081:81",
        ],
        &["allow", "add", "--network", "pg1", "9000/tcp"],
    ] {
        vz_ok(&vlab, args);
    }
    // Everything firewalld holds, in both layers.
    let everything = || {
        let mut all = String::new();
        for permanent in [true, false] {
            for what in ["--list-all-zones", "--list-all-policies"] {
                let mut args = vec![what];
                if permanent {
                    args.insert(0, "--permanent");
                }
                all.push_str(&vlab.firewall_cmd_ok(&args));
            }
        }
        all
    };
    let before = everything();
    for ours in ["192.0.2.50", "virtzone-allow", "virtzone-from-host", "9000"] {
        assert!(
            before.contains(ours),
            "{ours} missing before the purge:\n{before}"
        );
    }

    // firewalld stopped: nothing changes, and the message names what remains.
    vlab.stop_firewalld();
    let out = vz(&vlab, &["forward", "purge"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = text(&out.stderr);
    assert!(
        said.contains("2 forward(s) (ids 1, 2)") && said.contains("9000/tcp to network pg1"),
        "{said}"
    );
    vlab.start_firewalld();
    assert!(vz_ok(&vlab, &["forward", "list"]).contains("192.0.2.50"));

    let said = vz_ok(&vlab, &["forward", "purge"]);
    assert!(said.contains("removed from firewalld"), "{said}");
    let after = everything();
    for ours in ["192.0.2.50", "virtzone", "9000"] {
        assert!(
            !after.contains(ours),
            "{ours} left after the purge:\n{after}"
        );
    }
    let iptables = vlab.command("iptables-save").output().unwrap();
    assert!(
        !text(&iptables.stdout).contains("VIRTZONE"),
        "{}",
        text(&iptables.stdout)
    );
    assert!(vz_ok(&vlab, &["forward", "list"]).contains("no forwards"));
    // Again: nothing left to do.
    vz_ok(&vlab, &["forward", "purge"]);
    assert_eq!(
        errors_since(&vlab, errors_from),
        Vec::<String>::new(),
        "{}",
        vlab.diagnostics()
    );
}

crate::lab_matrix! {
    purge_leaves_nothing_of_virtzones_behind:
        _1_3_3_nftables, _2_5_2_nftables;
    skip _0_9_3_nftables, _0_9_3_iptables, _1_3_3_iptables, _2_3_1_nftables, _2_3_1_iptables,
         _2_5_2_iptables: "not run, for time";
}
