//! Forward benchmarks against real libvirtd and firewalld 1.3.3 (nftables) in a private lab:
//!
//! - `virtzone forward add` → first connection through the forward (the process included);
//! - firewalld reload → every forward working again, with 1, 50 and 200 forwards (each to its own
//!   guest port, so 1, 4 and 14 grouped accepts) declared and
//!   `virtzone serve` running: from the reload call's return (firewalld has emitted `Reloaded`) to
//!   the last-added forward answering while libvirt's reject is back in place. Beside it, the
//!   reload itself.
//!
//! Connections come from a resident client in the upstream namespace (one line in, one line out),
//! so a probe costs a connect, not a process start. Run as root: `cargo bench --bench forwards`.

// The test suite's lab; this program uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/forward_probe.rs"]
mod probe;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use probe::{ms, must, serve_guest_ports, Client, SERVER};

use common::libvirt::{LibvirtConfig, LibvirtLab};
use common::{Backend, LabConfig, Release};

/// Reloads measured per forward count.
const RUNS: usize = 5;

fn libvirt_rejects(vlab: &LibvirtLab) -> bool {
    let out = vlab
        .command("iptables")
        .args(["-w", "-t", "filter", "-S", "LIBVIRT_FWI"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout).contains("-o virbr71 -j REJECT")
}

fn main() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.virtzone.VirtZone1.conf");
    let cfg = LabConfig {
        bus_policies: vec![policy],
        ..LabConfig::new(Release::Debian12, Backend::Nftables)
    };
    let vlab = LibvirtLab::start(LibvirtConfig::new(cfg));
    must(vlab.virtzone().arg("install"));
    let xml = "<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>\
               <name>bench</name><forward mode='nat'/><bridge name='virbr71' stp='off'/>\
               <ip address='192.0.2.1' netmask='255.255.255.0'><dhcp><range start='192.0.2.100' \
               end='192.0.2.199'/></dhcp></ip>\
               <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options></network>";
    let net = vlab.define(xml);
    vlab.expect_ok(&vlab.net_start(&net), "net-start");
    let guest = vlab.plug_guest("virbr71");
    let ip = guest.dhcp(5).expect("DHCP").ip;
    let mut server = guest
        .command("/usr/bin/python3")
        .args(["-c", SERVER])
        .stdout(Stdio::null())
        .spawn()
        .expect("server");
    // Distinct guest ports, as real forwards have, all served by the one server: the guest
    // redirects 10000-10999 to 80 in its own namespace.
    serve_guest_ports(guest.command("iptables"));
    let up = vlab.plug_upstream("vzup71", "198.51.100.1/24", "198.51.100.2/24");
    let mut client = Client::spawn(up.command("/usr/bin/python3"));
    let log = std::fs::File::create(vlab.dir().join("daemon.log")).expect("log");
    let mut daemon = vlab
        .virtzone()
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("daemon");
    let start = Instant::now();
    while !vlab.name_has_owner("org.virtzone.VirtZone1") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let host = "198.51.100.1";
    let mut declared = 0u16;
    let add = |vlab: &LibvirtLab, n: u16| {
        let port = 10000 + n;
        must(vlab.virtzone().args([
            "forward",
            "add",
            "--network",
            "bench",
            "--guest",
            &ip,
            &format!("tcp/{port}:{port}"),
        ]));
        port
    };

    // 1. forward add → first connection through.
    let mut first = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let port = add(&vlab, declared);
        declared += 1;
        while !client.probe(host, port) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "forward {port} never worked"
            );
        }
        first.push(t.elapsed());
    }
    first.sort();
    println!(
        "forward add → first connection through: median {} (of 5; min {}, max {})",
        ms(first[2]),
        ms(first[0]),
        ms(first[4])
    );

    // 2. Reloaded → working again, for 1, 50, 200 forwards.
    let fwcmd = |vlab: &LibvirtLab| {
        let t = Instant::now();
        must(vlab.command("firewall-cmd").arg("--reload"));
        t.elapsed()
    };
    for want in [1u16, 50, 200] {
        if want == 1 {
            // Start from exactly one forward.
            for id in 2..=declared {
                must(vlab.virtzone().args(["forward", "remove", &id.to_string()]));
            }
            declared = 1;
        }
        while declared < want {
            add(&vlab, declared);
            declared += 1;
        }
        let last = 10000 + declared - 1;
        assert!(
            client.probe(host, last),
            "forward {last} not working before the reload"
        );
        let (mut heal, mut reload, mut window) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            reload.push(fwcmd(&vlab));
            let t = Instant::now();
            // When libvirt's reject was first seen back, and when the forward worked with it.
            let mut reject_back: Option<Duration> = None;
            loop {
                let rejects = libvirt_rejects(&vlab);
                if rejects && reject_back.is_none() {
                    reject_back = Some(t.elapsed());
                }
                if rejects && client.probe(host, last) {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "not healed");
            }
            heal.push(t.elapsed());
            window.push(t.elapsed() - reject_back.unwrap_or_default());
        }
        for v in [&mut heal, &mut reload, &mut window] {
            v.sort();
        }
        println!(
            "{want:>3} forwards: reload returned → last forward working again: median {} (max {}); \
             of that, libvirt's reject back → forward working: median {} (max {}); \
             firewall-cmd --reload itself: median {} ({RUNS} runs)",
            ms(heal[RUNS / 2]),
            ms(heal[RUNS - 1]),
            ms(window[RUNS / 2]),
            ms(window[RUNS - 1]),
            ms(reload[RUNS / 2])
        );
    }
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    let _ = server.kill();
    let _ = server.wait();
}
